#!/usr/bin/env bash
# Print the Debian mirror this machine's apt already uses (deb822 .sources or one-line .list
# files), so debootstrap fetches from the same place apt does. Sourced or run.
debian_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    awk '/^URIs:/ {print $2; exit}' "$f" | grep -v security && return 0
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] || continue
    awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' "$f" \
      | grep . && return 0
  done
  return 1
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  debian_mirror || { echo "no Debian mirror found in /etc/apt/sources.list(.d)" >&2; exit 1; }
fi
