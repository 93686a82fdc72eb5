"""The Faust app factory.

Every worker, test and the demo builds its app here, so broker address, TLS/SASL, state
store and partition counts come from one Settings object (environment or config file).
Messages are raw bytes on the wire: the edge (streams.edge) decodes and validates them
itself, so that an invalid message can be dead-lettered with its exact origin instead
of crashing a Faust deserializer.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_kafka

from tessera.config import Settings, load_settings
from tessera.streams.partitioner import Murmur2Partitioner
from tessera.streams.security import ssl_context


def faust_broker_credentials(s: Settings) -> Any:
    """Faust credentials for the configured security protocol (None for PLAINTEXT)."""
    proto = s.kafka_security_protocol
    if proto == "PLAINTEXT":
        return None
    if proto == "SSL":
        return faust.SSLCredentials(ssl_context(s))
    return faust.SASLCredentials(
        username=s.kafka_sasl_username,
        password=s.kafka_sasl_password,
        mechanism=s.kafka_sasl_mechanism,
        ssl_context=ssl_context(s) if proto == "SASL_SSL" else None,
    )


class _ReadCommittedConsumerThread(faust_kafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Read by the consumer when it starts; aiokafka is pinned (constraints.txt), and
        # tests/test_resources_agent.py fails if this stops taking effect.
        consumer._isolation_level = "read_committed"
        return consumer


class _ReadCommittedConsumer(faust_kafka.Consumer):
    def _new_consumer_thread(self) -> Any:
        return _ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _new_offset(self, tp: Any) -> Any:
        self._cover_skipped_head(tp)
        return super()._new_offset(tp)

    def _cover_skipped_head(self, tp: Any) -> None:
        """Let the commit pass offsets that read_committed never delivers.

        Transaction markers and an aborted transaction's records take offsets that this
        consumer never sees. Faust skips such a hole only when it registered it as a gap,
        which it does between two records it read; a hole right after the committed offset
        (the first records read after an assignment, or after a scheduler's kill -9 left an
        aborted transaction there) is never registered, and Faust then refuses every later
        commit of the partition for the worker's life (``_new_offset`` returns None while
        the lowest acked offset is more than one past the committed one). Records of a
        partition reach the streams in offset order, so every record below the lowest
        acked offset was delivered before it: it is acked, still being processed (tracked
        as unacked), or was never delivered. The hole is skipped only when none of them is
        still being processed, so nothing read is committed before it is done."""
        acked = self._acked.get(tp)
        committed = self._committed_offset.get(tp)
        if not acked or not committed:
            return
        head = min(acked)
        if head - committed <= 1:
            return
        if any(m.tp == tp and committed <= m.offset < head for m in list(self._unacked_messages)):
            return
        gaps = self._gap[tp]
        gaps.addi(committed, head)
        gaps.merge_overlaps()
        self.log.info("Committing %s past offsets %d-%d: never delivered under read_committed "
                      "(transaction markers or an aborted transaction)", tp, committed, head - 1)


class _ReadCommittedTransport(faust_kafka.Transport):
    Consumer = _ReadCommittedConsumer


class TesseraApp(faust.App):
    """A Faust app whose agents read committed records only.

    Faust reads ``read_uncommitted`` unless the app itself is exactly-once, but the
    scheduler publishes its decisions in Kafka transactions: a transaction that aborts (a
    fenced or crashed scheduler) decided nothing, yet its placements would have reached
    the live resource table as allocated capacity and never been released."""

    def _new_transport(self) -> Any:
        return _ReadCommittedTransport(self.conf.broker_consumer, self)


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
        # A worker killed without leaving the group holds its partitions until its session
        # times out: Faust's default (60 s) left a restarted worker's table and agents idle
        # that long (tests/test_faults.py measures it).
        broker_session_timeout=10.0,
        producer_partitioner=Murmur2Partitioner(),
    )
    conf.update(overrides)
    return TesseraApp(app_id or s.app_id, **conf)
