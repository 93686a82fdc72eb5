"""Compile the Numba kernels before a service starts consuming.

Numba compiles a kernel on its first call and caches the machine code on disk
(``cache=True``) for later runs. On a fresh checkout that first call takes tens of
seconds; made from inside a running worker, it blocks the event loop: consumer groups
miss their heartbeats and rebalance, and requests queue for the whole time (the first
``tessera demo`` on a fresh clone once queued hundreds of them and spilled them to
partners; a test running two schedulers and two billing agents on one loop saw a 27 s
stall on a fresh cache, and in CI, on a slower host, its clients timed out and the
broker looked unreachable). So every worker compiles what it runs before its clients start,
on a thread (``compiled_off_loop``), and the CLI and the pipeline do it once up front
to say so; with a warm cache it costs well under a second. Each core compiles its own
kernels (``compile_packing_kernels``, ``compile_forecast_kernels``); this runs them
together.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from tessera.forecast.engine import compile_forecast_kernels
from tessera.scheduler.packing import compile_packing_kernels
from tessera.streams.partitioner import murmur2


def compile_kernels(say: Callable[[str], None] | None = None, *, packing: bool = True,
                    forecasts: bool = True) -> float:
    """Run the compiled kernels once on a tiny input (the same argument types as in
    service): the key partitioner's always, the packer's, the forecasters' or both;
    returns the seconds it took."""
    t0 = time.monotonic()
    if say:
        say("compiling the Numba kernels (up to 40 s on a fresh checkout, then cached) ...")
    murmur2(b"warm-up")
    if packing:
        compile_packing_kernels()
    if forecasts:
        compile_forecast_kernels()
    return time.monotonic() - t0


async def compiled_off_loop(say: Callable[[str], None] | None = None, *, packing: bool = True,
                            forecasts: bool = False) -> float:
    """``compile_kernels`` on a worker thread, for a service about to start its clients:
    the event loop keeps serving whatever else shares it (LLVM's passes run outside the
    GIL, and Python hands the GIL back every few milliseconds), so nothing sharing the
    loop misses a heartbeat, and a stop signal is heard, while a cold cache compiles."""
    return await asyncio.to_thread(compile_kernels, say, packing=packing, forecasts=forecasts)
