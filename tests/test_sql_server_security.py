"""`tessera sql serve` refuses by default what it does not need to allow: one test per
rule. Error codes are ClickHouse's (164 READONLY, 497 ACCESS_DENIED, 516 authentication,
159 TIMEOUT_EXCEEDED), so clients react as they would to a real server."""

from __future__ import annotations

import gzip
import logging
import socket
import ssl
import subprocess
import threading
from pathlib import Path
from urllib.parse import urlencode

import pytest
from tests.test_sql_server import http

import tessera.app.sqlserver as ss
from tessera.app.cli.main import main
from tessera.app.sqlserver import SqlError, SqlServer
from tessera.storage.store import ChdbStore


@pytest.fixture
def store(base_settings):
    s = ChdbStore(base_settings.chdb_path, "default")
    s.command("CREATE DATABASE IF NOT EXISTS sec")
    s.command("CREATE TABLE IF NOT EXISTS sec.t (a UInt64) ENGINE = MergeTree ORDER BY a")
    s.command("INSERT INTO sec.t SELECT number FROM numbers(10)")
    return s


@pytest.fixture
def server(store):
    srv = SqlServer(store, port=0).start()
    yield srv
    srv.stop()


def q(url: str, sql: str, **params) -> str:
    return url + "/?" + urlencode({"query": sql, **params})


def test_readonly_by_default_writes_only_with_the_flag(store, server):
    for sql in ("CREATE TABLE sec.x (a Int8) ENGINE = Memory", "INSERT INTO sec.t VALUES (99)", "DROP TABLE sec.t",
                "SYSTEM FLUSH LOGS", "SET readonly = 0", "KILL QUERY WHERE 1", "OPTIMIZE TABLE sec.t"):
        status, headers, body = http(server.url + "/", sql.encode())
        assert status == 403 and headers["X-ClickHouse-Exception-Code"] == "164", (sql, body)
    assert http(q(server.url, "SELECT count() FROM sec.t"))[2] == b"10\n"
    writer = SqlServer(store, port=0, allow_writes=True).start()
    try:
        assert http(writer.url + "/", b"INSERT INTO sec.t VALUES (99)")[0] == 200
        assert http(q(writer.url, "INSERT INTO sec.t VALUES (98)"))[0] == 403, "GET never writes"
    finally:
        writer.stop()


@pytest.mark.parametrize("sql", [
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT file('/etc/passwd')",
    "SELECT * FROM url('http://127.0.0.1:1/', 'CSV', 'a String')",
    "SELECT * FROM s3('http://127.0.0.1:1/b/k.csv', 'CSV', 'a String')",
    "SELECT * FROM executable('id', 'TSV', 'a String')",
    "SELECT * FROM remote('127.0.0.1', system.one)",
    "SELECT * FROM (SELECT * FROM file('/etc/hostname', 'LineAsString'))",
    "SELECT 1 INTO OUTFILE '/tmp/tessera-outfile-test.txt'",
    "SELECT 1; SELECT 2",
])
def test_nothing_reaches_the_host(server, sql):
    status, headers, body = http(server.url + "/", sql.encode())
    assert status in (400, 403), body
    assert b"root:" not in body


def test_no_file_is_written_even_with_writes_allowed(store, tmp_path):
    target = tmp_path / "evil.pth"
    writer = SqlServer(store, port=0, allow_writes=True).start()
    try:
        sql = f"INSERT INTO FUNCTION file('{target}', 'LineAsString') SELECT 'import os'"
        assert http(writer.url + "/", sql.encode())[0] == 403
        status, _, _ = http(writer.url + "/?" + urlencode({"query": f"INSERT INTO FUNCTION file('{target}', "
                                                                     "'LineAsString') FORMAT LineAsString"}),
                            b"import os\n")
        assert status == 403
    finally:
        writer.stop()
    assert not target.exists()


def test_settings_are_allow_listed_and_never_outlive_their_request(server):
    status, headers, _ = http(q(server.url, "SELECT 1", readonly="0"))
    assert status == 403 and headers["X-ClickHouse-Exception-Code"] == "164"
    status, headers, _ = http(q(server.url, "SELECT number FROM numbers(5)", max_result_rows="1"))
    assert status != 200 and headers["X-ClickHouse-Exception-Code"] == "396", "the setting applied"
    status, _, body = http(q(server.url, "SELECT number FROM numbers(5)"))
    assert body.count(b"\n") == 5, "the previous request's max_result_rows did not stick"


def test_every_query_has_a_time_limit(store):
    srv = SqlServer(store, port=0, max_execution_time_s=1).start()
    try:
        status, headers, body = http(q(srv.url, "SELECT sum(cityHash64(number)) FROM numbers(100000000000)"))
        assert status >= 400 and headers["X-ClickHouse-Exception-Code"] == "159", body
        status, _, _ = http(q(srv.url, "SELECT 1", max_execution_time="100000"))
        assert status == 200, "a larger limit than the server's is capped, not refused"
    finally:
        srv.stop()


