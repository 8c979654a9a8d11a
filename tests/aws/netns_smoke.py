"""Run scripts/aws-smoke.sh inside a network namespace of its own (`unshare --net`, see
test_aws_smoke.py) that holds everything the real run talks to, so that the "instance" mounts
its bucket with the instance role, as on AWS, and no static key is handed to it:

- moto (S3, IAM, EC2, STS, SSM) on 127.0.0.1;
- the IMDSv2-only metadata stand-in (imds.py) on 169.254.169.254, serving the credentials of the
  role sdtui attached to the instance (what EC2 does for an instance profile: moto's STS
  AssumeRole on it);
- the sshd standing in for the instance, started with the host key from the user data once moto
  shows the instance running (sshd.FakeBoot), and started afresh for a relaunch's new instance,
  whose engine then lacks the images listed in `instance_images` (ours alone: the test builds on
  a base image tag of its own).

The registry standing in for ECR's runs outside, beside the Docker engine that pushes and pulls.

Only the network is private: the s3fs mount stays visible to the Docker engine, whose container
binds it at /data. Prints one JSON report. Usage: python -m tests.aws.netns_smoke CONFIG_JSON
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def main(config: dict) -> dict:
    work, name, region = Path(config["work"]), config["name"], "us-east-1"
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "addr", "add", "169.254.169.254/32", "dev", "lo"], check=True)
    os.environ["MOTO_AMIS_PATH"] = config["amis"]  # read when moto's EC2 backend loads

    import boto3
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    from sdtui.deploy.aws.naming import role_name
    from tests.aws.imds import Imds, RoleCredentials
    from tests.aws.registry import remove_tags
    from tests.aws.sshd import FakeBoot

    moto = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{moto.get_host_and_port()[1]}"
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                            region_name=region)
    ec2, iam, sts = (session.client(s, endpoint_url=endpoint) for s in ("ec2", "iam", "sts"))

    def instance_role() -> RoleCredentials:
        arn = iam.get_role(RoleName=role_name(name))["Role"]["Arn"]
        c = sts.assume_role(RoleArn=arn, RoleSessionName="i-0123456789abcdef0")["Credentials"]
        return RoleCredentials(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"],
                               c["Expiration"])

    def fresh_instance() -> None:
        """A relaunch's new instance has neither the old one's mount nor its images."""
        import docker

        subprocess.run(["umount", "-l", config["mount_point"]], capture_output=True)
        engine = docker.from_env()
        remove_tags(engine, *config.get("instance_images", []))
        engine.close()

    imds = Imds(("169.254.169.254", 80), role_name(name), instance_role)
    imds.start()
    boot = FakeBoot(ec2, name, work / "sshd", config["port"], relaunch=True,
                    on_boot=fresh_instance)
    boot.start()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "SDTUI_TEST_S3FS_CREDENTIALS"))}
    env.update(config["env"], AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=region,
               AWS_EC2_METADATA_DISABLED="true")
    try:
        run = subprocess.run(config["command"], cwd=config["cwd"], env=env, capture_output=True,
                             text=True, timeout=config["timeout"])
    finally:
        boot.stop.set()
        boot.join(5)
        if boot.sshd is not None:
            boot.sshd.stop()
        subprocess.run(["umount", "-l", config["mount_point"]], capture_output=True)
        moto.stop()
    return {"exit": run.returncode, "stdout": run.stdout, "stderr": run.stderr[-4000:],
            "boot_error": repr(boot.error) if boot.error else None,
            "imds": [str(r) for r in imds.log]}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
