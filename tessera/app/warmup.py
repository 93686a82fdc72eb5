"""Compile the Numba kernels before a service starts consuming.

Numba compiles a kernel on its first call and caches the machine code on disk
(``cache=True``) for later runs. On a fresh checkout that first call is slow: about 30 s
for the packing kernel and its searches and 10 s for the forecast kernels on this 2-core
machine. Made from inside a running worker, it blocks the event loop: consumer groups
miss their heartbeats and rebalance, and requests queue for the whole time (the first
``tessera demo`` on a fresh clone queued 700 of them and spilled them to partners). So
services call ``compile_kernels`` before they join their consumer groups: with a warm
cache it costs well under a second.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Callable


def compile_kernels(say: Callable[[str], None] | None = None, *, packing: bool = True,
                    forecasts: bool = True) -> float:
    """Run the compiled kernels once on a tiny input (the same argument types as in
    service): the packer's, the forecasters' or both; returns the seconds it took."""
    from tessera.streams.partitioner import murmur2

    t0 = time.monotonic()
    if say:
        say("compiling the Numba kernels (up to 40 s on a fresh checkout, then cached) ...")
    murmur2(b"warm-up")
    if packing:
        _pack_a_batch()
    if forecasts:
        _forecast_a_series()
    return time.monotonic() - t0


def _pack_a_batch() -> None:
    from tessera.scheduler.packing import QUICK, PackRequest, PackResource, pack_batch

    # Tags, regions, two tiers and a GPU dimension: the paths a live batch takes.
    resources = [PackResource(id=f"r{i}", provider=("own", "gcp")[i % 2], region="dc", free=(8.0, 32.0, 1.0),
                              capacity=(8.0, 32.0, 1.0), price_per_hour=Decimal("0.5"), tags=frozenset({"ssd"}))
                 for i in range(4)]
    requests = [PackRequest(id=f"q{i}", tier=("gold", "bronze")[i % 2], replicas=1 + i % 2,
                            demand=(1.0, 2.0, float(i % 2)), tags_required=frozenset({"ssd"} if i else ()),
                            regions=frozenset({"dc"}), seq=i) for i in range(4)]
    pack_batch(requests, resources, effort=QUICK)


def _forecast_a_series() -> None:
    from tessera.forecast.engine import SeriesForecaster

    forecaster = SeriesForecaster()
    for i in range(4):
        forecaster.learn(300.0 * i, 1.0 + i)
        forecaster.forecast()
