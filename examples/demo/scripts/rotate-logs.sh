#!/bin/sh
# Demo maintenance: rotate the demo node's logs in examples/demo/var/log/.
# Each non-empty log is renamed to <log>.1 (older rotations shift up to .3) and recreated
# empty, the way logrotate's default "create" mode does it; live tails follow the new file.
# Touches only examples/demo/var/log/ (found from this script's own location).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
LOGS="$(dirname "$HERE")/var/log"
KEEP=3
if [ ! -d "$LOGS" ]; then echo "rotate-logs: $LOGS does not exist, nothing to do"; exit 0; fi
rotated=0
for f in "$LOGS"/*.log "$LOGS"/syslog; do
  [ -f "$f" ] || continue
  [ -s "$f" ] || { echo "rotate-logs: $(basename "$f") is empty, skipped"; continue; }
  n=$KEEP
  while [ "$n" -gt 1 ]; do
    prev=$((n - 1))
    [ -f "$f.$prev" ] && mv -f -- "$f.$prev" "$f.$n"
    n=$prev
  done
  mv -f -- "$f" "$f.1"
  : > "$f"
  rotated=$((rotated + 1))
  echo "rotate-logs: rotated $(basename "$f")"
done
echo "rotate-logs: done, $rotated log(s) rotated"
exit 0
