#!/usr/bin/env bash
# Check the layer contracts in pyproject.toml with import-linter. The card's folders
# (schemas/, streams/, agents/, infra/) become tessera.* only when installed, so the
# check runs on a non-editable install of the tree in a temporary directory.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$repo/.venv/bin/python" -m pip install --quiet --no-deps --no-compile --target "$work" "$repo" 2>&1 \
  | grep -v "Warning\|^ \|^$\|!!" || true
rm -rf "$repo/build"
cd "$work"
PYTHONPATH="$work" "$repo/.venv/bin/lint-imports" "$repo/pyproject.toml" --no-cache
