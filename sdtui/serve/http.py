"""HTTP for the A1111 API, on the standard library's ThreadingHTTPServer (no new dependency).

Every request is checked in this order, and nothing is read or queued before it passes:
credentials (HTTP basic auth, as A1111's --api-auth: 401), the route, the body's size (413
beyond MAX_BODY, refused before it is read), then its JSON (422).

The server holds one thread per open connection, so it holds at most MAX_CONNECTIONS: a
connection beyond them is answered 503 with Retry-After at once and closed, and a connection
that sends nothing for IDLE_TIMEOUT_S is closed, so idle sockets cannot pin every thread.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import secrets
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sdtui import protocol
from sdtui.serve.api import Api, HttpError

# Room for an init image and a mask at the protocol's largest, base64-encoded, and the rest.
MAX_BODY = 2 * (protocol.MAX_INIT_IMAGE_BYTES * 4 // 3) + 2**20
# Each waiting txt2img holds its connection: room for a long queue, and a bound on threads.
MAX_CONNECTIONS = 64
IDLE_TIMEOUT_S = 60
RETRY_AFTER_S = 5


def parse_auth(spec: str) -> dict[str, str]:
    """A1111's --api-auth: USER:PASS, or several separated by commas. ValueError names what
    is wrong."""
    credentials = {}
    for pair in spec.split(","):
        user, sep, password = pair.partition(":")
        if not sep or not user or not password:
            raise ValueError(f"{pair!r} is not USER:PASS")
        credentials[user] = password
    return credentials


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    # A restarted `sdtui serve` takes its port back at once (sockets in TIME_WAIT).
    allow_reuse_address = True
    request_queue_size = 128  # the listen backlog: a burst of clients waits to be accepted

    def __init__(self, address: tuple[str, int], api: Api | None,
                 credentials: dict[str, str] | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        super().__init__(address, Handler)
        self.api = api
        self.credentials = credentials or {}
        self.log = log or (lambda line: None)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            _refuse_busy(request)
            self.log(f"{client_address[0]} refused: {MAX_CONNECTIONS} connections are open")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def _refuse_busy(request: socket.socket) -> None:
    """503 without a thread: a short answer into a fresh socket's empty buffer never blocks."""
    data = json.dumps(HttpError(503, f"sdtui serve has {MAX_CONNECTIONS} connections open; "
                                "try again shortly").payload()).encode()
    head = ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nRetry-After: {RETRY_AFTER_S}\r\n"
            "Connection: close\r\n\r\n").encode()
    with contextlib.suppress(OSError):
        request.setblocking(False)
        request.send(head + data)


class Handler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_S  # per read or write of the socket, not per request

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:
        self.server.log(f"{self.address_string()} {format % args}")

    def _authorised(self) -> bool:
        if not self.server.credentials:
            return True
        scheme, _, encoded = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        expected = self.server.credentials.get(user)
        # compare_digest either way, so a wrong user takes as long as a wrong password.
        return secrets.compare_digest(password.encode(), (expected or "\0").encode()) \
            and expected is not None

    def _body(self) -> Any:
        if self.command != "POST":
            return None
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            raise HttpError(411, "a POST needs a Content-Length")
        if int(length) > MAX_BODY:
            self.close_connection = True  # the body stays unread
            raise HttpError(413, f"the body is {int(length) // 2**20} MiB; sdtui takes at most "
                            f"{MAX_BODY // 2**20} MiB")
        raw = self.rfile.read(int(length))
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HttpError(422, [{"loc": ["body", getattr(exc, "pos", 0)],
                                   "msg": "JSON decode error", "type": "json_invalid"}]) from None

    def _serve(self, method: str) -> None:
        headers: dict[str, str] = {}
        try:
            if not self._authorised():
                self.close_connection = True  # an unread body is not taken for a request
                headers["WWW-Authenticate"] = "Basic"
                raise HttpError(401, "Incorrect username or password")
            url = urlsplit(self.path)
            if self.server.api is None:
                raise HttpError(503, "the deployment is starting")
            route = self.server.api.route(method, url.path)
            status, payload = 200, route(dict(parse_qsl(url.query)), self._body())
        except HttpError as exc:
            status, payload = exc.status, exc.payload()
        self._answer(status, payload, headers)

    def _answer(self, status: int, payload: Any, headers: dict[str, str]) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            # The client hung up; what it asked for is saved in the outputs all the same.
            self.server.log(f"{self.address_string()} left before its answer ({status})")
            self.close_connection = True