def _raw(server: SqlServer, request: bytes) -> bytes:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except socket.timeout:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def test_authentication_comes_before_the_body_and_bodies_are_bounded(store):
    srv = SqlServer(store, port=0, user="ana", password="pässwörd").start()
    try:
        # Headers announce 1 GB; nothing more is sent: the answer must come without reading it.
        answer = _raw(srv, b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000000\r\n\r\n")
        assert answer.startswith(b"HTTP/1.0 403") or answer.startswith(b"HTTP/1.1 403")
        answer = _raw(srv, b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-ClickHouse-User: ana\r\n"
                           b"X-ClickHouse-Key: " + "pässwörd".encode() + b"\r\nContent-Length: 1000000000\r\n\r\n")
        assert b" 413 " in answer.split(b"\r\n")[0], "over the size limit, refused unread"
    finally:
        srv.stop()


def test_non_ascii_credentials_compare_as_bytes(store):
    import base64

    srv = SqlServer(store, port=0, user="ana", password="pässwörd").start()
    try:
        for password, want in (("pässwörd", 200), ("passwörd", 403), ("пароль", 403)):
            auth = base64.b64encode(f"ana:{password}".encode()).decode()
            assert http(q(srv.url, "SELECT 1"), headers={"Authorization": f"Basic {auth}"})[0] == want
    finally:
        srv.stop()


def test_compression_bombs_are_refused(server, monkeypatch):
    monkeypatch.setattr(ss, "MAX_DECOMPRESSED_BYTES", 1 << 20)
    bomb = gzip.compress(b"0" * (8 << 20))
    status, headers, _ = http(server.url + "/?" + urlencode({"query": "SELECT 1"}), bomb,
                              headers={"Content-Encoding": "gzip"})
    assert status == 413


def test_foreign_origins_and_hosts_are_refused(server):
    ok = q(server.url, "SELECT 1")
    assert http(ok, headers={"Origin": f"http://127.0.0.1:{server.port}"})[0] == 200
    # A web page elsewhere posting text/plain to loopback (no CORS preflight for it):
    assert http(server.url + "/", b"SELECT 1", headers={"Origin": "http://evil.example",
                                                         "Content-Type": "text/plain"})[0] == 403
    # DNS rebinding: the browser sends the attacker's host name.
    assert http(ok, headers={"Host": f"evil.example:{server.port}"})[0] == 403


def test_query_text_and_credentials_stay_out_of_logs(server, caplog):
    caplog.set_level(logging.DEBUG, logger="tessera.app.sqlserver")
    http(q(server.url, "SELECT 'secret-marker-42'", password="hunter2"))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "secret-marker-42" not in text and "hunter2" not in text


def test_no_listening_beyond_loopback_without_a_password(store, capsys, monkeypatch):
    with pytest.raises(SqlError, match="without a password"):
        SqlServer(store, host="0.0.0.0", port=0)
    monkeypatch.delenv("TESSERA_SQL_PASSWORD", raising=False)
    monkeypatch.setenv("TESSERA_CLICKHOUSE_URL", "")
    assert main(["sql", "serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "TESSERA_SQL_PASSWORD" in capsys.readouterr().err


def test_tls(store, tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    srv = SqlServer(store, port=0, certfile=str(cert), keyfile=str(key))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        assert srv.url.startswith("https://")
        import urllib.request

        ctx = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(q(srv.url, "SELECT 1"), context=ctx, timeout=10) as resp:
            assert resp.read() == b"1\n"
        with pytest.raises(Exception):
            urllib.request.urlopen(q(srv.url, "SELECT 1"), context=ssl.create_default_context(), timeout=10)
    finally:
        srv.stop()
    assert Path(cert).exists()


def test_the_server_backend_speaks_https_with_a_custom_ca(store, tmp_path, base_settings):
    """ClickHouse over https: the store trusts the CA it is given, and no other."""
    from tessera.storage.store import ServerStore, StorageError

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    srv = SqlServer(store, port=0, allow_writes=True, certfile=str(cert), keyfile=str(key))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        remote = ServerStore(f"{srv.url}/sec", ca_file=str(cert))
        assert int(remote.query("SELECT count() AS n FROM sec.t")[0]["n"]) >= 10
        with pytest.raises(StorageError):
            ServerStore(f"{srv.url}/sec")      # the system does not trust this CA
    finally:
        srv.stop()


def test_readers_do_not_wait_for_each_other(server):
    """A long query does not hold up a short one (each reader has a connection of its own)."""
    finished: list[str] = []

    def slow():
        http(q(server.url, "SELECT sleep(3)"))
        finished.append("slow")

    t = threading.Thread(target=slow)
    t.start()
    import time as _time

    _time.sleep(0.5)                       # the slow query is running
    assert http(q(server.url, "SELECT count() FROM sec.t"))[0] == 200
    finished.append("fast")
    t.join()
    assert finished == ["fast", "slow"]
