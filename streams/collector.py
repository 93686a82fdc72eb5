"""Garbage-collector policy for Tessera's long-running services.

CPython frees almost everything by reference counting; the cyclic collector exists for
reference cycles, and by default runs a young collection every 700 net new container
objects and a full one (every tracked object) every 100 young ones. A scheduler holds
its live allocations (hundreds of thousands of small objects) and creates a dozen
validated event objects per request, so under load the default collector runs thousands
of young and dozens of full collections a minute, in pauses that land on request latency
(measured with ``gc.callbacks`` under ``load.bench_scheduler``; the figures are in the
commit that introduced this policy).

The policy: a young collection every 50,000 net new objects, an older one every 20 of
those, a full one every 100 older ones; and after recovery (state rebuilt from Kafka,
long-lived by nature) ``gc.freeze()`` moves what exists into a generation no collection
scans. Cycles still get collected, just in fewer, larger batches; the services' event
objects (pydantic models, dicts, lists) form none in steady state, so memory stays flat.
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 100)

_tuned = False


def tune_for_service() -> None:
    """Collect rarely: call once at the start of a process that is a service."""
    global _tuned
    gc.set_threshold(*THRESHOLDS)
    _tuned = True


def settle_after_recovery() -> None:
    """Collect what recovery left behind, then exempt the rebuilt state from later scans.
    Only in a process tuned as a service: a worker embedded in another program (the tests,
    the demo) leaves that program's collector alone."""
    if _tuned:
        gc.collect()
        gc.freeze()
