#!/bin/sh
# Demo maintenance: remove temporary files and old rotated logs of the demo node.
# Touches only examples/demo/var/ (found from this script's own location).
# Usage: cleanup.sh [--dry-run] [--keep N]   (keep the N newest rotations per log, default 1)
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
VAR="$(dirname "$HERE")/var"
DRY=0
KEEP=1
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --keep) shift; KEEP=${1:-1} ;;
    *) echo "cleanup: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
case "$KEEP" in ''|*[!0-9]*) echo "cleanup: --keep needs a number" >&2; exit 2 ;; esac

remove() {
  if [ "$DRY" -eq 1 ]; then echo "would remove $1"; else rm -f -- "$1" && echo "removed $1"; fi
}

echo "cleanup: looking in $VAR"
removed=0
if [ -d "$VAR/tmp" ]; then
  for f in "$VAR"/tmp/*; do
    [ -f "$f" ] || continue
    remove "$f"; removed=$((removed + 1))
  done
fi
if [ -d "$VAR/log" ]; then
  for f in "$VAR"/log/*.[0-9]; do
    [ -f "$f" ] || continue
    n=${f##*.}
    if [ "$n" -gt "$KEEP" ]; then remove "$f"; removed=$((removed + 1)); fi
  done
fi
echo "cleanup: done, $removed file(s) $( [ "$DRY" -eq 1 ] && echo 'would be ' )removed"
exit 0
