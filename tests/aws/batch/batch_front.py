"""AWS Batch in front of moto's, over HTTP, for what moto's Batch does not do as AWS does. Every
request reaches moto, and every request is first checked with botocore's own validator for
Batch's API (AWS answers a bad one with ClientException, as this does). Then, as AWS behaves:

- a compute environment can be made to go INVALID with a status reason (`invalid_next`: the
  reasons its next creations end in, the way a new account's IAM propagation makes it;
  `go_invalid`: an existing one turns INVALID);
- UpdateComputeEnvironment's computeResources are kept and shown by Describe (moto drops them),
  and an infrastructure update reports UPDATING once before VALID;
- Batch refuses to delete an environment that is still ENABLED or that a job queue uses.

`calls` lists (operation, request body) in order."""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import botocore.session
from botocore.exceptions import ParamValidationError
from botocore.validate import validate_parameters

INFRASTRUCTURE = {"launchTemplate", "subnets", "securityGroupIds", "instanceRole",
                  "instanceTypes", "type", "allocationStrategy", "ec2Configuration"}


class BatchFront:
    def __init__(self, moto_url: str) -> None:
        self.moto = urlsplit(moto_url)
        model = botocore.session.get_session().get_service_model("batch")
        self._operations = {model.operation_model(op).http["requestUri"]: model.operation_model(op)
                            for op in model.operation_names}
        self.calls: list[tuple[str, dict]] = []
        self.invalid_next: dict[str, list[str]] = {}  # environment name -> reasons
        self._invalid: dict[str, str] = {}
        self._resources: dict[str, dict] = {}
        self._updating: set[str] = set()
        self._lock = threading.Lock()
        front = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                front._handle(self)

            def do_GET(self) -> None:  # noqa: N802
                front._handle(self)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.invalid_next.clear()
            self._invalid.clear()
            self._resources.clear()
            self._updating.clear()

    def go_invalid(self, environment: str, reason: str) -> None:
        """An existing environment turns INVALID (its instance profile deleted, say)."""
        with self._lock:
            self._invalid[environment] = reason

    def called(self, operation: str) -> list[dict]:
        return [body for op, body in self.calls if op == operation]

    # --- the proxy ------------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        raw = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        body = json.loads(raw or b"{}")
        operation = self._operations.get(request.path.split("?")[0])
        if operation is not None:
            with self._lock:
                self.calls.append((operation.name, body))
            try:
                validate_parameters(body, operation.input_shape)
            except ParamValidationError as exc:
                return _send(request, 400, _client_error(str(exc)))
            refusal = self._refuse(operation.name, body, dict(request.headers.items()))
            if refusal:
                return _send(request, 400, _client_error(refusal))
        status, payload = self._forward(request, raw)
        if operation is not None and status == 200:
            payload = self._after(operation.name, body, payload)
        _send(request, status, payload)

    def _forward(self, request: BaseHTTPRequestHandler, raw: bytes) -> tuple[int, dict]:
        conn = http.client.HTTPConnection(self.moto.hostname, self.moto.port, timeout=60)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        conn.request(request.command, request.path, body=raw, headers=headers)
        reply = conn.getresponse()
        data = reply.read()
        conn.close()
        return reply.status, json.loads(data or b"{}")

    # --- what AWS does and moto does not ---------------------------------------------------

    def _ask(self, path: str, body: dict, signed: dict[str, str]) -> dict:
        """A call of our own to moto, under the caller's Authorization header (moto picks the
        service and region from it)."""
        conn = http.client.HTTPConnection(self.moto.hostname, self.moto.port, timeout=60)
        conn.request("POST", path, body=json.dumps(body),
                     headers={"Content-Type": "application/json",
                              "Authorization": signed.get("Authorization", "")})
        reply = json.loads(conn.getresponse().read())
        conn.close()
        return reply

    def _refuse(self, operation: str, body: dict, signed: dict[str, str]) -> str | None:
        if operation != "DeleteComputeEnvironment":
            return None
        found = self._ask("/v1/describecomputeenvironments",
                          {"computeEnvironments": [body["computeEnvironment"]]},
                          signed)["computeEnvironments"]
        if not found:
            return None
        found = found[0]
        if found.get("state") == "ENABLED":
            return "Cannot delete, compute environment is ENABLED; disable it first"
        queues = self._ask("/v1/describejobqueues", {}, signed)["jobQueues"]
        for queue in queues:
            for order in queue.get("computeEnvironmentOrder", []):
                if order["computeEnvironment"] in {found["computeEnvironmentArn"],
                                                   found["computeEnvironmentName"]}:
                    return "Cannot delete, found existing JobQueue relationship"
        return None

    def _after(self, operation: str, body: dict, payload: dict) -> dict:
        with self._lock:
            if operation == "CreateComputeEnvironment":
                name = body["computeEnvironmentName"]
                self._resources.pop(name, None)
                reasons = self.invalid_next.get(name)
                if reasons:
                    self._invalid[name] = reasons.pop(0)
            elif operation == "DeleteComputeEnvironment":
                name = body["computeEnvironment"].rsplit("/", 1)[-1]
                self._invalid.pop(name, None)
                self._resources.pop(name, None)
            elif operation == "UpdateComputeEnvironment" and body.get("computeResources"):
                name = body["computeEnvironment"].rsplit("/", 1)[-1]
                self._resources.setdefault(name, {}).update(body["computeResources"])
                if INFRASTRUCTURE & body["computeResources"].keys():
                    self._updating.add(name)
            elif operation == "DescribeComputeEnvironments":
                for environment in payload.get("computeEnvironments", []):
                    name = environment["computeEnvironmentName"]
                    environment.setdefault("computeResources", {}).update(
                        self._resources.get(name, {}))
                    if name in self._updating:
                        self._updating.discard(name)
                        environment["status"] = "UPDATING"
                        environment["statusReason"] = "Infrastructure update in progress"
                    elif name in self._invalid:
                        environment["status"] = "INVALID"
                        environment["statusReason"] = self._invalid[name]
        return payload


def _client_error(message: str) -> dict:
    return {"__type": "ClientException", "message": message}


def _send(request: BaseHTTPRequestHandler, status: int, payload: dict) -> None:
    data = json.dumps(payload).encode()
    request.send_response(status)
    request.send_header("Content-Type", "application/json")
    request.send_header("Content-Length", str(len(data)))
    request.send_header("x-amzn-RequestId", "00000000-0000-0000-0000-000000000000")
    if status >= 400:
        request.send_header("x-amzn-ErrorType", "ClientException")
    request.end_headers()
    request.wfile.write(data)
