"""`tessera sql ddl --cluster NAME`: the DDL for a ClickHouse cluster, parsed by the real
engine (chdb's formatQuery: no cluster here to run it on, but every statement must be
valid ClickHouse), and the single-server DDL equal to what the store applies."""

from __future__ import annotations

from tessera.app.cli.main import main
from tessera.storage.ddl import statements
from tessera.storage.store import open_store


def _parses(store, stmt: str) -> str:
    quoted = stmt.replace("\\", "\\\\").replace("'", "\\'")
    return store.query(f"SELECT formatQuery('{quoted}') AS q")[0]["q"]


def test_the_cluster_ddl_is_valid_clickhouse_and_replicates_and_shards_every_table(base_settings):
    store = open_store(base_settings)
    ddl = statements("tessera", "prod")
    formatted = [_parses(store, s) for s in ddl]           # raises on a syntax error
    assert all("ON CLUSTER prod" in f for f in formatted)
    tables = [f for f in formatted if "MergeTree" in f]
    assert tables and all("ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/tessera/" in f for f in tables)
    distributed = [f for f in formatted if "Distributed(" in f]
    assert {d.split("CREATE TABLE IF NOT EXISTS ")[1].split(" ")[0] for d in distributed} == \
        {"tessera.events", "tessera.dead_letters"}
    assert all("cityHash64(event_id)" in d for d in distributed)
    assert not any("non_replicated_deduplication_window" in f for f in formatted)
    views = [f for f in formatted if f.startswith("CREATE VIEW")]
    assert len(views) >= 14


def test_the_single_server_ddl_applies_on_the_embedded_engine(base_settings, capsys):
    store = open_store(base_settings.replace(clickhouse_database="ddlcheck"))
    for stmt in statements("ddlcheck"):
        store.command(stmt)
    assert store.query("SELECT count() AS n FROM ddlcheck.v_placements")[0]["n"] in (0, "0")
    assert main(["sql", "ddl", "--cluster", "prod"]) == 0
    assert "ENGINE = Distributed('prod', 'tessera', 'events_local', cityHash64(event_id))" in capsys.readouterr().out
