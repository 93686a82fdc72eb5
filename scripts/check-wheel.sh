#!/usr/bin/env bash
# Build the wheel, install it into a fresh venv outside the checkout, and run the
# offline commands from there: proves the wheel carries every package and its data,
# and that nothing depends on the repository being the working directory.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
PY="${PYTHON:-python3}"

echo "==> building the wheel"
"$repo/.venv/bin/python" -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" "$repo" 2>&1 | grep -v "Warning\|^ \|^$\|!!" || true
wheel="$(ls "$work"/dist/tessera-*.whl)"
echo "    $(basename "$wheel")"
echo "==> checking its contents"
"$repo/.venv/bin/python" - "$wheel" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
tops = sorted({n.split("/")[0] for n in names if not n.startswith("tessera-")})
assert tops == ["tessera"], f"the wheel installs top-level names besides tessera: {tops}"
for need in ("tessera/billing/ledger.py", "tessera/forecast/engine.py", "tessera/resources/adapters/rest.py",
             "tessera/scheduler/kernel.py", "tessera/schemas/json/topics.json", "tessera/infra/kafka/pom.xml",
             "tessera/agents/worker.py", "tessera/streams/edge.py", "tessera/app/cli/main.py"):
    assert need in names, f"the wheel lacks {need}"
assert not any(n.startswith(("load/", "tests/", "tessera/load")) for n in names), "the wheel ships load/ or tests/"
print(f"    {len(names)} files, all under tessera/")
PY
echo "==> installing it into a fresh venv ($work/venv)"
"$PY" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet -c "$repo/constraints.txt" "$wheel"
cd "$work"   # outside the checkout: nothing may come from the repository
echo "==> tessera --help"
"$work/venv/bin/tessera" --help >/dev/null
echo "==> tessera pack on examples/"
"$work/venv/bin/tessera" pack --resources "$repo/examples/resources.jsonl" --requests "$repo/examples/requests.jsonl" \
  | tee "$work/pack.out"
grep -q '"status":"placed"' "$work/pack.out"
echo "==> tessera bill on examples/"
"$work/venv/bin/tessera" bill --agreements "$repo/examples/agreements.json" --usage "$repo/examples/usage.jsonl" \
  --period 2026-11 --format focus-csv | tee "$work/bill.out"
grep -q "gcp" "$work/bill.out"
"$work/venv/bin/python" -c 'import tessera.schemas, sys; assert "/venv/" in tessera.schemas.__file__, tessera.schemas.__file__'
echo "wheel OK"
