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
  .venv/bin/python -m pip install -q --upgrade pip
  case ",$extras," in
    *,all,*|*,local,*) install_llama ;;
  esac
  echo "==> installing cloudisense[$extras]"
  .venv/bin/python -m pip install -q -e ".[$extras]"
}

# llama.cpp's default build is tuned to the building CPU (-march=native). On a CPU that reports AMX
# inside a VM that does not grant it, that build crashes (SIGSEGV at `ldtilecfg`) on the first
# token, and a wheel built natively on one machine may use instructions another lacks. So on x86_64
# it is built for AVX2/FMA/F16C, which every x86_64 machine of the last decade has, and the wheel is
# kept under these flags (pip's own wheel cache ignores CMAKE_ARGS: it could hand back a native build).
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"

install_llama() {
  local spec
  # The requirement as the project's `local` extra states it (one place: pyproject.toml).
  spec="$(.venv/bin/python -c 'import re, tomllib; extra = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["local"]; print(next(r for r in extra if re.match(r"llama-cpp-python\b", r)))')"
  if [ "$(uname -m)" != "x86_64" ]; then
    echo "==> installing $spec (compiles llama.cpp: about 6-10 minutes on 2 cores the first time)"
    .venv/bin/python -m pip install -q "$spec"
    return
  fi
  if .venv/bin/python -c 'import llama_cpp' 2>/dev/null && [ -f .venv/.llama-build ] \
      && [ "$(cat .venv/.llama-build)" = "$LLAMA_CMAKE_ARGS" ]; then
    return
  fi
  local wheels="${XDG_CACHE_HOME:-$HOME/.cache}/cloudisense/wheels/$(printf '%s %s' "$spec" "$LLAMA_CMAKE_ARGS" | sha256sum | cut -c1-16)"
  if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "==> building $spec for AVX2 (compiles llama.cpp: about 6-10 minutes on 2 cores, once per machine)"
    mkdir -p "$wheels"
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" .venv/bin/python -m pip wheel -q --no-cache-dir --no-deps -w "$wheels" "$spec"
  fi
  echo "==> installing llama-cpp-python from $wheels"
  .venv/bin/python -m pip install -q --force-reinstall --no-deps "$wheels"/llama_cpp_python-*.whl
  .venv/bin/python -m pip install -q "$spec"  # its dependencies
  printf '%s' "$LLAMA_CMAKE_ARGS" > .venv/.llama-build
}
