#!/usr/bin/env bash
# Set up and run Sealgate on a fresh Debian/Ubuntu machine: installs the system packages and a
# virtual environment it needs, then runs the demo or the test suite.
#   bash scripts/dev.sh demo [sealgate demo options]   the main job on a local SoftHSM token
#   bash scripts/dev.sh test [pytest options]          the whole test suite
#   bash scripts/dev.sh install                        only install
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(python3 python3-venv python3-pip openssl git gnupg openssh-client softhsm2 opensc p11-kit p11-kit-modules rsync)
# only the tests need these: the service's scale-out store and the service benchmark's load
TEST_APT_PACKAGES=(postgresql wrk)
VENV=$(realpath -m "${SEALGATE_VENV:-.venv}")

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "dev.sh: need root (or sudo) to install: $*" >&2; exit 2; fi
}

install_system() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "dev.sh: installing ${missing[*]}" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

install_node_tools() {
  # gitlab-ci-local runs the GitLab component for real; 4.70.0 is the last for Node 20.
  if ! command -v npm >/dev/null; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  fi
  local dir="${SEALGATE_NODE_TOOLS:-$HOME/.cache/sealgate-node}"
  [ -x "$dir/node_modules/.bin/gitlab-ci-local" ] ||
    npm install --prefix "$dir" --no-audit --no-fund --silent gitlab-ci-local@4.70.0 >/dev/null
}

install_python() {
  # $1: what to install; the demo needs only the package, the tests also need the dev tools.
  # A venv that already has the dev tools keeps them (pip only adds what is missing).
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$1"
}

USER_PATH=$PATH  # the caller's own PATH: the demo judges from it whether `sealgate` is reachable
export PATH="$VENV/bin:$PATH"  # tools the venv ships (bao, moto_server) come first
command=${1:-test}
shift || true
case "$command" in
  install | demo | test) ;;
  *) echo "usage: bash scripts/dev.sh {demo|test|install} [options]" >&2; exit 2 ;;
esac
if [ "$command" = demo ]; then install_system "${APT_PACKAGES[@]}"; else
  install_system "${APT_PACKAGES[@]}" "${TEST_APT_PACKAGES[@]}"; fi
if [ "$command" = demo ]; then install_python .; else install_python '.[dev]'; install_node_tools; fi
case "$command" in
  install) ;;
  demo) PATH=$USER_PATH exec "$VENV/bin/sealgate" demo "$@" ;;
  test) exec "$VENV/bin/python" -m pytest "$@" ;;
esac
