#!/usr/bin/env bash
# Install the official FOCUS validator (focus-validator, FinOps Foundation) into .venv-focus.
# It needs Python >= 3.12 while Tessera runs on 3.11, so it lives in a venv of its own and
# the tests call its command. Pinned by infra/focus/requirements.txt; idempotent.
#
# No Python >= 3.12 found: a warning, and the FOCUS validation test skips; with
# TESSERA_REQUIRE_FOCUS_VALIDATOR=1 (CI) it is an error instead.
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=.venv-focus/.installed
req=infra/focus/requirements.txt
if [ -f "$stamp" ] && [ ! "$req" -nt "$stamp" ]; then
  exit 0
fi
found=""
# 3.12 first: the pinned NumPy 1.26 has wheels for it (on 3.13 it builds from source).
for py in "${FOCUS_PYTHON:-}" python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python python3.13 "$HOME"/.pyenv/versions/3.13*/bin/python; do
  [ -n "$py" ] || continue
  if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
    found="$py"; break
  fi
done
if [ -z "$found" ]; then
  msg="no Python >= 3.12 found for the FOCUS validator; set FOCUS_PYTHON=/path/to/python3.12"
  if [ "${TESSERA_REQUIRE_FOCUS_VALIDATOR:-0}" = 1 ]; then echo "error: $msg" >&2; exit 1; fi
  echo "warning: $msg (the FOCUS validation test will skip)" >&2
  exit 0
fi
echo "==> installing the FOCUS validator into .venv-focus ($("$found" --version))"
rm -rf .venv-focus
"$found" -m venv .venv-focus
.venv-focus/bin/python -m pip install --quiet --upgrade pip
.venv-focus/bin/python -m pip install --quiet -r "$req"
touch "$stamp"
