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
"$work/venv/bin/python" -m pip install --quiet -c "$repo/constraints.txt" "tessera[all] @ file://$wheel"
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
echo "==> the base install (no extras): what a producer needs for tessera.client"
"$PY" -m venv "$work/client"
"$work/client/bin/python" -m pip install --quiet -c "$repo/constraints.txt" "$wheel"
"$work/client/bin/python" - <<'PY'
import sys
from tessera.client import TesseraClient
from tessera.schemas import encode
from tessera.streams.partitioner import murmur2
r = TesseraClient.request("job-1", tenant="tenant-a", vcpu=2, memory_gib=4, replicas=3)
assert encode(r) and murmur2(b"abc") == 479470107
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"numba", "numpy", "faust", "river", "chdb", "kubernetes"})
assert not heavy, f"the client loaded {heavy}"
PY
"$work/client/bin/tessera" --help >/dev/null
if "$work/client/bin/tessera" pack --resources x --requests y 2>"$work/missing.err"; then exit 1; fi
grep -q "pip install 'tessera\[worker\]'" "$work/missing.err"
echo "    $("$work/client/bin/python" -m pip list 2>/dev/null | tail -n +3 | wc -l) packages, $(du -sh "$work/client" | cut -f1) (the full install: $(du -sh "$work/venv" | cut -f1))"
echo "wheel OK"
