"""Analytics storage: one small interface, two ClickHouse backends.

* ``ChdbStore``   -- the real ClickHouse engine embedded in-process (chdb), on-disk
                     database directory. The default: nothing to install or run.
* ``ServerStore`` -- a ClickHouse server over HTTP through clickhouse-connect,
                     selected by ``TESSERA_CLICKHOUSE_URL``.

Both move rows as JSONEachRow so the SQL, the DDL and the row shapes are identical.
chdb allows one database path per process, so ``open_store`` hands out one shared
instance per process.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol
from urllib.parse import urlparse

import orjson

from tessera.config import Settings, mask_url
from tessera.schemas.codec import json_default


class StorageError(RuntimeError):
    """A query or insert failed; carries the backend's message."""


def rows_to_jsoneachrow(rows: Iterable[Mapping[str, Any]]) -> bytes:
    opts = orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE | orjson.OPT_NAIVE_UTC
    return b"".join(orjson.dumps(r, default=json_default, option=opts) for r in rows)


def parse_jsoneachrow(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in data.splitlines() if line]


def _settings_clause(settings: Mapping[str, Any] | None) -> str:
    if not settings:
        return ""
    parts = []
    for k, v in settings.items():
        val = f"'{v}'" if isinstance(v, str) else str(v)
        parts.append(f"{k}={val}")
    return " SETTINGS " + ", ".join(parts)


def _insert_settings(dedup_token: str | None) -> dict[str, Any]:
    # RFC 3339 timestamps with 'Z' and fractions, as orjson writes them.
    out: dict[str, Any] = {"date_time_input_format": "best_effort"}
    if dedup_token:
        out["insert_deduplication_token"] = dedup_token
    return out


class AnalyticsStore(Protocol):
    backend: str
    database: str

    def command(self, sql: str) -> None:
        """Run a statement that returns nothing (DDL, INSERT ... SELECT)."""

    def query(self, sql: str) -> list[dict[str, Any]]:
        """Run a SELECT; rows as dicts (ClickHouse JSON types: 64-bit ints come back as strings)."""

    def query_raw(self, sql: str, fmt: str = "TabSeparatedWithNames") -> bytes:
        """Run a query and return the bytes ClickHouse produced in ``fmt``."""

    def insert(self, table: str, rows: Iterable[Mapping[str, Any]], *, dedup_token: str | None = None) -> int:
        """Insert rows (dicts keyed by column). ``dedup_token`` makes a retried insert a no-op."""

    def close(self) -> None: ...


_sessions: dict[str, tuple[Any, threading.Lock]] = {}
_sessions_lock = threading.Lock()


def _runner(target: Any) -> Callable[[str, str], bytes]:
    """``run(sql, fmt) -> bytes`` over a chdb session or connection (an empty answer is b"")."""
    def run(sql: str, fmt: str = "TabSeparated") -> bytes:
        res = target.query(sql, fmt)
        return res.bytes() if res is not None else b""
    return run


class ChdbStore:
    backend = "chdb"

    def __init__(self, path: Path, database: str = "tessera") -> None:
        try:   # imported here: a process that uses a server never loads the embedded engine (~1 s, 300 MB)
            from chdb import session as chdb_session
        except ImportError as exc:  # pragma: no cover - the 'embedded' extra
            raise StorageError("the embedded ClickHouse needs the 'embedded' extra: pip install "
                               "'tessera[embedded]' (or set TESSERA_CLICKHOUSE_URL to a server)") from exc
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.database = database
        key = str(self.path.resolve())
        with _sessions_lock:
            shared = _sessions.get(key)
            if shared is None:
                try:
                    shared = _sessions[key] = (chdb_session.Session(key), threading.Lock())
                except Exception as exc:
                    raise StorageError(
                        f"cannot open embedded ClickHouse at {self.path}: {exc}. One process can open only one "
                        "chdb path; stop the other Tessera process using it or set TESSERA_DATA_DIR."
                    ) from exc
        # One engine session per path and process, shared by every store on it (and by
        # `tessera sql serve`): chdb's engine is a process-wide singleton, and several
        # sessions on one path crash it at exit.
        self._session, self._lock = shared
        self._readers: queue.Queue = queue.Queue()   # idle reader connections (see reader())
        self.command(f"CREATE DATABASE IF NOT EXISTS {database}")

    def _run(self, sql: str, fmt: str = "CSV") -> bytes:
        try:
            with self.exclusive() as run:
                return run(sql, fmt)
        except Exception as exc:
            raise StorageError(str(exc)) from exc

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[Callable[[str, str], bytes]]:
        """The engine to oneself for several statements (``tessera sql serve`` runs a
        request's ``USE``, ``SET`` and query together): yields ``run(sql, fmt) -> bytes``,
        which raises what chdb raises (its text carries ClickHouse's error code)."""
        with self._lock:
            yield _runner(self._session)

    @contextlib.contextmanager
    def reader(self) -> Iterator[Callable[[str, str], bytes]]:
        """A connection of the reader pool for several statements, concurrently with other
        readers and with the writers' session (the engine is one per process; connections
        to its path share its data and keep their own settings). Yields ``run`` as
        ``exclusive`` does."""
        try:
            conn = self._readers.get_nowait()
        except queue.Empty:
            from chdb import connect  # the module is loaded already (the session above)

            conn = connect(str(self.path.resolve()))

        try:
            yield _runner(conn)
        finally:
            self._readers.put(conn)

    def command(self, sql: str) -> None:
        self._run(sql)

    def query(self, sql: str) -> list[dict[str, Any]]:
        return parse_jsoneachrow(self._run(sql, "JSONEachRow"))

    def query_raw(self, sql: str, fmt: str = "TabSeparatedWithNames") -> bytes:
        return self._run(sql, fmt)

    def insert(self, table: str, rows: Iterable[Mapping[str, Any]], *, dedup_token: str | None = None) -> int:
        body = rows_to_jsoneachrow(rows)
        if not body:
            return 0
        self._run(f"INSERT INTO {table}{_settings_clause(_insert_settings(dedup_token))} FORMAT JSONEachRow\n"
                  + body.decode())
        return body.count(b"\n")

    def close(self) -> None:
        # chdb cannot reopen another path in this process; keep the session for reuse.
        pass


