"""Local stand-ins for the Hugging Face Hub and Civitai, on 127.0.0.1, each with a second
"CDN" port the downloads are redirected to, as the real ones do.

The Hub's shapes follow huggingface_hub 2.4's own reading of them: `hf_api.model_info` reads
`/api/models/{repo}[/revision/{rev}]` (`sha`, `siblings[].rfilename/size/blobId/lfs{sha256,
size,pointerSize}`, `gated`, `tags`); `utils/_http.hf_raise_for_status` maps the `X-Error-Code`
header (GatedRepo, RepoNotFound, RevisionNotFound, EntryNotFound); `file_download` reads
`X-Repo-Commit`, `X-Linked-Etag`, `X-Linked-Size` and `ETag` on `resolve/{revision}/{file}`, whose
LFS files answer with a 302 to the CDN. Civitai's follow its API reference
(developer.civitai.com, "Model versions"): `GET /api/v1/model-versions/{id}` with `model.type`
and `files[]` (`name`, `type`, `sizeKB`, `primary`, `hashes.SHA256`, `downloadUrl`), the
download URL answering with a 302 to a signed URL.

Faults, set per test: `hook_at` (N bytes, a function run once when the CDN has sent them),
`cut_after` (the CDN closes the connection after N bytes of a body, once
per armed cut), `corrupt` (one byte of the body flipped), `pause_at` (the CDN stops sending at N
bytes until `resume` is set). `served` counts the body bytes the CDN sent, per blob, and
`served_to` per client address and `served_as` per User-Agent (where the "instance" and the
user's machine both connect from 127.0.0.1, their User-Agents tell them apart). `push` makes
a new commit the repo's `main`; older commits stay reachable by id.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes]
    gated: bool = False
    tags: list[str] = field(default_factory=list)
    lfs_min: int = 1024  # files this big and up are LFS files, served through the CDN
    commit: str = COMMIT  # what `main` is
    history: dict[str, dict[str, bytes]] = field(default_factory=dict)  # older commits' files

    def at(self, revision: str | None) -> tuple[str, dict[str, bytes]] | None:
        if revision in (None, "main", self.commit):
            return self.commit, self.files
        return (revision, self.history[revision]) if revision in self.history else None


@dataclass
class Version:
    model_type: str
    files: list[dict]  # name, type, data (bytes), primary


class Hub:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.versions: dict[int, Version] = {}
        self.blobs: dict[str, bytes] = {}
        self.served: dict[str, int] = {}
        self.served_to: dict[str, int] = {}  # body bytes by client address
        self.served_as: dict[str, int] = {}  # body bytes by the client's User-Agent
        self.requests: list[tuple[str, str, dict]] = []  # (server, path, headers)
        self.token = "hf_test_token"
        self.civitai_token: str | None = None  # set: Civitai answers 401 without it
        self.cut_after: int | None = None
        self.oversized = False  # API answers that never end (5 MiB of whitespace)
        self.corrupt = False
        self.pause_at: int | None = None
        self.hook_at: tuple[int, Callable[[], None]] | None = None  # run once at N bytes
        self.paused = threading.Event()
        self.resume = threading.Event()
        self.lock = threading.Lock()
        self._servers = [ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, kind))
                         for kind in ("api", "cdn")]
        for server in self._servers:
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def cdn(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def close(self) -> None:
        self.resume.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def add_repo(self, repo: str, files: dict[str, bytes | Path], **kw) -> Repo:
        data = {name: (v.read_bytes() if isinstance(v, Path) else v) for name, v in files.items()}
        self.repos[repo] = Repo(data, **kw)
        for content in data.values():
            self.blobs[hashlib.sha256(content).hexdigest()] = content
        return self.repos[repo]

    def push(self, repo: str, files: dict[str, bytes | Path], commit: str) -> None:
        """A new commit on `main`; the one before stays reachable by its id."""
        old = self.repos[repo]
        history = {**old.history, old.commit: old.files}
        self.add_repo(repo, files, gated=old.gated, tags=old.tags, lfs_min=old.lfs_min,
                      commit=commit, history=history)

    def add_folder(self, repo: str, folder: Path, prefix: str = "", **kw) -> Repo:
        files = {prefix + p.relative_to(folder).as_posix(): p
                 for p in sorted(folder.rglob("*")) if p.is_file()}
        return self.add_repo(repo, files, **kw)

    def add_version(self, version_id: int, model_type: str, files: list[dict]) -> None:
        self.versions[version_id] = Version(model_type, files)
        for f in files:
            self.blobs[hashlib.sha256(f["data"]).hexdigest()] = f["data"]

    def served_of(self, data: bytes) -> int:
        return self.served.get(hashlib.sha256(data).hexdigest(), 0)

    # --- the shapes ----------------------------------------------------------------------------

    def model_info(self, name: str, revision: str | None = None) -> dict | None:
        repo = self.repos[name]
        found = repo.at(revision)
        if found is None:
            return None
        commit, files = found
        siblings = []
        for path, data in sorted(files.items()):
            sibling = {"rfilename": path, "size": len(data), "blobId": git_sha1(data)}
            if len(data) >= repo.lfs_min:
                sibling["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                                  "pointerSize": 134}
            siblings.append(sibling)
        return {"_id": "x" * 24, "id": name, "modelId": name, "author": name.split("/")[0],
                "sha": commit, "private": False, "disabled": False,
                "gated": "manual" if repo.gated else False, "downloads": 0, "likes": 0,
                "tags": repo.tags, "library_name": "diffusers", "siblings": siblings,
                "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z"}

    def version(self, version_id: int, base: str) -> dict:
        v = self.versions[version_id]
        files = [{"id": i, "name": f["name"], "type": f["type"], "primary": f.get("primary", False),
                  "sizeKB": len(f["data"]) / 1024,
                  "metadata": {"format": "SafeTensor", "fp": "fp16", "size": "pruned"},
                  "hashes": {"SHA256": hashlib.sha256(f["data"]).hexdigest().upper(),
                             "CRC32": "00000000"},
                  "downloadUrl": f"{base}/api/download/models/{version_id}?type={f['type']}"}
                 for i, f in enumerate(v.files)]
        return {"id": version_id, "modelId": version_id * 10, "name": "v1.0",
                "baseModel": "SD 1.5", "status": "Published", "availability": "Public",
                "air": f"urn:air:sd1:checkpoint:civitai:{version_id * 10}@{version_id}",
                "model": {"name": "tiny", "type": v.model_type, "nsfw": False, "poi": False},
                "files": files, "images": [],
                "downloadUrl": f"{base}/api/download/models/{version_id}"}


def _handler(hub: Hub, kind: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_HEAD(self) -> None:
            self.do_GET(head=True)

        def do_GET(self, head: bool = False) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path)
            hub.requests.append((kind, self.path, {k.lower(): v for k, v in self.headers.items()}))
            if kind == "cdn":
                return self.cdn(path, head)
            if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/(.+))?", path):
                return self.api_model(m.group(1), m.group(2))
            if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
                return self.resolve(m.group(1), m.group(2), m.group(3), head)
            if m := re.fullmatch(r"/api/v1/model-versions/(\d+)", path):
                return self.civitai_version(int(m.group(1)))
            if m := re.fullmatch(r"/api/download/models/(\d+)", path):
                return self.civitai_download(int(m.group(1)), url.query)
            self.send(404, b"not found")

        def send(self, status: int, body: bytes = b"", headers: dict | None = None,
                 head: bool = False) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def authorized(self, token: str | None) -> bool:
            return token is not None and self.headers.get("Authorization") == f"Bearer {token}"

        def api_model(self, name: str, revision: str | None) -> None:
            if name not in hub.repos:
                return self.send(401, b'{"error":"Repository not found"}',
                                 {"X-Error-Code": "RepoNotFound"})
            info = hub.model_info(name, revision)
            if info is None:
                return self.send(404, b'{"error":"Invalid rev id"}',
                                 {"X-Error-Code": "RevisionNotFound"})
            body = json.dumps(info).encode()
            self.send(200, body, {"Content-Type": "application/json"})

        def resolve(self, name: str, revision: str, file: str, head: bool) -> None:
            repo = hub.repos.get(name)
            if repo is None:
                return self.send(401, b"", {"X-Error-Code": "RepoNotFound"}, head)
            if repo.gated and not self.authorized(hub.token):
                status = 403 if self.headers.get("Authorization") else 401
                return self.send(status, b"", {"X-Error-Code": "GatedRepo", "X-Error-Message":
                                 "Access to model is restricted."}, head)
            found = repo.at(revision)
            if found is None:
                return self.send(404, b"", {"X-Error-Code": "RevisionNotFound"}, head)
            commit, files = found
            data = files.get(file)
            if data is None:
                return self.send(404, b"", {"X-Error-Code": "EntryNotFound"}, head)
            common = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
            if len(data) >= repo.lfs_min:
                sha = hashlib.sha256(data).hexdigest()
                return self.send(302, b"", {**common, "Location": f"{hub.cdn}/blobs/{sha}",
                                            "ETag": f'"{git_sha1(data)}"',
                                            "X-Linked-Etag": f'"{sha}"',
                                            "X-Linked-Size": str(len(data))}, head)
            self.serve_bytes(data, head, {**common, "ETag": f'"{git_sha1(data)}"'})

        def civitai_version(self, version_id: int) -> None:
            if hub.civitai_token and not self.authorized(hub.civitai_token):
                return self.send(401, b'{"error":"Unauthorized"}')
            if hub.oversized:
                return self.send(200, b"{" + b" " * (5 * 1024 * 1024) + b"}")
            if version_id not in hub.versions:
                return self.send(404, b'{"error":"No version with id"}')
            body = json.dumps(hub.version(version_id, hub.url)).encode()
            self.send(200, body, {"Content-Type": "application/json"})

        def civitai_download(self, version_id: int, query: str) -> None:
            if hub.civitai_token and not self.authorized(hub.civitai_token):
                return self.send(401, b'{"error":"Unauthorized"}')
            v = hub.versions[version_id]
            wanted = [f for f in v.files if f"type={f['type']}" in query.replace("%20", " ")]
            data = (wanted or v.files)[0]["data"]
            sha = hashlib.sha256(data).hexdigest()
            self.send(302, b"", {"Location": f"{hub.cdn}/blobs/{sha}?X-Amz-Signature=abc"})

        def cdn(self, path: str, head: bool) -> None:
            data = hub.blobs.get(path.removeprefix("/blobs/"))
            if data is None:
                return self.send(404, b"")
            self.serve_bytes(data, head, {})

        def serve_bytes(self, data: bytes, head: bool, headers: dict) -> None:
            start = 0
            if m := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "")):
                start = int(m.group(1))
                if start >= len(data):
                    return self.send(416, b"", {"Content-Range": f"bytes */{len(data)}"}, head)
                headers = {**headers, "Content-Range":
                           f"bytes {start}-{len(data) - 1}/{len(data)}"}
            body = data[start:]
            if hub.corrupt and body:
                body = body[:-1] + bytes([body[-1] ^ 0xFF])
            self.send_response(206 if start else 200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if head:
                return
            key = hashlib.sha256(data).hexdigest()
            with hub.lock:
                cut, hub.cut_after = hub.cut_after, None
            sent = 0
            while sent < len(body):
                block = body[sent:sent + 4096]
                if cut is not None and sent + len(block) > cut:
                    block = block[:max(0, cut - sent)]
                if hub.pause_at is not None and sent + start + len(block) >= hub.pause_at:
                    block = block[:max(0, hub.pause_at - sent - start)]
                    self.wfile.write(block)
                    self.wfile.flush()
                    self.count(key, len(block))
                    hub.paused.set()
                    hub.resume.wait(60)
                    self.close_connection = True
                    return
                self.wfile.write(block)
                self.count(key, len(block))
                sent += len(block)
                if hub.hook_at is not None and start + sent >= hub.hook_at[0]:
                    self.wfile.flush()
                    hook, hub.hook_at = hub.hook_at[1], None
                    hook()
                if cut is not None and sent >= cut:
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return

        def count(self, key: str, n: int) -> None:
            with hub.lock:
                hub.served[key] = hub.served.get(key, 0) + n
                address = self.client_address[0]
                hub.served_to[address] = hub.served_to.get(address, 0) + n
                agent = self.headers.get("User-Agent", "")
                hub.served_as[agent] = hub.served_as.get(agent, 0) + n

    return Handler
