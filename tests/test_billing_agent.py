"""The billing agent on the real broker: allocation lifecycle -> billing lines and alerts;
a restart rebuilds the same ledger and repeats no alert."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from aiokafka import TopicPartition
from tests.conftest import latest_revisions, run, run_for, until

import tessera.schemas as s
from tessera.agents.billing import BillingWorker
from tessera.pricing.agreements import parse_agreements
from tessera.streams.admin import ensure_topics
from tessera.streams.billing_feed import FEED, send_to_feed
from tessera.streams.produce import producer_for, send_events

pytestmark = pytest.mark.kafka

T = datetime(2026, 3, 10, tzinfo=timezone.utc)
AGREEMENTS = parse_agreements([{"partner": "gcp", "currency": "USD", "rates": {"vcpu_hour": "0.05"},
                                "limits": {"spend": {"amount": "2.00", "thresholds": [50, 100],
                                                     "enforcement": "hard"}}}])


def placed(i: int, provider: str = "gcp", vcpu: float = 2.0, replicas: int = 2) -> s.AllocationPlaced:
    return s.AllocationPlaced(event_time=T, request_id=f"bq-{i}", allocation_id=f"ba-{i}",
                              per_replica=s.Capacity(vcpu=vcpu),
                              placements=[s.Placement(resource_id=f"{provider}/n{i}", provider=provider,
                                                      replicas=replicas, price_per_hour=Decimal("0.1"))])


def released(i: int, hours: float, provider: str = "gcp", resource: str = "", replicas: int = 2) -> s.AllocationReleased:
    # As the scheduler says it: with what is freed (the billing feed routes it by partner).
    return s.AllocationReleased(event_time=T + timedelta(hours=hours), request_id=f"bq-{i}", allocation_id=f"ba-{i}",
                                placements=[s.Placement(resource_id=resource or f"{provider}/n{i}", provider=provider,
                                                        replicas=replicas, price_per_hour=Decimal("0.1"))])


def sample(i: int, hours: float, vcpu: float, resource: str) -> s.UsageSample:
    """A measured hour of allocation ba-1 on ``resource``."""
    return s.UsageSample(event_id=f"bs-{i}", event_time=T + timedelta(hours=hours), resource_id=resource,
                         allocation_id="ba-1", interval_seconds=3600, used=s.Capacity(vcpu=vcpu))


def test_lines_and_alerts_from_the_allocation_lifecycle_survive_a_restart(settings, consume_events):
    async def scenario():
        await ensure_topics(settings)
        producer = producer_for(settings)
        await producer.start()
        try:
            # 4 vCPU x 5 h = 20 vCPU-h = 1.00 USD (50 %); an own placement is not billed.
            await send_to_feed(producer, settings.topic_prefix, [placed(1), released(1, 5), placed(2, "own")])
            await run_for(BillingWorker(settings, AGREEMENTS), 8)
            # Another 4 vCPU x 6 h = 1.20 USD: 2.20 in total crosses 100 % (hard).
            await send_to_feed(producer, settings.topic_prefix, [placed(3), released(3, 6)])
            await run_for(BillingWorker(settings, AGREEMENTS), 8)
        finally:
            await producer.stop()
        return (await consume_events(settings, "billing-lines", 100, timeout=5),
                await consume_events(settings, "alerts", 10, timeout=5))

    lines, alerts = run(scenario(), timeout=180)
    assert [(a.threshold_pct, a.enforcement) for a in alerts] == [(50, "soft"), (100, "hard")]
    latest = latest_revisions(lines)
    assert {k: v.amount for k, v in latest.items()} == {"gcp/2026-03/vcpu_hour": Decimal("2.20")}
    assert latest["gcp/2026-03/vcpu_hour"].quantity == Decimal("44")


def test_agreement_updates_from_the_topic_rerate_and_bad_ones_are_dead_lettered(settings, consume_events):
    async def scenario():
        await ensure_topics(settings)
        producer = producer_for(settings)
        await producer.start()
        try:
            await send_to_feed(producer, settings.topic_prefix, [placed(1), released(1, 5)])   # 20 vCPU-h
            # New terms: 0.10 per vCPU-hour; then a broken update (a float rate) that must not apply.
            await send_events(producer, settings, "agreements", [
                s.AgreementUpdated(partner_id="gcp", agreement={"partner": "gcp", "currency": "USD",
                                                                "rates": {"vcpu_hour": "0.10"}}),
                s.AgreementUpdated(partner_id="gcp", agreement={"partner": "gcp", "currency": "USD",
                                                                "rates": {"vcpu_hour": 0.2}})])
            await run_for(BillingWorker(settings, dict(AGREEMENTS)), 8)
        finally:
            await producer.stop()
        return (await consume_events(settings, "billing-lines", 100, timeout=5),
                await consume_events(settings, "dead-letters", 10, timeout=5))

    lines, dead = run(scenario(), timeout=120)
    last = max((l for l in lines if l.line_id == "gcp/2026-03/vcpu_hour"), key=lambda l: l.revision)
    assert last.amount == Decimal("2.00") and last.rate == Decimal("0.1")
    assert len(dead) == 1 and "rates.vcpu_hour" in dead[0].reason and "float" in dead[0].reason


def test_migrations_and_measured_usage_are_billed_once_across_a_restart(settings, consume_events):
    agreements = parse_agreements([
        {"partner": "gcp", "currency": "USD", "rates": {"vcpu_hour": "0.05"}},
        {"partner": "do", "currency": "USD", "rates": {"vcpu_hour": "0.03"}, "basis": "measured"}])

    def step(kind, hours, **extra):
        # gcp and do are billed by different shards of the feed: the event says what moved.
        return kind(event_time=T + timedelta(hours=hours), migration_id="bm-1", allocation_id="ba-1",
                    source_resource_id="gcp/n1", target_resource_id="do/n5", target_provider="do",
                    source_provider="gcp", replicas=2, per_replica=s.Capacity(vcpu=2.0), **extra)

    async def scenario():
        await ensure_topics(settings)
        producer = producer_for(settings)
        await producer.start()
        try:
            # ba-1: 4 vCPU on gcp from 0 h, moved to do (billed on measured use) at 3 h.
            await send_to_feed(producer, settings.topic_prefix, [placed(1)])
            await send_to_feed(producer, settings.topic_prefix, [step(s.MigrationProgress, 2, step="reserve_target"),
                                                                 step(s.MigrationDone, 3, cut_over_at=T + timedelta(hours=3))])
            await send_events(producer, settings, "usage", [sample(1, 4, 3.5, "do/n5"), sample(2, 5, 2.5, "do/n5")])
            await run_for(BillingWorker(settings, agreements), 8)
            # After the restart: a redelivered sample and migration, one new sample, the release.
            await send_events(producer, settings, "usage", [sample(2, 5, 2.5, "do/n5"), sample(3, 6, 1.0, "do/n5")])
            await send_to_feed(producer, settings.topic_prefix, [step(s.MigrationDone, 3, cut_over_at=T + timedelta(hours=3))])
            await send_to_feed(producer, settings.topic_prefix, [released(1, 6, "do", "do/n5")])
            await run_for(BillingWorker(settings, agreements), 8)
        finally:
            await producer.stop()
        return await consume_events(settings, "billing-lines", 100, timeout=5)

    latest = latest_revisions(run(scenario(), timeout=180))
    # gcp: 4 vCPU x 3 h x 0.05 = 0.60 ; do: (3.5 + 2.5 + 1.0) vCPU-h x 0.03 = 0.21
    assert {k: v.amount for k, v in latest.items()} == {"gcp/2026-03/vcpu_hour": Decimal("0.60"),
                                                        "do/2026-03/vcpu_hour": Decimal("0.21")}


def test_usage_read_while_no_shard_is_held_is_billed_once_shards_are_held_again(settings, consume_events):
    # During a rebalance the agent holds no shard between giving its shards up and being
    # given them again. Measured usage it reads from the shared topic meanwhile is taken in
    # by no shard; once shards are held the shared consumer is pointed back at the lowest
    # offset any shard has not taken in, so those samples are billed (they were lost before).
    agreements = parse_agreements([{"partner": "do", "currency": "USD", "rates": {"vcpu_hour": "0.03"},
                                    "basis": "measured"}])

    async def scenario():
        await ensure_topics(settings)
        producer = producer_for(settings)
        await producer.start()
        worker = BillingWorker(settings, agreements)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            await send_to_feed(producer, settings.topic_prefix, [placed(1, "do")])

            async def all_held() -> bool:
                return len(worker.shards) == worker.partitions

            assert await until(all_held, 60)
            await asyncio.sleep(2)                   # the placement is in
            shards = {TopicPartition(worker.topic[FEED], p) for p in range(worker.partitions)}
            await worker.release(shards)             # a rebalance begins: every shard given up
            assert not worker.shards
            await send_events(producer, settings, "usage", [sample(1, 1, 3.5, "do/n1"), sample(2, 2, 2.5, "do/n1")])
            usage = [TopicPartition(worker.topic["usage"], p) for p in range(s.topic_spec("usage").partitions)]
            end = await worker._shared.end_offsets(usage)

            async def read_past() -> bool:           # the agent's loop read them, holding no shard
                return all([await worker._shared.position(tp) >= end[tp] for tp in usage])

            assert await until(read_past, 30)
            await worker.adopt(shards)               # ... and ends: the same shards come back
            await send_to_feed(producer, settings.topic_prefix, [released(1, 3, "do", "do/n1")])
            await asyncio.sleep(5)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await producer.stop()
        return await consume_events(settings, "billing-lines", 100, timeout=5)

    latest = latest_revisions(run(scenario(), timeout=180))
    # (3.5 + 2.5) vCPU-h measured x 0.03
    assert {k: v.amount for k, v in latest.items()} == {"do/2026-03/vcpu_hour": Decimal("0.18")}


def test_alerts_also_go_to_the_webhook(settings, consume_events):
    """A usage-limit alert is POSTed to the configured webhook (JSON body, CloudEvents
    headers, the bearer token); a receiver that fails at first gets it on a retry."""
    from aiohttp import web

    got: list[tuple[dict, dict]] = []
    calls = {"n": 0}

    async def receive(request: web.Request) -> web.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return web.Response(status=503)          # the first try fails: retried
        got.append((dict(request.headers), await request.json()))
        return web.Response(status=204)

    async def scenario():
        app = web.Application()
        app.router.add_post("/hook", receive)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        st = settings.replace(alert_webhook_url=f"http://127.0.0.1:{port}/hook", alert_webhook_token="s3cret")
        try:
            await ensure_topics(st)
            producer = producer_for(st)
            await producer.start()
            try:
                await send_to_feed(producer, st.topic_prefix, [placed(1), released(1, 5)])   # 1.00 USD: 50 %
            finally:
                await producer.stop()
            await run_for(BillingWorker(st, AGREEMENTS), 8)
        finally:
            await runner.cleanup()
        return await consume_events(st, "alerts", 10, timeout=5)

    alerts = run(scenario(), timeout=120)
    assert [a.threshold_pct for a in alerts] == [50]
    assert len(got) == 1
    headers, body = got[0]
    assert headers["ce-type"] == "usage_limit.alert" and headers["ce-id"] == alerts[0].event_id
    assert headers["Authorization"] == "Bearer s3cret"
    assert body["threshold_pct"] == 50 and body["partner_id"] == "gcp"


def test_bill_export_from_events_matches_what_the_agent_billed(settings, consume_events, tmp_path):
    """`tessera bill export --from-events`: the billing agent's state rebuilt from the broker
    (its checkpoint, then the events after it) gives FOCUS rows per day and tenant that add
    up to the lines the agent published, and a chargeback that adds up to them too."""
    import argparse
    import csv

    import orjson

    from tessera.app.cli import billing as bill_cli

    def tenant_placed(i: int, tenant: str, hours: float) -> s.AllocationPlaced:
        e = placed(i)
        return e.model_copy(update={"tenant": tenant, "event_time": T + timedelta(hours=hours)})

    async def scenario():
        await ensure_topics(settings)
        producer = producer_for(settings)
        await producer.start()
        try:
            # acme: 4 vCPU x 30 h over two days; globex: 4 vCPU x 5 h.
            await send_to_feed(producer, settings.topic_prefix, [
                tenant_placed(1, "acme", 0), released(1, 30), tenant_placed(2, "globex", 2), released(2, 7)])
            await run_for(BillingWorker(settings, AGREEMENTS), 8)
        finally:
            await producer.stop()
        return await consume_events(settings, "billing-lines", 100, timeout=5)

    latest = latest_revisions(run(scenario(), timeout=180))
    billed = sum(v.amount for v in latest.values())
    assert billed == Decimal("7.00")                         # 140 vCPU-h at 0.05
    out = tmp_path / "focus.csv"

    def export(fmt: str, path) -> int:
        return bill_cli.run(argparse.Namespace(action="export", agreements=None, usage=None, from_events=True,
                                               period="2026-03", format=fmt, out=str(path)),
                            settings.replace(billing_agreements=str(_agreements_file(tmp_path))))

    assert export("focus-csv", out) == 0
    rows = list(csv.DictReader(out.open()))
    assert sum(Decimal(r["BilledCost"]) for r in rows) == billed
    assert {(r["SubAccountId"], r["ChargePeriodStart"][:10]) for r in rows} == {
        ("acme", "2026-03-10"), ("acme", "2026-03-11"), ("globex", "2026-03-10")}
    charge = tmp_path / "chargeback.json"
    assert export("chargeback-json", charge) == 0
    assert {d["tenant"]: d["total"] for d in orjson.loads(charge.read_bytes())} == {"acme": "6.00", "globex": "1.00"}


def _agreements_file(tmp_path) -> str:
    import orjson
    path = tmp_path / "agreements.json"
    path.write_bytes(orjson.dumps([{"partner": "gcp", "currency": "USD", "rates": {"vcpu_hour": "0.05"},
                                    "limits": {"spend": {"amount": "2.00", "thresholds": [50, 100],
                                                         "enforcement": "hard"}}}]))
    return str(path)
