"""The Faust app factory.

Every worker, test and the demo builds its app here, so broker address, TLS/SASL, state
store and partition counts come from one Settings object (environment or config file).
Messages are raw bytes on the wire: the edge (streams.edge) decodes and validates them
itself, so that an invalid message can be dead-lettered with its exact origin instead
of crashing a Faust deserializer.
"""

from __future__ import annotations

import ssl
from typing import Any

import faust

from streams.partitioner import Murmur2Partitioner
from tessera.config import Settings, load_settings


def _ssl_context(s: Settings) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=s.kafka_ssl_cafile or None)
    if s.kafka_ssl_certfile:
        ctx.load_cert_chain(s.kafka_ssl_certfile, s.kafka_ssl_keyfile or None)
    return ctx


def faust_broker_credentials(s: Settings) -> Any:
    """Faust credentials for the configured security protocol (None for PLAINTEXT)."""
    proto = s.kafka_security_protocol
    if proto == "PLAINTEXT":
        return None
    if proto == "SSL":
        return faust.SSLCredentials(_ssl_context(s))
    return faust.SASLCredentials(
        username=s.kafka_sasl_username,
        password=s.kafka_sasl_password,
        mechanism=s.kafka_sasl_mechanism,
        ssl_context=_ssl_context(s) if proto == "SASL_SSL" else None,
    )


def aiokafka_security_kwargs(s: Settings) -> dict[str, Any]:
    """The same security settings for plain aiokafka clients (producers, admin, tests)."""
    proto = s.kafka_security_protocol
    kw: dict[str, Any] = {"security_protocol": proto}
    if proto in {"SSL", "SASL_SSL"}:
        kw["ssl_context"] = _ssl_context(s)
    if proto.startswith("SASL"):
        kw.update(
            sasl_mechanism=s.kafka_sasl_mechanism,
            sasl_plain_username=s.kafka_sasl_username,
            sasl_plain_password=s.kafka_sasl_password,
        )
    return kw


def create_app(settings: Settings | None = None, *, app_id: str | None = None, **overrides: Any) -> faust.App:
    s = settings or load_settings()
    (s.data_path / "faust").mkdir(parents=True, exist_ok=True)
    brokers = ";".join(f"kafka://{hp.strip()}" for hp in s.bootstrap_servers.split(",") if hp.strip())
    conf: dict[str, Any] = dict(
        broker=brokers,
        broker_credentials=faust_broker_credentials(s),
        store=s.store,
        topic_partitions=s.topic_partitions,
        topic_replication_factor=s.topic_replication_factor,
        processing_guarantee=s.processing_guarantee,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        # Tessera serves Prometheus metrics itself; Faust's web server is not needed.
        web_enabled=False,
        datadir=str(s.data_path / "faust"),
        table_cleanup_interval=30.0,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        producer_partitioner=Murmur2Partitioner(),
    )
    conf.update(overrides)
    return faust.App(app_id or s.app_id, **conf)
