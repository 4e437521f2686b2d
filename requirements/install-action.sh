#!/usr/bin/env bash
# Install Sealgate for the GitHub Actions (action.yml, verify/action.yml) into its own venv:
# every dependency hash-pinned (requirements/action.txt), then the project itself with --no-deps
# and no build isolation, so nothing unpinned is fetched. Prints the venv's path on stdout.
#   bash requirements/install-action.sh ACTION_ROOT
set -euo pipefail
root=$(cd "$1" && pwd)
base="${RUNNER_TEMP:-${TMPDIR:-/tmp}}"
venv="$base/sealgate-action-venv"
src=$(mktemp -d "$base/sealgate-src.XXXXXX")
trap 'rm -rf "$src"' EXIT
# Build from a copy, so that the action's directory (the workspace itself, for `uses: ./`) gets
# no build/ or egg-info that the tree proof would have to explain.
tar -C "$root" -cf - pyproject.toml README.md signer integrity sealgate | tar -C "$src" -xf -
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir)
python3 -m venv "$venv" >&2
"${pip[@]}" --require-hashes --only-binary :all: -r "$root/requirements/action.txt" >&2
"${pip[@]}" --no-deps --no-build-isolation --no-index "$src" >&2
echo "$venv"
