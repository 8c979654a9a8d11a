"""A stand-in for the Service Quotas API over HTTP, because moto's answers only for VPC quotas.
It speaks the real wire format (JSON 1.1, X-Amz-Target ServiceQuotasV20190624.*) and answers
GetServiceQuota / GetAWSDefaultServiceQuota for the EC2 G and VT vCPU quotas the way AWS does
(shape taken from the API reference), or with AWS's NoSuchResourceException."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAMES = {"L-DB2E81BA": "Running On-Demand G and VT instances",
         "L-3819A6DF": "All G and VT Spot Instance Requests"}
METRIC_CLASS = {"L-DB2E81BA": "G/OnDemand", "L-3819A6DF": "G/Spot"}


def quota_answer(code: str, value: float, region: str = "us-east-1",
                 account: str = "123456789012") -> dict:
    return {"Quota": {
        "ServiceCode": "ec2",
        "ServiceName": "Amazon Elastic Compute Cloud (Amazon EC2)",
        "QuotaArn": f"arn:aws:servicequotas:{region}:{account}:ec2/{code}",
        "QuotaCode": code,
        "QuotaName": NAMES[code],
        "Value": value,
        "Unit": "None",
        "Adjustable": True,
        "GlobalQuota": False,
        "UsageMetric": {
            "MetricNamespace": "AWS/Usage", "MetricName": "ResourceCount",
            "MetricDimensions": {"Class": METRIC_CLASS[code], "Resource": "vCPU",
                                 "Service": "EC2", "Type": "Resource"},
            "MetricStatisticRecommendation": "Maximum"},
        "QuotaAppliedAtLevel": "ACCOUNT",
    }}


class QuotaServer:
    """`values[code]` is the applied quota in vCPUs; a code missing there is unknown."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.calls: list[tuple[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                action = self.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
                code = body.get("QuotaCode", "")
                server.calls.append((action, code))
                if (action in {"GetServiceQuota", "GetAWSDefaultServiceQuota"}
                        and body.get("ServiceCode") == "ec2" and code in server.values):
                    self._send(200, quota_answer(code, server.values[code]))
                else:
                    self._send(400, {"__type": "NoSuchResourceException",
                                     "message": f"The request failed because the specified "
                                     f"service does not exist or quota {code} is unknown."})

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-amzn-RequestId", "00000000-0000-0000-0000-000000000000")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
