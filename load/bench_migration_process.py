"""Benchmark: moving a live stateful process (the example key-value service) under
continuous client writes, with pre-copy (Tessera's process executor) against stop-and-copy
(the baseline: the same executor without the pre-copy, so the whole log is copied while
clients wait).

Each run moves the service back and forth between two "resources" N times while one
client writes through the proxy as fast as it can. Reported per executor: writes acked,
writes lost (acked but missing on the final process: must be 0), failed client requests
(aim 0), the cut-over pause p50/p99 (executor side) and the slowest client request.

Run:  python -m load.bench_migration_process [--moves 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from load.machine import machine, pin_to_one_core, save_result

from tessera.migration.kvstore import read_log
from tessera.migration.machine import Migration, drive
from tessera.migration.process import ProcessExecutor, free_port, stop_process


class StopAndCopy(ProcessExecutor):
    """The baseline: no pre-copy; the whole log moves during the pause."""

    async def sync(self, m: Migration) -> None:
        return None


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


async def one_run(executor_cls: type[ProcessExecutor], moves: int, warm_s: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        port, control = free_port(), free_port()
        ex = executor_cls(work, f"127.0.0.1:{control}")
        backend = await ex.register("kv", "node-0")
        ready = work / "proxy.ready"
        proxy = subprocess.Popen([sys.executable, "-m", "tessera.migration.kvstore", "proxy", "--port", str(port),
                                  "--control", str(control), "--backend", backend, "--ready-file", str(ready)])
        try:
            while not ready.exists():
                await asyncio.sleep(0.05)
            acked: dict[str, int] = {}
            latencies: list[float] = []
            failed = 0
            stop = asyncio.Event()

            async def client() -> None:
                nonlocal failed
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                i = 0
                while not stop.is_set():
                    t0 = time.perf_counter()
                    writer.write(orjson.dumps({"op": "set", "k": f"k{i}", "v": i}) + b"\n")
                    await writer.drain()
                    resp = orjson.loads(await reader.readline())
                    latencies.append(time.perf_counter() - t0)
                    if resp.get("ok"):
                        acked[f"k{i}"] = i
                    else:
                        failed += 1
                    i += 1
                writer.close()

            task = asyncio.create_task(client())
            await asyncio.sleep(warm_s)   # a log to move
            where = "node-0"
            for n in range(moves):
                to = f"node-{(n + 1) % 2}"
                m = Migration(f"m{n}", "kv", where, to, "own", 0, "consolidation")

                async def publish(_e) -> None:
                    return None

                done = await drive(m, ex, publish)
                assert done.status == "done", done.failure
                where = to
                await asyncio.sleep(0.2)
            stop.set()
            await task
            final = {k: v for _, k, v in await read_log(ex.registry("kv")["addr"])}
            lost = sum(1 for k, v in acked.items() if final.get(k) != v)
            return {"moves": moves, "writes_acked": len(acked), "writes_lost": lost, "failed_requests": failed,
                    "log_entries_moved_last": len(final),
                    "pause_ms_p50": round(_pct(ex.pauses, 0.5) * 1000, 2),
                    "pause_ms_p99": round(_pct(ex.pauses, 0.99) * 1000, 2),
                    "client_ms_p99": round(_pct(latencies, 0.99) * 1000, 3),
                    "client_ms_max": round(max(latencies) * 1000, 2),
                    "client_ms_median": round(statistics.median(latencies) * 1000, 3)}
        finally:
            proxy.terminate()
            proxy.wait(10)
            for f in work.glob("*.json"):
                doc = orjson.loads(f.read_bytes())
                if "pid" in doc:
                    stop_process(doc["pid"])
                for prev in [doc.get("previous")] if doc.get("previous") else []:
                    stop_process(prev["pid"])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moves", type=int, default=20)
    ap.add_argument("--warm", type=float, default=5.0, help="seconds of writes before the first move")
    args = ap.parse_args(argv)
    core = pin_to_one_core()
    report = {"benchmark": "process executor: pre-copy vs stop-and-copy under continuous writes"}
    for name, cls in (("pre_copy", ProcessExecutor), ("stop_and_copy", StopAndCopy)):
        print(f"  {name}: {args.moves} moves", file=sys.stderr)
        report[name] = asyncio.run(one_run(cls, args.moves, args.warm))
    p, b = report["pre_copy"], report["stop_and_copy"]
    report["pause_p99_ratio_baseline_over_tessera"] = round(b["pause_ms_p99"] / p["pause_ms_p99"], 2) \
        if p["pause_ms_p99"] else None
    report.update(machine=machine(), pinned_to_core=core, when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    save_result("migration_process", report, ("pre_copy", "stop_and_copy", "pause_p99_ratio_baseline_over_tessera"))
    return report


if __name__ == "__main__":
    main()
