# Shared set-up for scripts/demo.sh and scripts/test.sh (sourced, not run).
# Creates .venv with Python 3.11+ and installs the project with the given extras.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  echo "error: CloudiSENSE needs Python 3.11 or newer (found: $("$PYTHON" --version 2>&1)). Set PYTHON=/path/to/python3.11." >&2
  exit 1
fi

# System packages (Debian/Ubuntu): installed only when missing.
need_apt() {
  local missing=()
  for cmd_pkg in "$@"; do
    local cmd="${cmd_pkg%%:*}" pkg="${cmd_pkg##*:}"
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  apt_install "${missing[@]}"
}

apt_install() {
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: please install these system packages: $*" >&2
    exit 1
  fi
  echo "==> installing system packages: $*"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

install_project() {
  local extras="$1"
  # Debian's python3 comes without venv/ensurepip until python3-venv is installed.
  if [ ! -x .venv/bin/python ] && ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    apt_install python3-venv
  fi
  if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv"
    "$PYTHON" -m venv .venv
  fi
  echo "==> installing cloudisense[$extras]"
  case ",$extras," in
    *,all,*|*,local,*) echo "    (the first install of llama-cpp-python compiles it: about 6-10 minutes on 2 cores)" ;;
  esac
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$extras]"
}
