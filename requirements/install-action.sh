#!/usr/bin/env bash
# Install Sealgate for the GitHub Actions (action.yml, verify/action.yml) into its own venv:
# every dependency hash-pinned (requirements/action.txt), then the project itself with --no-deps
# and no build isolation, so nothing unpinned is fetched. Prints the venv's path on stdout.
#   bash requirements/install-action.sh ACTION_ROOT
set -euo pipefail
root=$(cd "$1" && pwd)
base="${RUNNER_TEMP:-${TMPDIR:-/tmp}}"
venv="$base/sealgate-action-venv"
# A later step of the same job finds the venv ready: reuse it when the pinned requirements and
# the sources are byte for byte those it was built from.
stamp=$( (cat "$root/requirements/action.txt"; tar -C "$root" --sort=name --mtime=@0 --owner=0 \
  --group=0 --numeric-owner -cf - pyproject.toml signer integrity sealgate) | sha256sum | cut -d' ' -f1)
if [ -x "$venv/bin/sealgate" ] && [ "$(cat "$venv/.sealgate-stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$venv"
  exit 0
fi
src=$(mktemp -d "$base/sealgate-src.XXXXXX")
trap 'rm -rf "$src"' EXIT
# Build from a copy, so that the action's directory (the workspace itself, for `uses: ./`) gets
# no build/ or egg-info that the tree proof would have to explain.
tar -C "$root" -cf - pyproject.toml README.md signer integrity sealgate | tar -C "$src" -xf -
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir)
python3 -m venv "$venv" >&2
"${pip[@]}" --require-hashes --only-binary :all: -r "$root/requirements/action.txt" >&2
"${pip[@]}" --no-deps --no-build-isolation --no-index "$src" >&2
echo "$stamp" > "$venv/.sealgate-stamp"
echo "$venv"
