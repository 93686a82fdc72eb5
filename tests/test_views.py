"""The analytics views answer the questions from events, and a batch delivered twice is
counted once by every view (on both backends)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from tests.samples import SPEC, T0

import tessera.schemas as s
from tessera.storage.ddl import apply_migrations
from tessera.storage.rows import dead_letter_row, event_row
from tessera.storage.store import open_store


def _events() -> list[s.Event]:
    own = SPEC.model_copy(update={"provider": "own", "region": "eu", "capacity": s.Capacity(vcpu=8)})
    gcp = SPEC.model_copy(update={"provider": "gcp", "region": "eu", "capacity": s.Capacity(vcpu=4)})

    def placed(aid, rid, provider, replicas, price, tier="silver", queued=0.0, at=T0):
        return s.AllocationPlaced(event_time=at, request_id=f"q-{aid}", allocation_id=aid, tenant="acme",
                                  sla_tier=tier, per_replica=s.Capacity(vcpu=2), queued_seconds=queued,
                                  placements=[s.Placement(resource_id=rid, provider=provider, replicas=replicas,
                                                          price_per_hour=Decimal(price))])

    return [
        s.TuningDecision(event_time=T0, knob="headroom_quantile", context="hours=00-06", arm="0.9"),
        s.TuningDecision(event_time=T0 + timedelta(minutes=5), knob="headroom_quantile", context="hours=00-06",
                         arm="0.95", previous_arm="0.9", reward=-1.25, window_cost=Decimal("0.25"), window_misses=1,
                         window_seconds=300.0),
        s.ResourceDiscovered(event_time=T0, resource_id="own/n1", spec=own),
        s.ResourceDiscovered(event_time=T0, resource_id="gcp/r1", spec=gcp),
        placed("a1", "own/n1", "own", 2, "0.40", queued=1.0),
        s.AllocationReleased(event_time=T0 + timedelta(hours=2), request_id="q-a1", allocation_id="a1"),
        placed("a2", "gcp/r1", "gcp", 1, "0.10", tier="gold", queued=3.0),
        s.AllocationReleased(event_time=T0 + timedelta(hours=1), request_id="q-a2", allocation_id="a2"),
        placed("a3", "gcp/r1", "gcp", 1, "0.10", tier="gold", queued=5.0),
        s.Forecast(event_time=T0, series="tier=gold/dim=vcpu", interval_seconds=300, horizons=[
            s.HorizonForecast(step=1, interval_start=T0, quantiles={"0.05": 5.0, "0.5": 10.0, "0.95": 15.0}),
            s.HorizonForecast(step=2, interval_start=T0 + timedelta(minutes=5),
                              quantiles={"0.05": 5.0, "0.5": 10.0, "0.95": 15.0})]),
        s.DemandInterval(event_time=T0, series="tier=gold/dim=vcpu", interval_start=T0, interval_seconds=300,
                         value=12.0),
        s.DemandInterval(event_time=T0, series="tier=gold/dim=vcpu", interval_start=T0 + timedelta(minutes=5),
                         interval_seconds=300, value=20.0),
        s.UsageLimitAlert(event_time=T0, partner_id="gcp", period_start=T0.replace(day=1), limit_name="spend",
                          threshold_pct=80, used=Decimal("8"), limit=Decimal("10")),
        _hint(T0, 20.0), _hint(T0 + timedelta(seconds=30), 30.0),       # the same interval, revised
    ]


def _hint(at, shortfall):
    return s.ProvisioningHint(event_time=at, pool="default", needed_by=T0 + timedelta(minutes=10), peak_at=T0,
                              arriving_vcpu=shortfall + 4, free_in_service_vcpu=4.0, shortfall_vcpu=shortfall,
                              levels={"gold": 0.93},
                              suggested=[s.SuggestedResource(resource_id="gcp/r1", provider="gcp", vcpu=32,
                                                             price_per_hour=Decimal("1.25"))],
                              suggested_cost_per_hour=Decimal("1.25"))


def _answers(st) -> dict:
    db = st.database
    q = st.query
    return {
        "own_day": q(f"SELECT toString(total_cost) AS c, total_vcpu_hours AS h, placements AS n "
                     f"FROM {db}.v_cost_per_partner_day WHERE provider = 'own'"),
        "blended_own": q(f"SELECT toString(total_cost) AS c, cost_per_vcpu_hour AS r FROM {db}.v_blended_cost_per_vcpu_hour "
                         f"WHERE source = 'own'"),
        "util": q(f"SELECT provider, vcpu_capacity AS cap, vcpu_in_use AS used, utilization AS u "
                  f"FROM {db}.v_pool_utilization ORDER BY provider"),
        "waits": q(f"SELECT sla_tier, placed, max_s FROM {db}.v_queue_wait_by_tier ORDER BY sla_tier"),
        "accuracy": q(f"SELECT step, forecasts, mae, band_coverage FROM {db}.v_forecast_accuracy ORDER BY step"),
        "alerts": q(f"SELECT partner, alerts FROM {db}.v_alerts_over_time"),
        "dead": q(f"SELECT source_topic, dead_letters FROM {db}.v_dead_letters_over_time"),
        "tenant": q(f"SELECT tenant FROM {db}.v_cost_per_tenant_day"),
        "chargeback": q(f"SELECT tenant, toString(own_cost) AS o, toString(partner_cost) AS p, "
                        f"toString(total_cost) AS t, allocations FROM {db}.v_tenant_chargeback ORDER BY tenant"),
        "hints": q(f"SELECT pool, shortfall_vcpu AS s, suggested_resources AS n, "
                   f"toString(suggested_cost_per_hour) AS c, hints FROM {db}.v_provisioning_hints"),
        "tuning": q(f"SELECT knob, context, arm, previous_arm, reward, toString(window_cost) AS c, window_misses AS m "
                    f"FROM {db}.v_tuning ORDER BY decided_at"),
    }


def test_views_answer_from_events_and_count_a_redelivered_batch_once(any_backend_settings):
    st = open_store(any_backend_settings)
    apply_migrations(st)
    db = st.database
    rows = [event_row(e, topic="t", partition=0, offset=i, key=e.key()) for i, e in enumerate(_events())]
    dl = s.DeadLetter(event_time=T0, reason="not JSON", source_topic="tessera.requests.v1", source_partition=1,
                      source_offset=7, original_b64="eA==", consumer="event-log")
    st.insert(f"{db}.events", rows, dedup_token="batch-1")
    st.insert(f"{db}.dead_letters", [dead_letter_row(dl)], dedup_token="dl-1")
    first = _answers(st)
    # The same batch again, cut differently (another token): the table has two copies,
    # every view still counts one.
    st.insert(f"{db}.events", rows, dedup_token="batch-1-redelivered")
    st.insert(f"{db}.dead_letters", [dead_letter_row(dl)], dedup_token="dl-1-redelivered")
    assert _answers(st) == first

    # a1's placement was priced 0.40 USD/h (the pricing core's figure for its replicas) and
    # ran 2 h: 0.80 USD, 8 vCPU-hours.
    assert first["own_day"] == [{"c": "0.8", "h": pytest.approx(8.0), "n": first["own_day"][0]["n"]}]
    assert int(first["own_day"][0]["n"]) == 1
    assert [(r["arm"], r["previous_arm"], r["reward"], r["c"], int(r["m"])) for r in first["tuning"]] == [
        ("0.9", "", None, "0", 0), ("0.95", "0.9", -1.25, "0.25", 1)]
    assert first["blended_own"][0]["r"] == pytest.approx(0.8 / 8)
    util = {r["provider"]: r for r in first["util"]}
    assert util["gcp"]["cap"] == 4 and util["gcp"]["used"] == 2 and util["gcp"]["u"] == pytest.approx(0.5)
    assert util["own"]["used"] == 0
    waits = {r["sla_tier"]: r for r in first["waits"]}
    assert int(waits["gold"]["placed"]) == 2 and waits["gold"]["max_s"] == 5.0
    acc = first["accuracy"]
    assert [(int(r["step"]), r["mae"], r["band_coverage"]) for r in acc] == [(1, 2.0, 1.0), (2, 10.0, 0.0)]
    assert [int(r["alerts"]) for r in first["alerts"]] == [1]
    assert [int(r["dead_letters"]) for r in first["dead"]] == [1]
    # Chargeback shares out exactly what v_allocation_usage costs, own and partner apart.
    (total,) = st.query(f"SELECT toString(sum(cost)) AS c FROM {db}.v_allocation_usage")
    assert sum(Decimal(r["t"]) for r in first["chargeback"]) == Decimal(total["c"])
    assert all(Decimal(r["o"]) + Decimal(r["p"]) == Decimal(r["t"]) for r in first["chargeback"])
    assert [(r["pool"], r["s"], int(r["n"]), r["c"], int(r["hints"])) for r in first["hints"]] == [
        ("default", 30.0, 1, "1.25", 2)]


def test_allocation_usage_follows_a_migration_from_its_cut_over(any_backend_settings):
    """Two replicas placed on a partner at 0.20 USD/h (0.10 each); after 1 h one moves to an
    own node at 0.03 USD/h; everything is released 2 h after the placement. The view then
    holds 0.20 + 0.10 + 0.03 = 0.33 USD: the partner's VM for 1 h with both, then 1 h with
    one, and the own node for 1 h (a failed migration moves nothing)."""
    st = open_store(any_backend_settings)
    apply_migrations(st)
    db = st.database
    own = SPEC.model_copy(update={"provider": "own", "region": "eu", "capacity": s.Capacity(vcpu=8)})
    gcp = SPEC.model_copy(update={"provider": "gcp", "region": "eu", "capacity": s.Capacity(vcpu=8)})
    cut = T0 + timedelta(hours=1)
    move = dict(migration_id="m1", allocation_id="a", source_resource_id="gcp/r1", target_resource_id="own/n1",
                target_provider="own", replicas=1, source_provider="gcp", tenant="acme",
                per_replica=s.Capacity(vcpu=2), target_price_per_hour=Decimal("0.03"))
    failed = dict(move, migration_id="m2", target_price_per_hour=Decimal("9"))
    events = [
        s.ResourceDiscovered(event_time=T0, resource_id="own/n1", spec=own),
        s.ResourceDiscovered(event_time=T0, resource_id="gcp/r1", spec=gcp),
        s.AllocationPlaced(event_time=T0, request_id="q", allocation_id="a", tenant="acme", sla_tier="silver",
                           per_replica=s.Capacity(vcpu=2),
                           placements=[s.Placement(resource_id="gcp/r1", provider="gcp", replicas=2,
                                                   price_per_hour=Decimal("0.20"))]),
        s.MigrationPlanned(event_time=cut - timedelta(minutes=1), reason="consolidation", **move),
        s.MigrationDone(event_time=cut + timedelta(seconds=5), cut_over_at=cut, **move),
        s.MigrationPlanned(event_time=cut, reason="consolidation", **failed),
        s.MigrationFailed(event_time=cut, reason="target lost", **failed),
        s.AllocationReleased(event_time=T0 + timedelta(hours=2), request_id="q", allocation_id="a"),
    ]
    st.insert(f"{db}.events", [event_row(e, topic="t", partition=0, offset=i, key=e.key())
                               for i, e in enumerate(events)], dedup_token="m")
    rows = st.query(f"SELECT resource_id, provider, kind, replicas, toString(cost) AS c, vcpu_hours AS h "
                    f"FROM {db}.v_allocation_usage ORDER BY kind, resource_id")
    got = [(r["resource_id"], r["provider"], r["kind"], int(r["replicas"]), Decimal(r["c"]), r["h"]) for r in rows]
    assert got == [("own/n1", "own", "migrated_in", 1, Decimal("0.03"), pytest.approx(2.0)),
                   ("gcp/r1", "gcp", "migrated_out", -1, Decimal("-0.10"), pytest.approx(-2.0)),
                   ("gcp/r1", "gcp", "placed", 2, Decimal("0.40"), pytest.approx(8.0))]
    (by,) = st.query(f"SELECT toString(sum(cost)) AS c, sum(vcpu_hours) AS h FROM {db}.v_allocation_usage")
    assert Decimal(by["c"]) == Decimal("0.33") and by["h"] == pytest.approx(8.0)
    day = st.query(f"SELECT provider, toString(total_cost) AS c, placements AS n FROM {db}.v_cost_per_partner_day "
                   f"ORDER BY provider")
    assert [(r["provider"], Decimal(r["c"]), int(r["n"])) for r in day] == [("gcp", Decimal("0.30"), 1),
                                                                          ("own", Decimal("0.03"), 0)]
