#!/usr/bin/env bash
# A smoke run of Option A on a real AWS account: provision with your model, generate one image,
# print each step's time and the cold-start total, tear everything down and check by tag that
# nothing is left. It costs a few cents (one g4dn.xlarge for about ten minutes).
#
# Usage: scripts/aws-smoke.sh --model PATH --bucket NAME [--region R] [--name N] [--size PX]
#                             [--steps N] [--relaunch] [--purge-bucket] [-- MORE SDTUI FLAGS]
#   --size PX        the image's width and height (default 512)
#   --relaunch       then tear down keeping the bucket and the image in ECR, and launch again
#                    on a new instance, which pulls the image: its steps' times too
#   --purge-bucket   delete the bucket, the uploaded model and the ECR repository too
# Credentials come from the standard chain (AWS_PROFILE, env vars, SSO). SDTUI_PYTHON names
# the interpreter sdtui is installed in (default python3). Exit status: 0 when the image came
# back and nothing is left; otherwise sdtui's own exit code, or 1 when something is left.
set -euo pipefail

PY="${SDTUI_PYTHON:-python3}"
NAME="smoke-$(date +%s)"
SIZE=512
STEPS=30
REGION=""
MODEL=""
BUCKET=""
PURGE=()
RELAUNCH=0
EXTRA=()
while (($#)); do
  case "$1" in
    --model) MODEL="$2"; shift 2 ;;
    --bucket) BUCKET="$2"; shift 2 ;;
    --region) REGION="$2"; shift 2 ;;
    --name) NAME="$2"; shift 2 ;;
    --size) SIZE="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --purge-bucket) PURGE=(--purge-bucket); shift ;;
    --relaunch) RELAUNCH=1; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "aws-smoke: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -n "$MODEL" && -n "$BUCKET" ]] || { echo "aws-smoke: --model and --bucket are required" >&2; exit 2; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
sdtui=("$PY" -m sdtui --no-ui --option aws --name "$NAME")
[[ -n "$REGION" ]] && sdtui+=(--region "$REGION")

# Provision, generate one image and print each step's time; sets status (sdtui's exit) and
# checked (the report's). Every later step runs whatever happened here: the teardown above all.
launch() {
  local label="$1"
  echo "== $label: provision $NAME and generate one ${SIZE}x${SIZE} image"
  rm -rf "$work/images"
  set +e
  # Each JSON event line is stamped with the seconds since the start as it arrives.
  "${sdtui[@]}" --bucket "$BUCKET" --model "$MODEL" --prompt "a lighthouse at dusk, oil painting" \
    --width "$SIZE" --height "$SIZE" --steps "$STEPS" --seed 1 --out "$work/images" --json \
    "${EXTRA[@]}" 2>"$work/stderr" \
    | "$PY" -u -c 'import sys, time
start = time.monotonic()
for line in sys.stdin:
    sys.stdout.write(f"{time.monotonic() - start:.1f}\t{line}")' >"$work/events"
  status=${PIPESTATUS[0]}

  "$PY" - "$work/events" "$work/images" "$SIZE" "$label" <<'PYTHON'
import json, sys
from pathlib import Path

events_file, images, size, label = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
first_image = None
logs: dict[str, list[str]] = {}
print(f"{'step':<12}{'outcome':<9}{'seconds':>8}")
for line in Path(events_file).read_text().splitlines():
    stamp, _, text = line.partition("\t")
    event = json.loads(text)
    if {"step", "outcome", "seconds"} <= event.keys():
        print(f"{event['step']:<12}{event['outcome']:<9}{event['seconds']:>8.1f}")
        if event["step"] == "image":  # built and pushed, or pulled: the line says which
            print(f"  = {event.get('detail', '')}")
        if event["outcome"] == "failed":  # what the step said last explains why
            for logged in logs.get(event["step"], [])[-20:]:
                print(f"  | {logged}")
    elif {"step", "line"} <= event.keys():
        logs.setdefault(event["step"], []).append(event["line"])
    elif event.get("event") == "image" and first_image is None:
        first_image = float(stamp)
if first_image is not None:
    print(f"cold start ({label}): {first_image:.1f} s from the first call to the first image")
pngs = sorted(images.glob("*.png"))
if pngs:
    from PIL import Image
    with Image.open(pngs[0]) as image:
        print(f"image: {pngs[0].name} {image.size[0]}x{image.size[1]}")
        if image.size != (size, size):
            sys.exit(f"aws-smoke: the image is {image.size}, not {size}x{size}")
PYTHON
  checked=$?
  if ((status != 0)); then
    echo "aws-smoke: sdtui exited $status:" >&2
    tail -n 20 "$work/stderr" >&2
  fi
}

