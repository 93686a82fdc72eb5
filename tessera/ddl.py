"""Versioned DDL, applied at start, idempotent, identical on chdb and a ClickHouse server.

Each migration is a numbered list of statements with ``{db}`` for the database. Applied
versions are recorded in ``{db}.schema_migrations``; re-running is a no-op, and every
statement is itself ``IF NOT EXISTS`` so a crash half-way through is safe to repeat.

Table choices (why):

* ReplacingMergeTree keyed by ``event_id``: Kafka delivery is at-least-once, so the same
  event may be written twice; merges collapse the copies and queries that must be exact
  use ``FINAL`` (or ``uniqExact(event_id)``) so they are right before a merge too.
* ``non_replicated_deduplication_window``: a retried batch insert with the same
  ``insert_deduplication_token`` is dropped by the engine itself.
* PARTITION BY month of event time: billing periods are calendar months (UTC), and old
  months can be dropped or moved whole. ORDER BY leads with the column most queries
  filter on (event type, topic), then time.
"""

from __future__ import annotations

from dataclasses import dataclass

from .storage import AnalyticsStore


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "event log and dead letters",
        (
            """
            CREATE TABLE IF NOT EXISTS {db}.events (
                event_id      String,
                event_type    LowCardinality(String),
                schema_version UInt16,
                topic         LowCardinality(String),
                partition     UInt32,
                offset        UInt64,
                key           String,
                event_time    DateTime64(6, 'UTC'),
                ingested_at   DateTime64(6, 'UTC') DEFAULT now64(6),
                payload       String CODEC(ZSTD(3))
            )
            ENGINE = ReplacingMergeTree(ingested_at)
            PARTITION BY toYYYYMM(event_time)
            ORDER BY (event_type, event_id)
            SETTINGS non_replicated_deduplication_window = 1000
            """,
            """
            CREATE TABLE IF NOT EXISTS {db}.dead_letters (
                event_id         String,
                event_time       DateTime64(6, 'UTC'),
                reason           String,
                field            String,
                consumer         LowCardinality(String),
                source_topic     LowCardinality(String),
                source_partition UInt32,
                source_offset    UInt64,
                original_b64     String CODEC(ZSTD(3))
            )
            ENGINE = ReplacingMergeTree
            PARTITION BY toYYYYMM(event_time)
            ORDER BY (source_topic, source_partition, source_offset, event_id)
            TTL toDateTime(event_time) + INTERVAL 90 DAY
            SETTINGS non_replicated_deduplication_window = 1000
            """,
        ),
    ),
)


def apply_migrations(store: AnalyticsStore) -> list[int]:
    """Apply every migration not yet recorded; return the versions applied now."""
    db = store.database
    store.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    store.command(
        f"""CREATE TABLE IF NOT EXISTS {db}.schema_migrations (
                version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
            ) ENGINE = ReplacingMergeTree ORDER BY version"""
    )
    done = {int(r["version"]) for r in store.query(f"SELECT version FROM {db}.schema_migrations FINAL")}
    applied = []
    for m in MIGRATIONS:
        if m.version in done:
            continue
        for stmt in m.statements:
            store.command(stmt.format(db=db))
        store.insert(f"{db}.schema_migrations", [{"version": m.version, "name": m.name}])
        applied.append(m.version)
    return applied
