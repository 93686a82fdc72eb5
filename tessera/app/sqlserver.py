"""The ClickHouse HTTP interface over the embedded engine (``tessera sql serve``).

A ClickHouse server cannot be installed everywhere Tessera runs, but its HTTP interface
is what ClickHouse tools speak (clickhouse-connect, curl, Grafana's plugin, DBeaver's
HTTP driver). This module serves that interface over the embedded chdb store, so those
tools query and insert into the same database Tessera's agents write:

- ``GET /ping`` and ``GET /`` answer ``Ok.``;
- queries by GET or POST, in the ``query`` parameter and/or the body (ClickHouse's rule:
  the body continues the ``query`` parameter); ``database`` and ``default_format``
  parameters; other parameters are ClickHouse settings, applied with ``SET``;
- any output format the engine has (Native, RowBinaryWithNamesAndTypes, JSON, CSV,
  TabSeparated, ...): a query's own ``FORMAT`` clause wins, else ``default_format``, else
  TabSeparated;
- inserts as ``INSERT ... FORMAT <fmt>`` with the data in the body, in any input format
  (binary ones included: the body is spilled to a temporary file and inserted with
  ``INSERT ... SELECT * FROM file(...)``); bodies compressed with gzip, deflate, zstd,
  lz4 or br (``Content-Encoding``);
- errors as HTTP 4xx/5xx with ClickHouse's ``Code: N. DB::Exception: ...`` text and the
  ``X-ClickHouse-Exception-Code`` header; ``X-ClickHouse-Summary``, ``-Query-Id``,
  ``-Format`` and ``-Timezone`` headers on every answer;
- loopback only unless told otherwise; optional user and password (HTTP basic auth,
  ``X-ClickHouse-User`` / ``X-ClickHouse-Key`` headers, or ``user`` / ``password``
  parameters).

Requests are served one at a time against the engine (it is one embedded process);
HTTP handling itself is threaded.
"""

from __future__ import annotations

import base64
import gzip
import hmac
import logging
import os
import re
import tempfile
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

import orjson

from tessera.storage.store import ChdbStore

log = logging.getLogger(__name__)

#: Parameters that are about the HTTP exchange, not ClickHouse settings.
TRANSPORT_PARAMS = {"query", "database", "default_format", "user", "password", "query_id", "session_id",
                    "session_timeout", "session_check", "compress", "decompress", "quota_key", "buffer_size",
                    "wait_end_of_query", "enable_http_compression", "send_progress_in_http_headers",
                    "http_headers_progress_interval_ms", "client_protocol_version", "role",
                    "http_zlib_compression_level", "add_http_cors_header", "http_native_compression_disable_checksumming_on_decompress"}
_FORMAT_AT_END = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
_INSERT_FORMAT = re.compile(r"^\s*INSERT\s+INTO\s+(?P<target>.+?)\s+FORMAT\s+(?P<fmt>[A-Za-z0-9_]+)\s*(?P<rest>.*)$",
                            re.IGNORECASE | re.DOTALL)
_INSERT_HEAD = re.compile(rb"^\s*INSERT\s+INTO\s+.+?\sFORMAT\s+[A-Za-z0-9_]+", re.IGNORECASE | re.DOTALL)
_SETTINGS_IN_INSERT = re.compile(r"\s+SETTINGS\s+(?P<settings>.+)$", re.IGNORECASE | re.DOTALL)
_CODE = re.compile(r"Code:\s*(\d+)")
_TEXT_FORMATS = {"tabseparated", "tsv", "csv", "json", "jsoneachrow", "jsoncompact", "values", "pretty"}
_CONTENT_TYPES = {"JSON": "application/json", "JSONEachRow": "application/x-ndjson", "CSV": "text/csv",
                  "CSVWithNames": "text/csv", "TabSeparated": "text/tab-separated-values",
                  "TabSeparatedWithNames": "text/tab-separated-values"}
#: ClickHouse error codes answered with 4xx rather than 500 (as the server does).
_CLIENT_ERRORS = {62: 400, 47: 404, 60: 404, 81: 404, 46: 404, 115: 400, 27: 400, 26: 400, 6: 400, 53: 400,
                  36: 400, 43: 400, 516: 403, 497: 403}


class SqlError(Exception):
    def __init__(self, message: str, code: int = 1000, status: int = 500) -> None:
        super().__init__(message)
        self.code, self.status = code, status


