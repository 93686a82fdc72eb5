"""Benchmark: choosing a key's partition, Tessera's compiled murmur2 against aiokafka's.

Every keyed event a Tessera producer sends is hashed to pick its partition. Both
partitioners run side by side in this process on the same keys (request and allocation
ids as the scheduler sends them), pinned to one core, best of five rounds each; the
partitions they choose are checked equal first.
Run:  python -m load.bench_partitioner   -> load/results/partitioner.json
"""

from __future__ import annotations

import time

from aiokafka.partitioner import DefaultPartitioner
from load.machine import machine, pin_to_one_core, save_result

from tessera.streams.partitioner import Murmur2Partitioner

N = 100_000
PARTITIONS = list(range(6))


def best_us_per_call(partitioner, keys: list[bytes], rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.process_time()
        for k in keys:
            partitioner(k, PARTITIONS, PARTITIONS)
        best = min(best, time.process_time() - t0)
    return best / len(keys) * 1e6


def main() -> int:
    core = pin_to_one_core()
    keys = [f"alloc:req-{i:08d}-{i * 7919 % 1000003}".encode() for i in range(N)]
    ours, theirs = Murmur2Partitioner(), DefaultPartitioner()
    assert all(ours(k, PARTITIONS, PARTITIONS) == theirs(k, PARTITIONS, PARTITIONS) for k in keys)
    tessera_us = best_us_per_call(ours, keys)
    aiokafka_us = best_us_per_call(theirs, keys)
    out = {"benchmark": "partition of a keyed record (murmur2, 6 partitions), best of 5 rounds of 100,000 keys",
           "machine": machine(), "pinned_to_core": core,
           "tessera_compiled_us_per_key": tessera_us, "aiokafka_python_us_per_key": aiokafka_us,
           "speedup": aiokafka_us / tessera_us, "same_partitions": True}
    save_result("partitioner", out, ("tessera_compiled_us_per_key", "aiokafka_python_us_per_key", "speedup"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
