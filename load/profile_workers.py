"""Profile: where each worker's CPU goes under load.

Runs the whole-pipeline benchmark (``python -m load``) at one rate in a subprocess and,
while the rate runs, samples the scheduler, billing and event-log sink processes with
py-spy (a sampling profiler outside the process: nothing in Tessera changes to be
profiled). Each sample is charged to the first category found walking its stack from the
innermost frame outwards (decoding at the edge, the core's own work, encoding and
CloudEvents headers, the Kafka client, ClickHouse, waiting for I/O, ...). Results:
``load/results/profile.json``; docs/benchmarks.md shows them.

  python -m load.profile_workers [--rate 3000] [--seconds 15]   (needs py-spy: the bench extra)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from load.machine import machine

RESULTS = Path(__file__).resolve().parent / "results"
WORKERS = {"scheduler": " scheduler --batch-wait-ms", "billing": " billing --agreements",
           "sink (event-log worker)": " worker --agent event-log"}
#: (category, substrings of a frame "function (module/path.py:line)"), tried in this order per
#: frame, innermost frame first: the first frame that names a category decides.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("waiting for I/O (event loop idle)", ("(selectors.py",)),
    ("edge: decode and validate input", ("decode (tessera/schemas/codec.py", "(tessera/streams/edge.py",
                                         "(tessera/schemas/events.py", "(tessera/schemas/base.py")),
    ("encode output and CloudEvents headers", ("encode (tessera/schemas/codec.py", "(tessera/streams/cloudevents.py",
                                               "event_record (", "encode_row (")),
    ("packing kernel and search", tuple(f"(tessera/scheduler/{m}.py" for m in
                                        ("kernel", "search", "packing", "batch", "exact", "table"))),
    ("scheduler core", ("(tessera/scheduler/",)),
    ("billing core (ledger, lifecycle)", ("(tessera/billing/", "(tessera/pricing/")),
    ("checkpoints", ("(tessera/streams/checkpoint.py",)),
    ("ClickHouse inserts", ("(tessera/storage/", "(chdb", "(clickhouse_connect/")),
    ("Kafka client (aiokafka)", ("(aiokafka/", "(kafka/")),
    ("Faust runtime", ("(faust/", "(mode/")),
    ("metrics", ("(prometheus_client/",)),
    ("worker loop (batching, supervision)", ("(tessera/",)),
]


def categorise(stack: list[str]) -> str:
    for frame in reversed(stack):
        for name, needles in CATEGORIES:
            if any(n in frame for n in needles):
                return name
    return "other (asyncio, interpreter)"


def summarise(raw: Path) -> dict:
    cats: Counter[str] = Counter()
    funcs: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack_text, _, n_text = line.rpartition(" ")
        n = int(n_text)
        stack = stack_text.split(";")
        total += n
        cats[categorise(stack)] += n
        # The innermost Tessera frame: the Tessera function closest to where the time went
        # (library calls beneath it count for it).
        inner = next((f.split(" (")[0] for f in reversed(stack) if "(tessera/" in f), None)
        if inner is not None:
            funcs[inner] += n
    share = lambda n: round(100 * n / max(total, 1), 1)  # noqa: E731
    return {"samples": total, "categories": {k: share(v) for k, v in cats.most_common()},
            "tessera_functions_innermost": {k: share(v) for k, v in funcs.most_common(12)}}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=3000)
    ap.add_argument("--seconds", type=float, default=15.0, help="how long py-spy samples each worker")
    ap.add_argument("--out", default=str(RESULTS / "profile.json"))
    args = ap.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        sys.exit("py-spy not found: pip install py-spy (the bench extra)")
    tmp = Path(tempfile.mkdtemp(prefix="tessera-profile-"))
    load = subprocess.Popen([sys.executable, "-m", "load", "--rates", str(args.rate), "--seconds",
                             str(args.seconds + 15), "--warmup-seconds", "5", "--out", str(tmp / "pipeline.json")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # Wait until the recorded rate starts (the benchmark says so on stderr).
        for line in load.stderr:
            if line.startswith(f"offering {args.rate}"):
                break
        time.sleep(3.0)
        pids = {}
        for name, needle in WORKERS.items():
            out = subprocess.run(["pgrep", "-f", f"tessera.app.cli.main{needle}"], capture_output=True, text=True)
            pids[name] = int(out.stdout.split()[0])
        spies = {name: subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(int(args.seconds)), "-r", "100",
                                         "-f", "raw", "--nonblocking", "-o", str(tmp / f"{i}.raw")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for i, (name, pid) in enumerate(pids.items())}
        for p in spies.values():
            p.wait(timeout=args.seconds + 60)
        load.stderr.read()
        load.wait(timeout=300)
    finally:
        if load.poll() is None:
            load.terminate()
    pipeline = json.loads((tmp / "pipeline.json").read_text())
    rate = pipeline["results"][0]
    workers = {name: summarise(tmp / f"{i}.raw") for i, name in enumerate(WORKERS)}
    for name, w in workers.items():
        w["cpu_percent"] = rate["processes"][name]["cpu_percent"]
    report = {"benchmark": "where each worker's CPU goes (py-spy samples, whole pipeline under load)",
              "offered_per_s": args.rate, "achieved_per_s": rate["achieved_per_s"], "p99_ms": rate["p99_ms"],
              "sampled_seconds": args.seconds, "workers": workers, "machine": machine(),
              "broker": "Apache Kafka 4.1.1 single node on the same machine",
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
