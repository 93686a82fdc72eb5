"""The migration state machine driving the process executor on real processes: a
key-value service moved under continuous client writes (no write lost), resumed after a
crash (no step run twice), rolled back on failure; and the scheduler's capacity view
following the migration events."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from decimal import Decimal

import orjson
import pytest

import tessera.schemas as s
from tessera.migration.kvstore import read_log, request
from tessera.migration.machine import STEPS, Migration, MigrationLog, drive
from tessera.migration.process import ProcessExecutor, free_port, stop_process
from tessera.scheduler.core import Scheduler


class Workload:
    """A proxy process and a key-value service behind it, plus a client writing through
    the proxy as fast as it can."""

    def __init__(self, tmp) -> None:
        self.tmp = tmp
        self.acked: dict[str, int] = {}
        self.failed = 0
        self.stop = asyncio.Event()

    async def start(self, allocation="a1", resource="own-1") -> ProcessExecutor:
        port, control = free_port(), free_port()
        self.executor = ProcessExecutor(self.tmp, f"127.0.0.1:{control}")
        backend = await self.executor.register(allocation, resource)
        ready = self.tmp / "proxy.ready"
        self.proxy = subprocess.Popen([sys.executable, "-m", "tessera.migration.kvstore", "proxy", "--port", str(port),
                                       "--control", str(control), "--backend", backend, "--ready-file", str(ready)])
        while not ready.exists():
            await asyncio.sleep(0.05)
        self.addr = f"127.0.0.1:{port}"
        return self.executor

    async def write(self) -> None:
        host, port = self.addr.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        i = 0
        while not self.stop.is_set():
            writer.write(orjson.dumps({"op": "set", "k": f"k{i}", "v": i}) + b"\n")
            await writer.drain()
            resp = orjson.loads(await reader.readline())
            if resp.get("ok"):
                self.acked[f"k{i}"] = i
            else:
                self.failed += 1
            i += 1
            await asyncio.sleep(0)
        writer.close()

    def close(self) -> None:
        if hasattr(self, "proxy"):
            self.proxy.terminate()
            self.proxy.wait(10)
        for f in self.tmp.glob("*.json"):
            doc = orjson.loads(f.read_bytes())
            if "pid" in doc:
                stop_process(doc["pid"])


def migration(mid="m1", source="own-1", target="own-2") -> Migration:
    return Migration(mid, "a1", source, target, "own", 0, "consolidation")


@pytest.fixture
def workload(tmp_path):
    w = Workload(tmp_path)
    yield w
    w.close()


def test_moves_a_live_service_without_losing_a_write(workload):
    async def run():
        executor = await workload.start()
        writer = asyncio.create_task(workload.write())
        await asyncio.sleep(0.5)
        events: list = []

        async def publish(e):
            events.append(e)

        m = await drive(migration(), executor, publish)
        await asyncio.sleep(0.3)
        workload.stop.set()
        await writer
        return m, events, executor

    m, events, executor = asyncio.run(run())
    assert m.status == "done"
    assert [getattr(e, "step", e.event_type) for e in events] == [*STEPS, "migration.done"]
    assert len(workload.acked) > 100 and workload.failed == 0

    async def check():
        reg = executor.registry("a1")
        assert reg["resource"] == "own-2"
        log = await read_log(reg["addr"])
        held = {k: v for _, k, v in log}
        return held, reg

    held, reg = asyncio.run(check())
    assert all(held.get(k) == v for k, v in workload.acked.items())      # no acked write lost
    assert len(executor.pauses) == 1 and executor.pauses[0] < 5


def test_a_resumed_migration_runs_no_step_twice(workload):
    async def run():
        executor = await workload.start()
        events: list = []

        async def publish(e):
            events.append(e)
            if getattr(e, "step", "") == "sync":
                raise KeyboardInterrupt   # the process dies after sync's event is committed

        try:
            await drive(migration(), executor, publish)
        except KeyboardInterrupt:
            pass
        resumed = MigrationLog().replay(events).migrations["m1"]
        assert resumed.next_step == "cut_over"

        async def publish_rest(e):
            events.append(e)

        # The crash could also come between a step and its event: reserve_target again is a no-op.
        await executor.reserve_target(resumed)
        await drive(resumed, executor, publish_rest)
        return events, executor

    events, executor = asyncio.run(run())
    steps = [getattr(e, "step", e.event_type) for e in events]
    assert steps == [*STEPS, "migration.done"]
    assert orjson.loads((executor.workdir / "m1.json").read_bytes())["starts"] == 1


def test_a_failed_sync_rolls_back_and_keeps_the_source(workload):
    async def run():
        executor = await workload.start()
        await request(workload.addr, {"op": "set", "k": "x", "v": 1})
        events: list = []

        async def publish(e):
            events.append(e)
            if getattr(e, "step", "") == "reserve_target":
                stop_process(executor.target(migration())["pid"])    # the target dies before sync

        m = await drive(migration(), executor, publish)
        value = await request(workload.addr, {"op": "get", "k": "x"})
        wrote = await request(workload.addr, {"op": "set", "k": "y", "v": 2})
        return m, events, value, wrote, executor

    m, events, value, wrote, executor = asyncio.run(run())
    assert m.status == "rolled_back"
    assert isinstance(events[-1], s.MigrationFailed) and events[-1].rolled_back
    assert value["v"] == 1 and wrote["ok"]                                  # the source still serves
    assert executor.registry("a1")["resource"] == "own-1"


def _fleet() -> Scheduler:
    core = Scheduler()
    for rid in ("own-1", "own-2"):
        core.apply(s.ResourceDiscovered(resource_id=rid, spec=s.ResourceSpec(
            provider="own", region="dc1", instance_type="node", pricing_model=s.PricingModel.own,
            capacity=s.Capacity(vcpu=8, memory_bytes=32 * s.GIB), price_per_hour=Decimal("0.1"))))
    return core


def test_scheduler_capacity_follows_a_migration():
    core = _fleet()
    req = s.WorkloadRequest(request_id="q1", tenant="t", sla_tier="silver", replicas=1,
                            per_replica=s.Capacity(vcpu=4, memory_bytes=4 * s.GIB))
    now = time.time()
    core.submit(req, now, s.utc_now())
    placed = [e for e in core.run_batch(now, s.utc_now()) if isinstance(e, s.AllocationPlaced)]
    a = placed[0]
    src = a.placements[0].resource_id
    dst = "own-2" if src == "own-1" else "own-1"
    used = lambda rid: core.resources[rid].used[0]  # noqa: E731
    assert used(src) == 4 and used(dst) == 0
    base = dict(migration_id="m1", allocation_id=a.allocation_id, source_resource_id=src,
                target_resource_id=dst, target_provider="own", replicas=1)
    core.apply(s.MigrationProgress(step="reserve_target", **base))
    core.apply(s.MigrationProgress(step="reserve_target", **base))          # redelivered: once
    assert used(src) == 4 and used(dst) == 4                                # both held during sync
    core.apply(s.MigrationProgress(step="release_source", **base))
    core.apply(s.MigrationDone(cut_over_at=s.utc_now(), **base))            # after release: nothing more
    assert used(src) == 0 and used(dst) == 4
    assert core.allocations[a.allocation_id].placements == [(dst, 1)]
    core.release(a.allocation_id)
    assert used(src) == 0 and used(dst) == 0                                # the moved placement is released
    # a failed migration lets its target go
    core.submit(req.model_copy(update={"request_id": "q2"}), now, s.utc_now())
    b = [e for e in core.run_batch(now, s.utc_now()) if isinstance(e, s.AllocationPlaced)][0]
    src = b.placements[0].resource_id
    dst = "own-2" if src == "own-1" else "own-1"
    base.update(migration_id="m2", allocation_id=b.allocation_id, source_resource_id=src, target_resource_id=dst)
    core.apply(s.MigrationProgress(step="reserve_target", **base))
    core.apply(s.MigrationFailed(reason="sync failed", **base))
    assert used(src) == 4 and used(dst) == 0


def test_the_agent_replans_when_a_price_falls(base_settings):
    from tessera.agents.migration import MigrationWorker
    from tessera.migration.machine import BookkeepingExecutor

    w = MigrationWorker(base_settings, BookkeepingExecutor())
    spec = s.ResourceSpec(provider="gcp", region="eu", instance_type="n2", capacity=s.Capacity(vcpu=8, memory_bytes=s.GIB),
                          price_per_hour=Decimal("0.40"))
    w._apply(s.ResourceDiscovered(resource_id="gcp/a", spec=spec))
    assert w.reprice_at is None
    w._apply(s.ResourceUpdated(resource_id="gcp/a", spec=spec.model_copy(update={"price_per_hour": Decimal("0.50")})))
    assert w.reprice_at is None                              # dearer: nothing to rebalance onto
    w._apply(s.ResourceUpdated(resource_id="gcp/a", spec=spec.model_copy(update={"price_per_hour": Decimal("0.10")})))
    assert w.reprice_at is not None                          # cheaper: re-plan shortly
    w.reprice_at = None
    # An agreement that leaves a commitment unmet makes the partner free at the margin.
    w._apply(s.AgreementUpdated(partner_id="gcp", agreement={
        "partner": "gcp", "currency": "USD", "rates": {"vcpu_hour": "0.04"}, "monthly_commit": "100.00"}))
    assert w.reprice_at is not None and w.snapshot(s.utc_now()).resources[0].price_per_hour == 0


def test_the_agent_plans_with_the_demand_forecast(base_settings):
    from datetime import timedelta

    from tessera.agents.migration import MigrationWorker
    from tessera.migration.machine import BookkeepingExecutor

    w = MigrationWorker(base_settings, BookkeepingExecutor())
    t0 = s.utc_now()
    w._apply(s.Forecast(series="pool=default/tier=gold/dim=vcpu", interval_seconds=300, model="hw", horizons=[
        s.HorizonForecast(step=k + 1, interval_start=t0 + timedelta(minutes=5 * k),
                          quantiles={"0.5": 2.0, "0.9": 3.0, "0.95": 4.0, "0.99": 5.0}) for k in range(3)]))
    fc = w.snapshot(t0).forecast
    # One entry: the headroom the scheduler holds for gold (its forecast quantile at gold's
    # protected level, between the 0.9 and 0.95 quantiles here), which a plan leaves free.
    assert len(fc) == 1 and fc[0][0] == t0 and 3.0 < fc[0][1] < 4.0
    assert fc[0][1] == w.core.reservations.headroom("gold", 0.0)
    assert fc[0][2] is None                                          # GPUs are not forecast: kept
