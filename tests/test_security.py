"""SASL/PLAIN end to end: Tessera's settings authenticate its producer and Faust app
against a real broker with a SASL listener; a wrong password is refused."""

from __future__ import annotations

import asyncio
import os

import pytest
from aiokafka.errors import KafkaError
from tests.conftest import run
from tests.samples import SAMPLES

from tessera.agents.worker import build_worker_app
from tessera.infra.kafka_broker import KafkaBroker, free_port
from tessera.streams.produce import producer_for, publish
from tessera.streams.runner import running

pytestmark = [pytest.mark.kafka,
              pytest.mark.skipif(bool(os.environ.get("TESSERA_KAFKA_BOOTSTRAP")), reason="external broker configured")]


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory):
    b = KafkaBroker(tmp_path_factory.mktemp("kafka-sasl"), port=free_port(), controller_port=free_port(),
                    heap="256m", sasl_port=free_port(), sasl_users={"tessera": "s3cret"})
    b.start(timeout=120)
    yield b
    b.stop()


def test_sasl_plain_producer_and_faust_agent(sasl_broker, base_settings):
    settings = base_settings.replace(
        kafka_bootstrap=f"127.0.0.1:{sasl_broker.sasl_port}", kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN", kafka_sasl_username="tessera", kafka_sasl_password="s3cret")
    request = SAMPLES["workload.request"]

    async def scenario():
        app, _ = build_worker_app(settings, ["event-log"], app_id=settings.app_id)
        store = app.tessera_store
        async with running(app):
            await publish(settings, "requests", [request])
            for _ in range(100):
                rows = store.query(f"SELECT event_id FROM {store.database}.events")
                if rows:
                    return rows
                await asyncio.sleep(0.2)
        return []

    assert run(scenario()) == [{"event_id": request.event_id}]


def test_wrong_password_is_refused(sasl_broker, base_settings):
    settings = base_settings.replace(
        kafka_bootstrap=f"127.0.0.1:{sasl_broker.sasl_port}", kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="tessera", kafka_sasl_password="wrong")

    async def attempt():
        p = producer_for(settings, request_timeout_ms=5000)
        try:
            await p.start()
        finally:
            await p.stop()

    with pytest.raises(KafkaError):
        run(attempt(), timeout=60)