launch "first launch"
if ((RELAUNCH && status == 0 && checked == 0)); then
  echo "== tear down $NAME, keeping the bucket and the image in ECR"
  "${sdtui[@]}" --teardown 2>"$work/teardown"
  down=$?
  if ((down == 0)); then
    launch "relaunch"
  else
    tail -n 20 "$work/teardown" >&2
    status=$down
  fi
fi

echo "== tear down $NAME ${PURGE[*]}"
"${sdtui[@]}" --teardown "${PURGE[@]}" 2>"$work/teardown"
down=$?
((down == 0)) || tail -n 20 "$work/teardown" >&2

echo "== check by tag that nothing is left"
"$PY" - "$NAME" "$BUCKET" "$REGION" "${#PURGE[@]}" <<'PYTHON'
import sys

import boto3
from botocore.exceptions import ClientError

from sdtui.deploy.aws.naming import (TAG_KEY, instance_profile_name, repository_name, role_name,
                                    tag_filter)

name, bucket, region, purged = sys.argv[1], sys.argv[2], sys.argv[3] or None, sys.argv[4] == "1"
session = boto3.Session(region_name=region)
ec2, iam, s3 = (session.client(s) for s in ("ec2", "iam", "s3"))
left = []
for reservation in ec2.describe_instances(Filters=[tag_filter(name)])["Reservations"]:
    left += [f"instance {i['InstanceId']} ({i['State']['Name']})" for i in reservation["Instances"]
             if i["State"]["Name"] != "terminated"]
left += [f"security group {g['GroupId']}"
         for g in ec2.describe_security_groups(Filters=[tag_filter(name)])["SecurityGroups"]]
left += [f"key pair {k['KeyName']}"
         for k in ec2.describe_key_pairs(Filters=[tag_filter(name)])["KeyPairs"]]
left += [f"volume {v['VolumeId']}"
         for v in ec2.describe_volumes(Filters=[tag_filter(name)])["Volumes"]]
try:
    session.client("ecr").describe_repositories(repositoryNames=[repository_name(name)])
    if purged:
        left.append(f"ECR repository {repository_name(name)}")
    else:
        print(f"ECR repository {repository_name(name)} kept, as asked (--purge-bucket deletes it)")
except ClientError as exc:
    if exc.response["Error"]["Code"] != "RepositoryNotFoundException":
        raise
for kind, call in (("role", lambda: iam.get_role(RoleName=role_name(name))),
                   ("instance profile", lambda: iam.get_instance_profile(
                       InstanceProfileName=instance_profile_name(name)))):
    try:
        call()
        left.append(kind)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "NoSuchEntity":
            raise
try:
    tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=bucket)["TagSet"]}
    if purged and tags.get(TAG_KEY) == name:
        left.append(f"bucket {bucket}")
    elif not purged:
        print(f"bucket {bucket} kept, as asked (--purge-bucket deletes it)")
except ClientError as exc:
    if exc.response["Error"]["Code"] not in {"NoSuchBucket", "404", "NoSuchTagSet"}:
        raise
if left:
    sys.exit("aws-smoke: still there: " + ", ".join(left))
print(f"nothing tagged {TAG_KEY}={name} is left")
PYTHON
leftover=$?
((status == 0)) || exit "$status"
((checked == 0)) || exit 1
((down == 0)) || exit "$down"
exit "$leftover"
