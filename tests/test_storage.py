"""Both ClickHouse backends (embedded chdb; clickhouse-connect over HTTP, against
`tessera sql serve` or a real server): DDL migrations, batch writes, reads, dedup of
retried batches, exact decimals, errors, raw formats."""

from __future__ import annotations

from decimal import Decimal

import pytest
from tests.samples import SAMPLES

from tessera.storage.ddl import MIGRATIONS, apply_migrations
from tessera.storage.rows import event_row
from tessera.storage.store import StorageError, open_store


@pytest.fixture
def store(any_backend_settings):
    st = open_store(any_backend_settings)
    apply_migrations(st)
    return st


def test_migrations_are_idempotent_and_recorded(any_backend_settings):
    st = open_store(any_backend_settings)
    assert apply_migrations(st) == [m.version for m in MIGRATIONS]
    assert apply_migrations(st) == []
    rows = st.query(f"SELECT version FROM {st.database}.schema_migrations FINAL ORDER BY version")
    assert [int(r["version"]) for r in rows] == [m.version for m in MIGRATIONS]


def test_a_database_from_before_the_gpu_columns_upgrades(any_backend_settings):
    """Migration 2's views gained GPU columns after some databases had applied it (and a
    view made IF NOT EXISTS is never made again): migration 6 makes them anew, so the
    views built on them work there too."""
    st = open_store(any_backend_settings)
    db = st.database
    st.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    st.command(f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, "
               f"applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY version")
    for m in MIGRATIONS[:5]:
        for stmt in m.statements:
            st.command(stmt.format(db=db)
                       .replace("JSONExtractUInt(payload, 'per_replica', 'gpu')          AS gpu_per_replica,", "")
                       .replace("argMax(gpu, event_time) AS gpu,", "")
                       .replace("any(gpu_per_replica) AS gpu_per_replica", "0 AS gpu_per_replica"))
        st.insert(f"{db}.schema_migrations", [{"version": m.version, "name": m.name}])
    assert "gpu_per_replica" not in {r["name"] for r in st.query(f"DESCRIBE TABLE {db}.v_placements")}
    assert apply_migrations(st) == [6]
    assert "gpu_per_replica" in {r["name"] for r in st.query(f"DESCRIBE TABLE {db}.v_placements")}
    assert st.query(f"SELECT count() AS n FROM {db}.v_allocation_usage") == [{"n": 0}]


def test_write_and_read_event_rows(store):
    db = store.database
    rows = [event_row(e, topic="t", partition=0, offset=i, key=e.key()) for i, e in enumerate(SAMPLES.values())]
    assert store.insert(f"{db}.events", rows) == len(rows)
    got = store.query(f"SELECT event_type, event_time, offset FROM {db}.events FINAL ORDER BY offset")
    assert [r["event_type"] for r in got] == [e.event_type for e in SAMPLES.values()]
    assert got[0]["event_time"] == "2026-11-01 12:00:00.000000"  # UTC, microseconds kept


def test_retried_batch_with_same_token_is_written_once(store):
    db = store.database
    rows = [event_row(SAMPLES["workload.request"], topic="t", partition=3, offset=10, key=b"req-1")]
    store.insert(f"{db}.events", rows, dedup_token="events/t/3/10-10")
    store.insert(f"{db}.events", rows, dedup_token="events/t/3/10-10")
    assert store.query(f"SELECT count() AS n FROM {db}.events")[0]["n"] == 1
    # A redelivery in a differently cut batch gets another token; FINAL still counts it once.
    store.insert(f"{db}.events", rows, dedup_token="events/t/3/9-10")
    assert store.query(f"SELECT count() AS n FROM {db}.events FINAL")[0]["n"] == 1


def test_decimal_money_is_exact_in_clickhouse(store):
    db = store.database
    store.command(f"CREATE TABLE {db}.money (id UInt32, amount Decimal(38, 9)) ENGINE = MergeTree ORDER BY id")
    amounts = [Decimal("0.000000001"), Decimal("12345678901234.123456789"), Decimal("0.1"), Decimal("0.2")]
    store.insert(f"{db}.money", [{"id": i, "amount": a} for i, a in enumerate(amounts)])
    total = store.query(f"SELECT toString(sum(amount)) AS s FROM {db}.money")[0]["s"]
    assert Decimal(total) == sum(amounts)


def test_sql_errors_are_reported_with_the_engine_message(store):
    with pytest.raises(StorageError, match="UNKNOWN_TABLE|does not exist"):
        store.query(f"SELECT * FROM {store.database}.no_such_table")


def test_raw_formats(store):
    out = store.query_raw("SELECT 1 AS one, 'x' AS s", "CSVWithNames")
    assert out.decode().splitlines() == ['"one","s"', '1,"x"']
