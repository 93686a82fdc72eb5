"""Open-loop load generation against Tessera through Kafka, with latency from intended time.

Each request has an *intended* send time on a fixed schedule (rate r: one every 1/r s);
a sender that falls behind does not slow the schedule, and latency is measured from the
intended time to the moment its placed/rejected event is read (``read_committed``), so
time spent queued behind a slow producer counts (no coordinated omission). Health and
usage events can ride along at a fixed ratio to requests. Requests are synthetic (four
sizes over the four tiers) or replayed from the Alibaba v2023 trace (sizes and tiers from
the pods, arrivals re-paced to the rate).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

import orjson

from tessera.schemas import GIB, TIERS, Capacity, HealthSample, UsageSample, WorkloadRequest, encode
from tessera.schemas.topics import topic_spec
from tessera.streams.produce import producer_for, send_batched
from tessera.streams.reader import groupless_consumer

TICK_S = 0.002


def percentile(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def synthetic_requests(run: str, duration_s: float = 2.0) -> Callable[[int], WorkloadRequest]:
    def make(i: int) -> WorkloadRequest:
        return WorkloadRequest(request_id=f"{run}-{i}", tenant="load", sla_tier=TIERS[i % 4],
                               expected_duration_seconds=duration_s,
                               per_replica=Capacity(vcpu=0.5 + (i % 4) * 0.5, memory_bytes=(1 + i % 4) * GIB))
    return make


def trace_requests(run: str, duration_s: float = 2.0) -> Callable[[int], WorkloadRequest]:
    """Alibaba v2023 pods in arrival order (cycled), each living ``duration_s``."""
    from tessera.app import datasets

    pods = sorted(datasets.alibaba_pod_requests(datetime.now(timezone.utc)), key=lambda r: r.event_time)

    def make(i: int) -> WorkloadRequest:
        p = pods[i % len(pods)]
        return p.model_copy(update={"request_id": f"{run}-{i}", "event_id": f"{run}-{i}",
                                    "event_time": datetime.now(timezone.utc), "expected_duration_seconds": duration_s})
    return make


@dataclass
class ProcessSample:
    cpu_s: float
    rss_bytes: int


def sample_process(pid: int) -> ProcessSample | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/statm") as f:
            rss_pages = int(f.read().split()[1])
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return ProcessSample((int(fields[11]) + int(fields[12])) / ticks, rss_pages * os.sysconf("SC_PAGE_SIZE"))


def broker_pid(settings) -> dict[str, int]:  # noqa: ANN001
    """The local broker's process when Tessera started it (its CPU is part of the picture)."""
    from tessera.infra.kafka_broker import broker_from_settings

    st = broker_from_settings(settings).status()
    return {"kafka broker": st.pid} if st.state == "running" and st.pid else {}


async def run_rate(settings, rate: int, seconds: float, make_request: Callable[[int], WorkloadRequest], *,
                   health_ratio: float = 0.0, usage_ratio: float = 0.0, resource_ids: list[str] | None = None,
                   processes: dict[str, int] | None = None, tail_s: float = 30.0) -> dict:
    """Offer ``rate`` requests/s for ``seconds``; return throughput, latency and per-process CPU / RSS."""
    requests_topic = topic_spec("requests").full_name(settings.topic_prefix)
    health_topic = topic_spec("health").full_name(settings.topic_prefix)
    usage_topic = topic_spec("usage").full_name(settings.topic_prefix)
    allocs = topic_spec("allocations").full_name(settings.topic_prefix)
    consumer = groupless_consumer(settings, allocs, auto_offset_reset="latest")
    await consumer.start()
    await consumer.seek_to_end()
    # The generator builds its own batches (below); no linger, or a tick's batch would
    # wait for the previous one to linger out.
    producer = producer_for(settings, linger_ms=0)
    await producer.start()
    intended: dict[str, float] = {}
    latencies: list[float] = []
    n = int(rate * seconds)
    done = asyncio.Event()
    rids = resource_ids or []

    async def read() -> None:
        while len(latencies) < n:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.perf_counter()
            for recs in batch.values():
                for rec in recs:
                    # Only the type and request id matter here; a full decode would spend the
                    # CPU the system under test shares with this generator.
                    e = orjson.loads(rec.value)
                    rid = e.get("request_id")
                    if e.get("event_type") in ("allocation.placed", "allocation.rejected") and rid in intended:
                        latencies.append(now - intended.pop(rid))
            if done.is_set() and time.perf_counter() > deadline:
                break

    # Requests are built and encoded before the clock starts, so the schedule is not held up
    # by the generator's own work (and its CPU is not taken from the system under test);
    # their event_time is when they were built, at most ``seconds`` before they are sent.
    payloads = [(r.request_id, encode(r), r.key()) for r in map(make_request, range(n))]
    # CPU is measured from here (the prebuilding above is not part of the load) to the end.
    processes = {**(processes or {}), "load generator (this process)": os.getpid()}
    before = {name: sample_process(pid) for name, pid in processes.items()}
    wall0 = time.perf_counter()
    start = time.perf_counter() + 0.2
    deadline = start + seconds + tail_s
    reader = asyncio.create_task(read())
    extra_h = extra_u = 0.0
    i = 0
    while i < n:
        # Everything due by now goes out together, as one record batch per partition, at
        # most every TICK_S (sending each batch the moment it was due, without linger, made
        # a produce request per millisecond, and their socket writes took a third of this
        # process's CPU at 3,000/s). Intended times stay one every 1/rate s, so the up to
        # TICK_S a request waits for its tick counts in its latency, as linger's wait did.
        now = time.perf_counter()
        if now < start + i / rate:
            await asyncio.sleep(max(start + i / rate - now, TICK_S))
            continue
        due = min(n, int((now - start) * rate) + 1)
        out = []
        for j in range(i, due):
            rid, value, key = payloads[j]
            intended[rid] = start + j / rate
            out.append((requests_topic, key, value))
            extra_h += health_ratio
            extra_u += usage_ratio
            while rids and extra_h >= 1:
                extra_h -= 1
                rid = rids[j % len(rids)]
                out.append((health_topic, rid.encode(), encode(HealthSample(resource_id=rid))))
            while rids and extra_u >= 1:
                extra_u -= 1
                rid = rids[(j * 7) % len(rids)]
                u = UsageSample(resource_id=rid, interval_seconds=10, used=Capacity(vcpu=1.0, memory_bytes=2 * GIB))
                out.append((usage_topic, rid.encode(), encode(u)))
        await send_batched(producer, out)
        i = due
        await asyncio.sleep(0)   # let the reader and the client's sender run when behind
    await producer.flush()
    sent_s = time.perf_counter() - start
    done.set()
    await reader
    await producer.stop()
    await consumer.stop()
    wall = time.perf_counter() - wall0
    procs = {}
    for name, pid in processes.items():
        a, b = before.get(name), sample_process(pid)
        if a and b:
            procs[name] = {"cpu_percent": round((b.cpu_s - a.cpu_s) / wall * 100, 1),
                           "rss_mib": round(b.rss_bytes / (1 << 20), 1)}
    answered = len(latencies)
    return {"offered_per_s": rate, "sent": n, "send_seconds": round(sent_s, 2), "answered": answered,
            "achieved_per_s": round(answered / max(sent_s, 1e-9), 1),
            "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
            "p999_ms": round(percentile(latencies, 0.999) * 1000, 1),
            "max_ms": round(max(latencies or [0]) * 1000, 1), "processes": procs}
