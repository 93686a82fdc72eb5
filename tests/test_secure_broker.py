"""A secured local broker (`tessera infra up --secure`): TLS everywhere, SCRAM-SHA-512
users for Tessera's roles, an authorizer with Tessera's ACLs, no plaintext listener; and
every client of Tessera on it: the admin client, producers, the scheduler's transactions,
the Faust agents and the sink, the load generator. Then what must be refused: an
untrusted CA, a wrong password, plaintext, and each role outside its ACLs."""

from __future__ import annotations

import asyncio
import os
import ssl
import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError
from tests.conftest import run
from tests.samples import SAMPLES

import tessera.schemas as s
from tessera.agents.scheduler import SchedulerWorker
from tessera.agents.worker import running_worker
from tessera.infra.kafka_broker import KafkaBroker, free_port
from tessera.infra.tls import make_authority
from tessera.streams.admin import ensure_topics
from tessera.streams.produce import publish
from tessera.streams.reader import read_to_end

pytestmark = [pytest.mark.kafka, pytest.mark.slow,
              pytest.mark.skipif(bool(os.environ.get("TESSERA_KAFKA_BOOTSTRAP")), reason="external broker configured")]

PREFIX, APP = f"sec{uuid.uuid4().hex[:6]}", f"secapp{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory):
    b = KafkaBroker(tmp_path_factory.mktemp("kafka-secure"), port=free_port(), controller_port=free_port(),
                    ssl_port=free_port(), heap="384m", secure=True, topic_prefix=PREFIX, app_id=APP)
    b.start(timeout=180)
    yield b
    b.stop()


def as_role(broker: KafkaBroker, base, role: str, password: str | None = None, cafile: str | None = None):
    return base.replace(kafka_bootstrap=broker.bootstrap, kafka_security_protocol="SASL_SSL",
                        kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username=role,
                        kafka_sasl_password=password if password is not None else broker.credentials()[role],
                        kafka_ssl_cafile=cafile or str(broker.ca_file), topic_prefix=PREFIX, app_id=APP)


def _resource() -> s.ResourceDiscovered:
    return s.ResourceDiscovered(resource_id="own/sec1", spec=s.ResourceSpec(
        provider="own", region="dc", capacity=s.Capacity(vcpu=64, memory_bytes=256 << 30), price_per_hour="0.2"))


def _request(i: int) -> s.WorkloadRequest:
    return s.WorkloadRequest(request_id=f"sec-{i}", tenant="t", per_replica=s.Capacity(vcpu=1, memory_bytes=1 << 30))


def test_every_client_works_in_its_role(secure_broker, base_settings):
    role = lambda r: as_role(secure_broker, base_settings, r)  # noqa: E731

    async def scenario():
        await ensure_topics(role("admin"))                                    # the admin client
        await publish(role("discovery"), "resources", [_resource()])          # discovery
        await publish(role("discovery"), "health", [s.HealthSample(resource_id="own/sec1")])
        stop = asyncio.Event()
        scheduler = SchedulerWorker(role("scheduler"), batch_wait_ms=20)      # transactions
        task = asyncio.create_task(scheduler.run(stop))
        try:
            async with running_worker(role("worker"), ["event-log"]) as app:  # Faust agents and the sink
                await asyncio.sleep(2)
                await publish(role("producer"), "requests", [_request(i) for i in range(5)])   # producers
                deadline, placed = time.monotonic() + 60, set()
                while time.monotonic() < deadline and len(placed) < 5:
                    recs = await read_to_end(role("producer"), f"{PREFIX}.allocations.v1", 6, committed_only=True)
                    placed = {s.decode(r.value).request_id for r in recs}
                    await asyncio.sleep(0.5)
                store, rows = app.tessera_store, []
                while time.monotonic() < deadline and len(rows) < 5:
                    rows = store.query(f"SELECT event_id FROM {store.database}.events "
                                       f"WHERE event_type = 'workload.request'")
                    await asyncio.sleep(0.5)
            from load.generator import run_rate, synthetic_requests  # the load generator

            report = await run_rate(role("producer"), 20, 1.0, synthetic_requests(f"{PREFIX}-load"), tail_s=20)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
        return placed, len(rows), report

    placed, sunk, report = run(scenario(), timeout=300)
    assert placed == {f"sec-{i}" for i in range(5)}
    assert sunk == 5
    assert report["answered"] == report["sent"] == 20