def decompress(body: bytes, encoding: str) -> bytes:
    enc = encoding.strip().lower()
    if not enc or enc == "identity":
        return body
    try:   # zstd, lz4 and brotli are optional packages: imported when a client uses them
        if enc == "gzip":
            return gzip.decompress(body)
        if enc == "deflate":
            return zlib.decompress(body)
        if enc == "zstd":
            import zstandard
            return zstandard.ZstdDecompressor().decompressobj().decompress(body)
        if enc == "lz4":
            import lz4.frame
            return lz4.frame.decompress(body)
        if enc == "br":
            import brotli  # type: ignore[import-not-found]
            return brotli.decompress(body)
    except ImportError:
        raise SqlError(f"Code: 1001. DB::Exception: Content-Encoding {enc} is not supported here", 1001, 415) \
            from None
    except Exception as exc:
        raise SqlError(f"Code: 1001. DB::Exception: cannot decompress {enc} body: {exc}", 1001, 400) from None
    raise SqlError(f"Code: 1001. DB::Exception: unknown Content-Encoding {encoding!r}", 1001, 415)


def _quote(v: str) -> str:
    if re.fullmatch(r"-?\d+(\.\d+)?", v):
        return v
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Engine:
    """Runs one request's statements on the embedded store, serialised."""

    def __init__(self, store: ChdbStore) -> None:
        self.store = store
        self.default_database = store.database
        self._run: Callable[[str, str], bytes] | None = None   # set while a request holds the engine

    def _q(self, sql: str, fmt: str = "TabSeparated") -> bytes:
        assert self._run is not None, "statements run inside execute()"
        try:
            return self._run(sql, fmt)
        except Exception as exc:
            text = str(exc).strip()
            m = _CODE.search(text)
            code = int(m.group(1)) if m else 1000
            if not text.startswith("Code:"):
                text = f"Code: {code}. DB::Exception: {text}"
            raise SqlError(text, code, _CLIENT_ERRORS.get(code, 500)) from None

    def execute(self, query: str, body: bytes, params: dict[str, str]) -> tuple[bytes, str, dict[str, Any]]:
        """(result bytes, output format, summary) of one HTTP request."""
        started = time.perf_counter()
        settings = {k: v for k, v in params.items() if k not in TRANSPORT_PARAMS and not k.startswith("param_")}
        with self.store.exclusive() as self._run:
            self._q(f"USE {params.get('database') or self.default_database}")
            for k, v in settings.items():
                if not re.fullmatch(r"[A-Za-z0-9_]+", k):
                    raise SqlError(f"Code: 115. DB::Exception: Unknown setting {k!r}", 115, 400)
                self._q(f"SET {k} = {_quote(v)}")
            if not query:
                # No query parameter: the body holds the query; after an INSERT's FORMAT
                # clause it holds the data (possibly binary).
                head = _INSERT_HEAD.match(body)
                if head:
                    query, body = head.group(0).decode(), body[head.end():]
                    if body[:1] in (b"\n", b" "):
                        body = body[1:]
            ins = _INSERT_FORMAT.match(query) if (body or query and _INSERT_HEAD.match(query.encode())) else None
            if ins:
                out, fmt, written = self._insert(ins, body), "TabSeparated", True
            else:
                sql = (query + ("\n" + body.decode() if body else "")) if query else body.decode()
                if not sql.strip():
                    raise SqlError("Code: 62. DB::Exception: Empty query", 62, 400)
                m = _FORMAT_AT_END.search(sql)
                fmt = m.group(1) if m else params.get("default_format") or "TabSeparated"
                out = self._q(sql, fmt)
                written = sql.lstrip().upper().startswith("INSERT")
        elapsed = time.perf_counter() - started
        summary = {"read_rows": "0", "read_bytes": "0", "written_rows": "0", "written_bytes": "0",
                   "total_rows_to_read": "0", "result_rows": "0", "result_bytes": str(len(out)),
                   "elapsed_ns": str(int(elapsed * 1e9))}
        if written:
            summary["written_bytes"] = str(len(body))
        return out, fmt, summary

    def _insert(self, m: re.Match, body: bytes) -> bytes:
        target, fmt, rest = m.group("target").strip(), m.group("fmt"), m.group("rest")
        settings = ""
        s = _SETTINGS_IN_INSERT.search(target)
        if s:
            settings, target = " SETTINGS " + s.group("settings"), target[: s.start()]
        if rest.strip():   # data inline after FORMAT, then more in the body
            body = rest.encode() + b"\n" + body
        if fmt.lower() in _TEXT_FORMATS or fmt.lower().startswith(("jsoneachrow", "csv", "tabseparated")):
            return self._q(f"INSERT INTO {target}{settings} FORMAT {fmt}\n" + body.decode())
        # Binary formats cannot ride inside the SQL text: spill and read them back with file().
        fd, path = tempfile.mkstemp(prefix="tessera-insert-", suffix="." + fmt.lower())
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
            cols = ""
            cm = re.match(r"^(?P<table>[^\s(]+)\s*\((?P<cols>.*)\)\s*$", target, re.DOTALL)
            if cm:
                target, cols = cm.group("table"), cm.group("cols")
            select = f"SELECT * FROM file('{path}', '{fmt}')"
            sql = f"INSERT INTO {target}{' (' + cols + ')' if cols else ''}{settings} {select}"
            return self._q(sql)
        finally:
            os.unlink(path)


