"""`tessera sql serve`: the ClickHouse HTTP interface over the embedded engine, exercised
with clickhouse-connect's own API and with raw HTTP as curl would send it."""

from __future__ import annotations

import gzip
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from urllib.parse import urlencode

import orjson
import pytest

from tessera.app.sqlserver import SqlServer
from tessera.storage.store import ChdbStore


def http(url: str, data: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture
def db(sql_server):
    name = f"http_{uuid.uuid4().hex[:8]}"
    status, _, body = http(sql_server.url + "/", f"CREATE DATABASE {name}".encode())
    assert status == 200, body
    return name


def test_clickhouse_connect_api_works_against_it(sql_server, db):
    import clickhouse_connect

    client = clickhouse_connect.get_client(host="127.0.0.1", port=sql_server.port, database=db)
    client.command("CREATE TABLE t (id UInt32, name String, at DateTime64(3, 'UTC'), price Decimal(18, 6)) "
                   "ENGINE = MergeTree ORDER BY id")
    rows = [[1, "a", datetime(2026, 1, 1, tzinfo=timezone.utc), "0.031611"],
            [2, "b", datetime(2026, 1, 2, tzinfo=timezone.utc), "12.5"]]
    from decimal import Decimal
    rows = [[i, n, at, Decimal(p)] for i, n, at, p in rows]
    client.insert("t", rows, column_names=["id", "name", "at", "price"])          # Native, compressed
    assert client.command("SELECT count() FROM t") == 2
    result = client.query("SELECT id, name, price FROM t ORDER BY id")
    assert result.result_rows == [(1, "a", Decimal("0.031611")), (2, "b", Decimal("12.5"))]
    df = client.query_df("SELECT id, name FROM t ORDER BY id")
    assert list(df["name"]) == ["a", "b"]
    with pytest.raises(Exception, match="Code: 60"):
        client.query("SELECT * FROM no_such_table")


def test_raw_http_formats_headers_and_errors(sql_server, db):
    base = sql_server.url
    assert http(base + "/ping")[2] == b"Ok.\n"
    status, headers, body = http(base + "/?" + urlencode({"query": "SELECT 1 AS one, 'x' AS s FORMAT JSON"}))
    assert status == 200 and orjson.loads(body)["data"] == [{"one": 1, "s": "x"}]
    assert headers["X-ClickHouse-Format"] == "JSON" and headers["X-ClickHouse-Timezone"] == "UTC"
    assert headers["X-ClickHouse-Query-Id"] and "elapsed_ns" in orjson.loads(headers["X-ClickHouse-Summary"])
    status, headers, body = http(base + "/?" + urlencode({"query": "SELECT 2 AS two", "default_format": "CSVWithNames"}))
    assert body == b'"two"\n2\n' and headers["X-ClickHouse-Format"] == "CSVWithNames"
    status, _, body = http(base + "/?" + urlencode({"query": "SELECT 7 AS n FORMAT RowBinaryWithNamesAndTypes"}))
    assert body.startswith(b"\x01\x01n\x05UInt8") and body.endswith(b"\x07")
    status, headers, body = http(base + "/?" + urlencode({"query": "SELECT * FROM nope.nothing"}))
    assert status == 404 and headers["X-ClickHouse-Exception-Code"] in ("60", "81")
    assert body.startswith(b"Code: ") and b"DB::Exception" in body
    status, headers, body = http(base + "/", b"SELEC 1")
    assert status == 400 and headers["X-ClickHouse-Exception-Code"] == "62"


def test_insert_with_data_in_the_body_compressed_and_database_parameter(sql_server, db):
    base = sql_server.url
    http(base + "/?" + urlencode({"database": db}), b"CREATE TABLE kv (k String, v Int64) ENGINE = MergeTree ORDER BY k")
    csv_rows = b"a,1\nb,2\nc,3\n"
    status, _, body = http(base + "/?" + urlencode({"database": db, "query": "INSERT INTO kv FORMAT CSV"}),
                           gzip.compress(csv_rows), {"Content-Encoding": "gzip"})
    assert status == 200, body
    status, _, body = http(base + "/?" + urlencode({"database": db, "query": "INSERT INTO kv FORMAT JSONEachRow"}),
                           b'{"k": "d", "v": 4}\n')
    assert status == 200, body
    status, _, body = http(base + "/?" + urlencode({"query": f"SELECT sum(v) FROM {db}.kv"}))
    assert body == b"10\n"


def test_user_and_password_are_enforced_when_configured(base_settings):
    store = ChdbStore(base_settings.chdb_path, "default")
    server = SqlServer(store, port=0, user="ana", password="s3cret", allow_writes=True).start()
    try:
        q = "/?" + urlencode({"query": "SELECT 1"})
        status, headers, body = http(server.url + q)
        assert status == 403 and headers["X-ClickHouse-Exception-Code"] == "516"
        status, _, body = http(server.url + q, headers={"X-ClickHouse-User": "ana", "X-ClickHouse-Key": "s3cret"})
        assert (status, body) == (200, b"1\n")
        import base64
        auth = base64.b64encode(b"ana:s3cret").decode()
        assert http(server.url + q, headers={"Authorization": f"Basic {auth}"})[0] == 200
    finally:
        server.stop()
