#!/usr/bin/env bash
# Start dockerd in the background (there is no systemd) unless the engine already answers,
# then wait up to 60 s for it.
set -euo pipefail

SOCK=/var/run/docker.sock
LOG=/var/log/sdtui-dockerd.log

engine_answers() { docker version >/dev/null 2>&1; }

if engine_answers; then
  exit 0
fi
if ! command -v dockerd >/dev/null; then
  echo "dockerd is not installed (apt-get install docker.io)" >&2
  exit 1
fi
pid="$(cat /var/run/docker.pid 2>/dev/null || true)"
if [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null; then
  rm -f "$SOCK" /var/run/docker.pid
  nohup dockerd >"$LOG" 2>&1 </dev/null &
fi
for _ in $(seq 60); do
  engine_answers && exit 0
  sleep 1
done
echo "dockerd did not answer on $SOCK within 60 s; its log:" >&2
tail -n 30 "$LOG" >&2 || true
exit 1