class ServerStore:
    backend = "clickhouse-server"

    def __init__(self, url: str, database: str = "tessera", ca_file: str = "", readonly: bool = False) -> None:
        """``ca_file``: the CA that signed an https server's certificate, when it is not one
        the system trusts (a company CA, or `tessera sql serve --tls-cert`'s). ``readonly``:
        only read (a reader such as the dashboard; a read-only endpoint refuses DDL)."""
        try:   # imported here: only a process configured for a server needs the client
            import clickhouse_connect
        except ImportError as exc:  # pragma: no cover
            raise StorageError("a ClickHouse server needs `pip install clickhouse-connect`") from exc
        u = urlparse(url)
        self.database = (u.path.strip("/") or database)
        try:
            self._client = clickhouse_connect.get_client(
                host=u.hostname or "localhost",
                port=u.port or (8443 if u.scheme == "https" else 8123),
                username=u.username or "default",
                password=u.password or "",
                secure=u.scheme == "https",
                verify=True,
                **({"ca_cert": ca_file} if ca_file and u.scheme == "https" else {}),
            )
        except Exception as exc:
            raise StorageError(f"cannot reach ClickHouse at {u.scheme}://{u.hostname}:{u.port}: "
                               f"{mask_url(str(exc))}") from exc
        # A clickhouse-connect client carries one HTTP session, which refuses concurrent
        # queries; agents insert from worker threads while others query, so calls are serialised.
        self._lock = threading.Lock()
        if not readonly:
            self.command(f"CREATE DATABASE IF NOT EXISTS {self.database}")

    def command(self, sql: str) -> None:
        try:
            with self._lock:
                self._client.command(sql)
        except Exception as exc:
            raise StorageError(str(exc)) from exc

    def query_raw(self, sql: str, fmt: str = "TabSeparatedWithNames") -> bytes:
        try:
            with self._lock:
                return self._client.raw_query(sql, fmt=fmt)
        except Exception as exc:
            raise StorageError(str(exc)) from exc

    def query(self, sql: str) -> list[dict[str, Any]]:
        return parse_jsoneachrow(self.query_raw(sql, "JSONEachRow"))

    def insert(self, table: str, rows: Iterable[Mapping[str, Any]], *, dedup_token: str | None = None) -> int:
        body = rows_to_jsoneachrow(rows)
        if not body:
            return 0
        try:
            with self._lock:
                self._client.raw_insert(table, insert_block=body, settings=_insert_settings(dedup_token),
                                        fmt="JSONEachRow")
        except Exception as exc:
            raise StorageError(str(exc)) from exc
        return body.count(b"\n")

    def close(self) -> None:
        self._client.close()


_stores: dict[tuple[str, str, bool], AnalyticsStore] = {}
_stores_lock = threading.Lock()


def open_store(settings: Settings, *, readonly: bool = False) -> AnalyticsStore:
    """The process's store for these settings (created once, then shared). ``readonly``
    (a server only): a reader that creates nothing, e.g. over a worker's read-only SQL port."""
    target = settings.clickhouse_url or str(settings.chdb_path)
    readonly = readonly and bool(settings.clickhouse_url)
    key = (target, settings.clickhouse_database, readonly)
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            if settings.clickhouse_url:
                store = ServerStore(settings.clickhouse_url, settings.clickhouse_database,
                                    ca_file=settings.clickhouse_ca_file, readonly=readonly)
            else:
                store = ChdbStore(settings.chdb_path, settings.clickhouse_database)
            _stores[key] = store
        return store


def exit_skipping_chdb_teardown(code: int) -> None:
    """End the process now if the embedded engine was loaded; return otherwise.

    chdb's C++ global teardown can crash at interpreter exit after all work is done
    ("ShutdownTablesThreadPool is not initialized", then SIGSEGV; upstream:
    chdb-io/chdb-core#177, residual exit SIGSEGV while engine threads are still live),
    turning a finished command or a green test run red. Its data is on disk already
    (MergeTree writes parts at insert), so skipping the teardown loses nothing; output
    streams are flushed first."""
    if "chdb" not in sys.modules:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
