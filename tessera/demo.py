"""``tessera demo``: the whole foundation in one command.

Brings up the local Kafka broker (unless TESSERA_KAFKA_BOOTSTRAP names one), runs the
event-log agent in this process, publishes real resources (own data center nodes from
the Alibaba v2023 node list, DigitalOcean and GCP catalog rows) and workload requests
(Alibaba v2023 pods), plus two deliberately broken messages, then shows what arrived
in ClickHouse and in the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from decimal import Decimal

from schemas import HealthSample, utc_now

from . import datasets
from .config import Settings
from .produce import producer_for, send_events, send_raw

N_REQUESTS = 200


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def _run(settings: Settings) -> int:
    from streams.runner import build_worker_app, running

    run = uuid.uuid4().hex[:8]
    started = utc_now()
    _say(f"[2/5] starting the event-log and resources agents (app tessera-demo, run {run})")
    app, _topics = build_worker_app(settings, ["event-log", "resources"], app_id=f"{settings.app_id}-demo")
    store = app.tessera_store  # type: ignore[attr-defined]
    db = store.database
    async with running(app):
        _say("[3/5] publishing real resources, health samples and Alibaba v2023 pod requests")
        resources = [
            *datasets.own_nodes(limit=20),
            *datasets.digitalocean_vms(limit=10),
            *datasets.gcp_instances(limit=10, region="europe-west4"),
        ]
        resources = [r.model_copy(update={"event_id": f"demo-{run}-{r.resource_id}"}) for r in resources]
        health = [HealthSample(event_id=f"demo-{run}-hb-{r.resource_id}", resource_id=r.resource_id)
                  for r in resources]
        requests = list(datasets.alibaba_pod_requests(started, limit=N_REQUESTS, time_scale=1e4,
                                                      id_prefix=f"demo-{run}-"))
        producer = producer_for(settings)
        await producer.start()
        try:
            sent = await send_events(producer, settings, "resources", resources)
            sent += await send_events(producer, settings, "health", health)
            sent += await send_events(producer, settings, "requests", requests)
            broken = [
                f"demo {run}: this is not JSON".encode(),
                (b'{"schema_version":1,"event_type":"workload.request","event_id":"demo-' + run.encode()
                 + b'-bad","event_time":"2026-01-01T00:00:00Z","request_id":"r","tenant":"t",'
                 b'"per_replica":{"vcpu":"lots"}}'),
            ]
            await send_raw(producer, settings, "requests", broken, key=b"demo-broken")
        finally:
            await producer.stop()
        _say(f"      sent {sent} valid events and {len(broken)} broken messages")

        _say("[4/5] waiting for the agent to write them to ClickHouse")
        deadline = time.monotonic() + 120
        while True:
            got = int(store.query(f"SELECT uniqExact(event_id) AS n FROM {db}.events "
                                  f"WHERE startsWith(event_id, 'demo-{run}-') AND event_id != 'demo-{run}-bad'")[0]["n"])
            dead = int(store.query(f"SELECT count() AS n FROM {db}.dead_letters FINAL "
                                   f"WHERE event_time >= toDateTime64('{started:%Y-%m-%d %H:%M:%S}', 6, 'UTC') "
                                   f"AND consumer = 'event-log'")[0]["n"])
            print(f"\r      events in ClickHouse: {got}/{sent}   dead letters: {dead}/{len(broken)}   ",
                  end="", file=sys.stderr, flush=True)
            if got >= sent and dead >= len(broken):
                print(file=sys.stderr)
                break
            if time.monotonic() > deadline:
                print(file=sys.stderr)
                _say("error: events did not all arrive within 120 s; see `tessera infra status`")
                return 1
            await asyncio.sleep(0.5)
        live = app.tessera_resources  # type: ignore[attr-defined]
        placeable = live.available()
        by_provider: dict[str, list] = {}
        for v in placeable:
            by_provider.setdefault(v.spec.provider, []).append(v)

    _say("[5/5] results")
    print(f"Live resource table: {len(live)} resources, {len(placeable)} healthy and placeable")
    for provider, vs in sorted(by_provider.items()):
        vcpu = sum(v.spec.capacity.vcpu for v in vs)
        price = sum(v.spec.price_per_hour for v in vs)
        print(f"  {provider:<14} {len(vs):>4} resources {vcpu:>8.0f} vCPU  {price:>10.4f} USD/h"
              f"  ({price / Decimal(str(vcpu)) if vcpu else 0:.5f} USD per vCPU-hour)")
    print()
    print(store.query_raw(
        f"SELECT event_type, count() AS events, uniqExact(key) AS keys, min(event_time) AS first, "
        f"max(event_time) AS last FROM {db}.events FINAL WHERE startsWith(event_id, 'demo-{run}-') "
        f"GROUP BY event_type ORDER BY event_type", "PrettyCompactMonoBlock").decode())
    print(store.query_raw(
        f"SELECT JSONExtractString(payload, 'spec', 'provider') AS provider, count() AS resources, "
        f"sum(JSONExtractFloat(payload, 'spec', 'capacity', 'vcpu')) AS vcpu, "
        f"sum(toDecimal64(JSONExtractString(payload, 'spec', 'price_per_hour'), 6)) AS price_per_hour "
        f"FROM {db}.events FINAL WHERE startsWith(event_id, 'demo-{run}-') AND event_type = 'resource.discovered' "
        f"GROUP BY provider ORDER BY provider", "PrettyCompactMonoBlock").decode())
    print(store.query_raw(
        f"SELECT source_topic, source_partition, source_offset, field, reason FROM {db}.dead_letters FINAL "
        f"WHERE event_time >= toDateTime64('{started:%Y-%m-%d %H:%M:%S}', 6, 'UTC') AND consumer = 'event-log' "
        f"ORDER BY source_offset", "PrettyCompactMonoBlock").decode())
    print(f"Query more with: tessera sql \"SELECT event_type, count() FROM {db}.events GROUP BY 1\"")
    print("Stop the broker with: tessera infra down")
    return 0


def run_demo(settings: Settings, keep_running: bool = True) -> int:
    from infra.kafka_broker import BrokerError, broker_from_settings

    if settings.kafka_bootstrap:
        _say(f"[1/5] using the Kafka broker at {settings.kafka_bootstrap}")
    else:
        _say("[1/5] bringing up the local Kafka broker")
        try:
            broker_from_settings(settings).start(progress=lambda m: _say(f"      {m}"))
        except BrokerError as exc:
            _say(f"error: {exc}")
            return 1
    return asyncio.run(_run(settings))
