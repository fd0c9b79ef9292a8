#!/usr/bin/env bash
# Install CloudiSENSE and start the demo node (offline planner, no API key needed).
# Usage: ./scripts/demo.sh [extra `cloudisense serve` options]
source "$(dirname "$0")/_setup.sh"
install_project "provision"
echo "==> starting the demo node (Ctrl-C stops it)"
exec .venv/bin/cloudisense serve --config examples/demo/cloudisense.toml "$@"