def test_what_must_be_refused_is_refused(secure_broker, base_settings, tmp_path):
    async def produce(settings, topic: str) -> None:
        event = next(e for e in SAMPLES.values() if e.event_type in s.topic_spec(topic).event_types)
        await publish(settings, topic, [event])

    async def attempt(coro) -> type[BaseException] | None:
        try:
            await asyncio.wait_for(coro, 30)
        except (KafkaError, ssl.SSLError, OSError, asyncio.TimeoutError) as exc:
            return type(exc)
        return None

    other_ca = make_authority(tmp_path / "other-ca")
    role = lambda r, **kw: as_role(secure_broker, base_settings, r, **kw)  # noqa: E731

    async def scenario():
        await ensure_topics(role("admin"))
        return {
            "producer writes allocations": await attempt(produce(role("producer"), "allocations")),
            "producer writes resources": await attempt(produce(role("producer"), "resources")),
            "discovery writes requests": await attempt(produce(role("discovery"), "requests")),
            "wrong password": await attempt(produce(role("producer", password="nope"), "requests")),
            "untrusted CA": await attempt(produce(role("producer", cafile=str(other_ca)), "requests")),
            "plaintext": await attempt(_plaintext(secure_broker.bootstrap)),
            "TLS listener without a client certificate": await attempt(_plaintext(
                f"127.0.0.1:{secure_broker.ssl_port}", ssl_context=ssl.create_default_context(
                    cafile=str(secure_broker.ca_file)))),
            "producer writes requests (allowed)": await attempt(produce(role("producer"), "requests")),
        }

    outcome = run(scenario(), timeout=300)
    assert outcome.pop("producer writes requests (allowed)") is None
    assert outcome.pop("producer writes allocations") is TopicAuthorizationFailedError
    assert all(v is not None for v in outcome.values()), outcome


async def _plaintext(bootstrap: str, **kw) -> None:
    protocol = {"security_protocol": "SSL"} if kw else {}
    async with started_producer_raw(bootstrap, **protocol, **kw) as p:
        await p.send_and_wait("anything", b"x")


class started_producer_raw:  # noqa: N801 - a context manager used like a function
    def __init__(self, bootstrap: str, **kw) -> None:
        self.p = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000, **kw)

    async def __aenter__(self) -> AIOKafkaProducer:
        await self.p.start()
        return self.p

    async def __aexit__(self, *exc) -> None:
        await self.p.stop()




def test_tenants_submit_through_the_gateway_in_their_own_name(secure_broker, base_settings):
    """Tenants hold no Kafka credentials: the gateway, in the producer role, publishes their
    requests with the tenant its token authenticates."""
    import aiohttp
    import orjson

    from tessera.app.gateway import Gateway, digest, new_token

    producer = as_role(secure_broker, base_settings, "producer")
    token, _ = new_token("acme")

    async def scenario():
        await ensure_topics(as_role(secure_broker, base_settings, "admin"))
        async with Gateway(producer, {digest(token): "acme"}).running() as url, aiohttp.ClientSession() as http:
            body = orjson.dumps({"request_id": "gw-sec", "tenant": "acme",
                                 "per_replica": {"vcpu": 1, "memory_bytes": 1 << 30}})
            async with http.post(url, data=body, headers={"Authorization": f"Bearer {token}"}) as r:
                status = r.status
        recs = await read_to_end(as_role(secure_broker, base_settings, "scheduler"), f"{PREFIX}.requests.v1", 6)
        return status, [s.decode(r.value) for r in recs]

    status, requests = run(scenario(), timeout=120)
    assert status == 202
    assert ("gw-sec", "acme") in {(e.request_id, e.tenant) for e in requests}
