"""The forecast agents on the real broker: requests -> demand intervals -> forecasts,
late and malformed input dead-lettered, state recovered after a restart without
re-learning or losing an interval."""

from __future__ import annotations

from datetime import timedelta

import pytest
from tests.conftest import run
from tests.samples import CAP, T0

import tessera.schemas as s
from tessera.agents.worker import running_worker
from tessera.streams.produce import send_events, send_raw, started_producer

pytestmark = pytest.mark.kafka

INTERVAL = 60


def _req(i: int, minute: float, tier=s.SlaTier.gold, replicas=2) -> s.WorkloadRequest:
    at = T0 + timedelta(seconds=minute * 60)
    return s.WorkloadRequest(event_id=f"fa-{i}", event_time=at, request_id=f"fa-req-{i}", tenant="acme",
                             sla_tier=tier, replicas=replicas, per_replica=CAP)


def _forecast_settings(settings):
    return settings.replace(forecast_interval_s=INTERVAL, forecast_season=5, forecast_horizon=3,
                            forecast_grace_s=30.0)


def test_requests_become_demand_intervals_and_forecasts_and_survive_a_restart(settings, consume_events):
    st = _forecast_settings(settings)

    async def scenario():
        async with started_producer(st) as producer:
            async with running_worker(st, ["forecast"]):
                # minute 0: 3 gold requests (2 replicas x 2 vCPU each); minute 1: 1; minute 3: 2;
                # minute 4.9 moves the watermark past minute 3's end + grace.
                reqs = [_req(0, 0.1), _req(1, 0.5), _req(2, 0.9), _req(3, 1.2), _req(4, 3.0), _req(5, 3.5),
                        _req(6, 4.9)]
                await send_events(producer, st, "requests", reqs)
                await send_raw(producer, st, "requests", [b'{"event_type": "workload.request", "replicas": -1}'])
                first = await consume_events(st, "forecasts", 4 * 3 * 2, timeout=60)
                # Late: minute 0.2 after minute 0 closed.
                await send_events(producer, st, "requests", [_req(7, 0.2)])
                dead = await consume_events(st, "dead-letters", 2, timeout=30)
            # Restart: a new worker recovers both tables; new demand continues the series.
            async with running_worker(st, ["forecast"]):
                await send_events(producer, st, "requests", [_req(8, 5.5), _req(9, 6.9)])
                every = await consume_events(st, "forecasts", (4 + 2) * 3 * 2 + 1, timeout=25)
        return first, dead, every

    first, dead, every = run(scenario(), timeout=240)
    intervals = [e for e in every if isinstance(e, s.DemandInterval)]
    vcpu = {(e.interval_start - T0).total_seconds() / 60: e.value for e in intervals
            if e.series == "tier=gold/dim=vcpu"}
    # Exactly one interval event per closed minute, each with the exact sum, zeros included.
    assert vcpu == {0.0: 12.0, 1.0: 4.0, 2.0: 0.0, 3.0: 8.0, 4.0: 4.0, 5.0: 4.0}
    assert len([e for e in intervals if e.series == "tier=gold/dim=vcpu"]) == 6
    mem = {e.value for e in intervals if e.series == "tier=gold/dim=memory_gib" and e.interval_start == T0}
    assert mem == {48.0}
    forecasts = [e for e in every if isinstance(e, s.Forecast)]
    assert {f.series for f in forecasts} >= {"tier=gold/dim=vcpu", "tier=gold/dim=gpu"}
    for f in forecasts:
        assert [h.step for h in f.horizons] == [1, 2, 3]
        for h in f.horizons:
            q = h.quantiles
            assert q["0.05"] <= q["0.5"] <= q["0.95"]
    reasons = sorted(d.reason.split(":")[0] for d in dead if isinstance(d, s.DeadLetter))
    assert len(reasons) == 2 and "late" in reasons
