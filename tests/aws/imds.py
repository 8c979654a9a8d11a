"""A stand-in for the EC2 instance metadata service as it behaves with IMDSv2 required
(`HttpTokens=required`), including how it refuses:

- `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds: 1..21600` returns a
  session token; an `Expect` header gets 417 (what s3fs before 1.91 ran into), a missing or bad
  TTL 400, a request that went through a proxy (`X-Forwarded-For`) 403;
- every `GET` without a valid token gets 401;
- with the token, `.../iam/security-credentials/` names the role and
  `.../iam/security-credentials/ROLE` returns its temporary credentials as EC2 does (JSON with
  `Code`, `AccessKeyId`, `SecretAccessKey`, `Token`, `Expiration`).

Every request is logged, so a test can say what a client did wrong.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN_PATH = "/latest/api/token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
CREDENTIALS_PATH = "/latest/meta-data/iam/security-credentials/"
MAX_TTL_S = 21600


@dataclass(frozen=True)
class RoleCredentials:
    access_key_id: str
    secret_access_key: str
    token: str
    expiration: datetime


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    status: int
    with_token: bool
    expect: str | None

    def __str__(self) -> str:
        token = "with token" if self.with_token else "without token"
        expect = f", Expect: {self.expect}" if self.expect else ""
        return f"{self.method} {self.path} ({token}{expect}) -> {self.status}"


class Imds(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], role: str,
                 credentials: Callable[[], RoleCredentials]) -> None:
        super().__init__(address, _Handler)
        self.role = role
        self.credentials = credentials
        self.tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self.log: list[Request] = []
        self._lock = threading.Lock()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, daemon=True)
        thread.start()
        return thread

    def record(self, request: Request) -> None:
        with self._lock:
            self.log.append(request)

    def valid(self, token: str | None) -> bool:
        with self._lock:
            expiry = self.tokens.get(token or "")
        return expiry is not None and expiry > time.monotonic()

    def issue(self, ttl: int) -> str:
        token = secrets.token_urlsafe(40)
        with self._lock:
            self.tokens[token] = time.monotonic() + ttl
        return token


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Imds

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def handle_expect_100(self) -> bool:
        # IMDS does not do 100-continue: it answers any Expect header with 417.
        self._reply(417, "Expectation Failed")
        return False

    def _reply(self, status: int, body: str, content_type: str = "text/plain") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.server.record(Request(self.command, self.path, status,
                                   bool(self.headers.get(TOKEN_HEADER)),
                                   self.headers.get("Expect")))

    def do_PUT(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.headers.get("Expect") is not None:
            return self._reply(417, "Expectation Failed")
        if self.path != TOKEN_PATH:
            return self._reply(404, "Not Found")
        if self.headers.get("X-Forwarded-For"):
            return self._reply(403, "Forbidden")
        ttl = self.headers.get(TTL_HEADER, "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= MAX_TTL_S:
            return self._reply(400, "Bad Request")
        return self._reply(200, self.server.issue(int(ttl)))

    def do_GET(self) -> None:  # noqa: N802
        if not self.server.valid(self.headers.get(TOKEN_HEADER)):
            return self._reply(401, "Unauthorized")
        if self.path == CREDENTIALS_PATH:
            return self._reply(200, self.server.role)
        if self.path == CREDENTIALS_PATH + self.server.role:
            creds = self.server.credentials()
            now = datetime.now(UTC)
            return self._reply(200, json.dumps({
                "Code": "Success",
                "LastUpdated": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "Type": "AWS-HMAC",
                "AccessKeyId": creds.access_key_id,
                "SecretAccessKey": creds.secret_access_key,
                "Token": creds.token,
                "Expiration": creds.expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }, indent=2), "application/json")
        return self._reply(404, "Not Found")
