"""Run inside fresh network, mount and PID namespaces (`unshare`, see test_s3fs_imdsv2.py): an
instance's view of AWS with nothing leaving the machine, then the bootstrap's s3fs mount.

- S3, IAM and STS are moto, served over HTTPS on 127.0.0.1:443 under their real names
  (s3.REGION.amazonaws.com, BUCKET.s3.REGION.amazonaws.com, ...) through this namespace's own
  /etc/hosts, with a certificate from a throwaway CA that only this namespace's CA bundle
  trusts: s3fs's `url=https://s3.REGION.amazonaws.com` is used as the bootstrap writes it.
- The bucket, the model upload and the instance role are made by sdtui's own code; the role's
  temporary credentials come from moto's STS AssumeRole, and once set up moto checks every
  request's signature and the role's policy (least privilege: s3fs must manage with
  GetObject and ListBucket).
- The IMDSv2-only stand-in (imds.py) listens on 169.254.169.254:80 and hands out those
  credentials.
- s3fs runs as the bootstrap runs it (bootstrap.s3fs_mount_argv with bootstrap.s3fs_options,
  `iam_role=auto`), with an empty environment, then the checkpoint is read through the mount.

Prints one JSON report on stdout. Usage: python -m tests.aws.netns_mount CONFIG_JSON
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

MOUNT_WAIT_S = 30


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def _certificates(folder: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for `names`; returns (ca, cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sdtui test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                         critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem))
    paths[2].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def _network(work: Path, region: str, bucket: str) -> Path:
    """Loopback up, the metadata address on it, AWS names on 127.0.0.1; returns the CA file."""
    _run("ip", "link", "set", "lo", "up")
    _run("ip", "addr", "add", "169.254.169.254/32", "dev", "lo")
    names = [f"s3.{region}.amazonaws.com", f"*.s3.{region}.amazonaws.com", "iam.amazonaws.com",
             f"sts.{region}.amazonaws.com", "sts.amazonaws.com"]
    ca, cert, key = _certificates(work, names)
    hosts = work / "hosts"
    resolved = [n for n in names if "*" not in n] + [f"{bucket}.s3.{region}.amazonaws.com"]
    hosts.write_text("127.0.0.1 localhost " + " ".join(resolved) + "\n")
    # Private mounts (unshare --mount): only this namespace sees these files.
    _run("mount", "--bind", str(hosts), "/etc/hosts")
    _run("mount", "--bind", str(ca), "/etc/ssl/certs/ca-certificates.crt")
    os.environ["AWS_CA_BUNDLE"] = str(ca)
    return cert.parent


def _moto_over_tls(certs: Path) -> None:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 443, DomainDispatcherApplication(create_backend_app),
                         threaded=True, request_handler=MotoRequestHandler,
                         ssl_context=(str(certs / "server.pem"), str(certs / "server.key")))
    threading.Thread(target=server.serve_forever, daemon=True).start()


def _enforce_auth() -> None:
    """From now on moto checks signatures and IAM policies, as AWS does."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0


def _others_alive() -> bool:
    """Whether any process but this one lives in this PID namespace (the s3fs daemon). This
    process is the namespace's init, so it reaps the daemon when it exits."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    return any(p.isdigit() and int(p) != os.getpid() for p in os.listdir("/proc"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(config: dict) -> dict:
    import boto3

    from sdtui.deploy.aws import bucket as s3_bucket
    from sdtui.deploy.aws import iam, s3fs, upload
    from sdtui.deploy.aws.bootstrap import HostPlan, s3fs_mount_argv, s3fs_options
    from sdtui.deploy.aws.naming import role_name
    from tests.aws.imds import Imds, RoleCredentials

    work = Path(config["work"])
    region, name, bucket = config["region"], config["name"], config["bucket"]
    model = Path(config["model"])
    certs = _network(work, region, bucket)
    _moto_over_tls(certs)

    session = boto3.Session(aws_access_key_id="setup", aws_secret_access_key="setup",
                            region_name=region)
    s3, iam_client, sts = (
        session.client(service, endpoint_url=f"https://{host}")
        for service, host in (("s3", f"s3.{region}.amazonaws.com"), ("iam", "iam.amazonaws.com"),
                              ("sts", f"sts.{region}.amazonaws.com")))
    account = sts.get_caller_identity()["Account"]
    s3_bucket.ensure_bucket(s3, bucket, region, name, account)
    upload.upload_models(s3, bucket, [model])
    role, _ = iam.ensure_role(iam_client, name, bucket)
    role_arn = iam_client.get_role(RoleName=role)["Role"]["Arn"]

    # What EC2 does for the instance profile: assume the role, serve its credentials.
    c = sts.assume_role(RoleArn=role_arn, RoleSessionName="i-0123456789abcdef0",
                        DurationSeconds=3600)["Credentials"]
    role_credentials = RoleCredentials(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"],
                                       c["Expiration"])
    imds = Imds(("169.254.169.254", 80), role_name(name), lambda: role_credentials)
    imds.start()
    _enforce_auth()

    plan = HostPlan(bucket=bucket, region=region, idle_minutes=30, gpu_probe_image=None,
                    prefix=str(work / "host"))
    cache = plan.path("/var/cache/s3fs")
    Path(cache).mkdir(parents=True)
    Path(plan.mount_point).mkdir(parents=True)
    log = Path(plan.path(s3fs.LOG_FILE))
    log.parent.mkdir(parents=True)
    argv = s3fs_mount_argv(plan, s3fs_options(plan, cache))
    mounted = subprocess.run(argv, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                        "HOME": str(work)},
                             capture_output=True, text=True, timeout=60)
    report: dict = {"argv": argv, "exit": mounted.returncode,
                    "output": (mounted.stdout + mounted.stderr)[-2000:]}
    target = Path(plan.mount_point) / model.name
    deadline = time.monotonic() + MOUNT_WAIT_S
    while time.monotonic() < deadline:
        if os.path.ismount(plan.mount_point):
            try:
                report["sha256"] = _sha256(target)
                break
            except OSError as exc:
                report["read_error"] = str(exc)
        elif not _others_alive():
            report["read_error"] = "s3fs exited without mounting"
            break
        time.sleep(0.2)
    report["expected_sha256"] = _sha256(model)
    report["imds"] = [str(r) for r in imds.log]
    report["s3fs_log"] = log.read_text()[-2000:] if log.exists() else ""
    report["version"] = subprocess.run([argv[0], "--version"], capture_output=True,
                                       text=True).stdout.splitlines()[0]
    subprocess.run(["umount", plan.mount_point], capture_output=True)
    return report


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
