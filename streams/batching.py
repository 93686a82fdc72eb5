"""Read a consumer in batches bounded by size and by time, not by what one fetch brought."""

from __future__ import annotations

import asyncio
import heapq
from typing import Any

from aiokafka import AIOKafkaConsumer


async def take_batch(consumer: AIOKafkaConsumer, max_records: int, within_s: float, idle_s: float) -> list[Any]:
    """Up to ``max_records`` records, or what arrives within ``within_s`` of the first one;
    an empty list if nothing arrives within ``idle_s`` (so a caller can check for stop).

    ``getmany`` returns whatever the last fetch brought: at low rates a handful of records,
    many times a second. A worker whose per-batch work does not shrink with the batch (a
    ClickHouse insert, re-rating the running allocations) then spends its CPU on batches,
    not on records.
    """
    loop = asyncio.get_running_loop()
    records: list[Any] = []
    deadline = None
    while len(records) < max_records:
        now = loop.time()
        if deadline is not None and now >= deadline:
            break
        wait = idle_s if deadline is None else deadline - now
        got = await consumer.getmany(timeout_ms=max(int(wait * 1000), 0), max_records=max_records - len(records))
        for recs in got.values():
            records += recs
        if not records:
            break                         # idle: nothing within idle_s
        if deadline is None:
            deadline = loop.time() + within_s
    return records


def in_time_order(records: list[Any]) -> list[Any]:
    """Records of several partitions interleaved by timestamp, each partition's kept in offset
    order. Timestamps within one partition need not rise (two producers writing it, each with
    its own clock), so a plain sort by timestamp could apply a partition's records out of
    order; a consumer that tracks the next offset it has taken in would then skip the ones
    put last. ``heapq.merge`` only ever compares the heads of the partitions' runs."""
    runs: dict[tuple[str, int], list[Any]] = {}
    for r in records:
        runs.setdefault((r.topic, r.partition), []).append(r)
    if len(runs) < 2:
        return records
    return list(heapq.merge(*runs.values(), key=lambda r: r.timestamp))
