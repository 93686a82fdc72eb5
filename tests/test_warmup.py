"""Workers compile their Numba kernels off the event loop, before any client starts.

A cold compile takes about 30 s. Run on the loop, it stalled a scheduler and two billing
agents sharing it for 27 s, long enough for their Kafka clients to time out (the
CI failure this guards against). These tests check where the compile runs, not how long
it takes."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tessera.agents import warmup
from tessera.agents.billing import BillingWorker
from tessera.agents.migration import MigrationWorker
from tessera.agents.scheduler import SchedulerWorker
from tessera.migration.machine import BookkeepingExecutor


@pytest.fixture
def compiles(monkeypatch) -> list[tuple[int, bool, bool]]:
    """Each call of ``compile_kernels``: (its thread, packing, forecasts); it still compiles."""
    calls: list[tuple[int, bool, bool]] = []
    real = warmup.compile_kernels

    def spy(say=None, *, packing=True, forecasts=True):
        calls.append((threading.get_ident(), packing, forecasts))
        return real(say, packing=packing, forecasts=forecasts)

    monkeypatch.setattr(warmup, "compile_kernels", spy)
    return calls


def test_compiled_off_loop_compiles_on_another_thread_and_the_loop_keeps_running(compiles):
    async def main() -> tuple[int, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0)
        await warmup.compiled_off_loop(forecasts=True)
        ticker.cancel()
        return threading.get_ident(), ticks

    loop_thread, ticks = asyncio.run(main())
    assert [(packing, forecasts) for _, packing, forecasts in compiles] == [(True, True)]
    assert compiles[0][0] != loop_thread, "the compile ran on the event loop's thread"
    assert ticks >= 1


@pytest.mark.parametrize("make, packing", [
    (lambda st: SchedulerWorker(st), True),
    (lambda st: MigrationWorker(st, BookkeepingExecutor()), True),
    (lambda st: BillingWorker(st, {}), False),
], ids=["scheduler", "migration", "billing"])
def test_each_worker_compiles_what_it_runs_off_the_loop_before_starting(base_settings, compiles, make, packing):
    stop = asyncio.Event()
    stop.set()        # run() returns before any attempt: no client is started, no broker needed

    async def main() -> int:
        await make(base_settings).run(stop)
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert [(p, f) for _, p, f in compiles] == [(packing, False)]
    assert compiles[0][0] != loop_thread
