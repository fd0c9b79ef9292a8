#!/bin/sh
# Demo maintenance: archive the demo node's configuration (config file, rules, playbooks)
# into examples/demo/var/backups/, keeping the newest 5 archives.
# Touches only examples/demo/ (found from this script's own location).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
DEMO=$(dirname "$HERE")
DEST="$DEMO/var/backups"
STAMP=$(date +%Y%m%d-%H%M%S)
mkdir -p "$DEST"
echo "backup: starting at $STAMP"
if command -v tar >/dev/null 2>&1; then
  ARCHIVE="$DEST/demo-$STAMP.tar.gz"
  (cd "$DEMO" && tar -czf "$ARCHIVE" cloudisense.toml rules playbooks 2>/dev/null) || \
    (cd "$DEMO" && tar -czf "$ARCHIVE" cloudisense.toml)
else
  ARCHIVE="$DEST/demo-$STAMP"
  mkdir -p "$ARCHIVE"
  cp -R "$DEMO/cloudisense.toml" "$DEMO/rules" "$DEMO/playbooks" "$ARCHIVE/" 2>/dev/null || true
fi
echo "backup: wrote $ARCHIVE"
# Keep the 5 newest archives (names sort by time).
count=0
for old in $(ls -1r "$DEST" | grep '^demo-'); do
  count=$((count + 1))
  if [ "$count" -gt 5 ]; then rm -rf -- "${DEST:?}/$old"; echo "backup: pruned $old"; fi
done
echo "backup: done"
exit 0
