#!/usr/bin/env bash
# Install everything (system packages included) and run the whole test suite.
# Usage: ./scripts/test.sh [pytest options]
source "$(dirname "$0")/_setup.sh"
need_apt mosquitto:mosquitto chromium:chromium
install_project "all,test"
echo "==> running the test suite"
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
status=$?
set -e
# pytest's 5 means "no tests collected": that is a failure here, not a pass.
exit $status