def make_handler(engine: Engine, user: str | None, password: str | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "Tessera-chdb-HTTP"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("%s - " + fmt, self.address_string(), *args)

        def _params(self) -> dict[str, str]:
            return dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))

        def _authorised(self, params: dict[str, str]) -> bool:
            if password is None and user is None:
                return True
            u = self.headers.get("X-ClickHouse-User") or params.get("user")
            p = self.headers.get("X-ClickHouse-Key") or params.get("password")
            auth = self.headers.get("Authorization", "")
            if auth.lower().startswith("basic "):
                try:
                    u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
                except Exception:
                    return False
            return hmac.compare_digest(u or "default", user or "default") and \
                hmac.compare_digest(p or "", password or "")

        def _body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():   # clickhouse-connect streams inserts
                parts = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(parts)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _handle(self, method: str) -> None:
            params = self._params()
            query_id = params.get("query_id") or str(uuid.uuid4())
            base = {"X-ClickHouse-Query-Id": query_id, "X-ClickHouse-Timezone": "UTC",
                    "X-ClickHouse-Server-Display-Name": "tessera-chdb", "Connection": "keep-alive"}
            raw = self._body()
            path = urlsplit(self.path).path
            if path in ("/ping", "/replicas_status") or (path == "/" and method == "GET" and "query" not in params):
                self._send(200, b"Ok.\n", {**base, "Content-Type": "text/plain; charset=UTF-8"})
                return
            try:
                if not self._authorised(params):
                    raise SqlError("Code: 516. DB::Exception: Authentication failed: password is incorrect, "
                                   "or there is no user with such name.", 516, 403)
                body = decompress(raw, self.headers.get("Content-Encoding", ""))
                if method == "GET" and body:
                    body = b""
                out, fmt, summary = engine.execute(params.get("query", ""), body, params)
            except UnicodeDecodeError:
                exc = SqlError("Code: 27. DB::Exception: the query is not valid UTF-8", 27, 400)
                self._send(exc.status, str(exc).encode() + b"\n", {**base, "X-ClickHouse-Exception-Code": "27"})
                return
            except SqlError as exc:
                msg = str(exc).rstrip() + "\n"
                self._send(exc.status, msg.encode(), {**base, "X-ClickHouse-Exception-Code": str(exc.code),
                                                       "Content-Type": "text/plain; charset=UTF-8"})
                return
            headers = {**base, "X-ClickHouse-Format": fmt, "X-ClickHouse-Summary": orjson.dumps(summary).decode(),
                       "Content-Type": _CONTENT_TYPES.get(fmt, "application/octet-stream")
                       if fmt not in _CONTENT_TYPES else _CONTENT_TYPES[fmt] + "; charset=UTF-8"}
            self._send(200, out, headers)

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            self._handle("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._handle("POST")

    return Handler


class SqlServer:
    """A running ClickHouse-HTTP server over an embedded store (a thread, or the foreground)."""

    def __init__(self, store: ChdbStore, host: str = "127.0.0.1", port: int = 8123,
                 user: str | None = None, password: str | None = None) -> None:
        self.engine = Engine(store)
        self.httpd = ThreadingHTTPServer((host, port), make_handler(self.engine, user, password))
        self.httpd.daemon_threads = True
        self.host, self.port = host, self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "SqlServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="tessera-sql-serve", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


