"""Installation choices: the base install is what a producer needs for ``tessera.client``;
the workers, the embedded ClickHouse and the Kubernetes client are extras. Here the heavy
packages are made unimportable in a fresh interpreter (``make wheel-check`` also installs
the wheel without extras into a fresh venv and runs the same checks)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("faust", "mode", "river", "numba", "numpy", "clickhouse_connect", "chdb", "kubernetes", "aiohttp",
         "babel", "prometheus_client")

BLOCK = f"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {HEAVY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Block())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_the_base_dependencies_are_the_clients_and_all_brings_the_rest():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {d.split("=")[0].split(">")[0].split("<")[0].strip() for d in project["dependencies"]}
    assert base == {"aiokafka", "orjson", "pydantic"}
    extras = project["optional-dependencies"]
    assert any(d.startswith("chdb") for d in extras["embedded"])
    assert any(d.startswith("kubernetes") for d in extras["kubernetes"])
    assert extras["all"] == ["tessera[worker,embedded,kubernetes]"]


def test_the_client_works_without_the_extras():
    out = _run("""
from tessera.client import TesseraClient
from tessera.schemas import encode
from tessera.streams.partitioner import Murmur2Partitioner, murmur2
r = TesseraClient.request("job-1", tenant="acme", vcpu=2, memory_gib=4, replicas=3)
assert b'"job-1"' in encode(r)
assert murmur2(b"abc") == 479470107            # the compiled hash's value, in pure Python
print(Murmur2Partitioner()(b"job-1", list(range(6)), list(range(6))))
""")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().isdigit()


def test_the_cli_lists_every_command_and_names_the_extra_a_missing_one_needs():
    out = _run("""
from tessera.app.cli.main import main
try:
    main(["--help"])
except SystemExit as e:
    assert e.code == 0
assert main(["pack", "--resources", "r.jsonl", "--requests", "q.jsonl"]) == 2
""")
    assert out.returncode == 0, out.stderr
    assert "pack" in out.stdout and "needs the 'worker' extra" in out.stdout
    assert "pip install 'tessera[worker]'" in out.stderr
