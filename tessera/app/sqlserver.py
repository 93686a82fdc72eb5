"""The ClickHouse HTTP interface over the embedded engine (``tessera sql serve``).

A ClickHouse server cannot be installed everywhere Tessera runs, but its HTTP interface
is what ClickHouse tools speak (clickhouse-connect, curl, Grafana's plugin, DBeaver's
HTTP driver). This module serves that interface over the embedded chdb store:

- ``GET /ping`` and ``GET /`` answer ``Ok.``; queries by GET or POST, in the ``query``
  parameter and/or the body (the body continues the ``query`` parameter); ``database``
  and ``default_format`` parameters; any output format the engine has;
- inserts as ``INSERT ... FORMAT <fmt>`` with the data in the body (binary formats too),
  bodies compressed with gzip, deflate, zstd or lz4;
- errors as HTTP 4xx/5xx with ClickHouse's ``Code: N. DB::Exception: ...`` text and the
  ``X-ClickHouse-Exception-Code`` header.

What it refuses, by default (it runs on the machine that holds the data):

- anything but reads; ``--allow-writes`` adds inserts and schema changes, by POST only;
- functions and table functions that reach the host or the network (``file``, ``url``,
  ``s3``, ``remote``, ``executable`` ...), ``INTO OUTFILE``, more than one statement per
  request; statements are classified by ClickHouse's own parser (``EXPLAIN AST``);
- settings outside an allow-list; the allowed ones apply to their request only, and every
  query runs under ``max_execution_time`` (60 s unless the server is told otherwise);
- requests from web pages of other origins (``Origin``) or for other host names (DNS
  rebinding), wrong credentials (compared as bytes, before any body is read), bodies over
  64 MiB and bodies that decompress to over 256 MiB;
- listening beyond loopback without a password (``TESSERA_SQL_PASSWORD`` or a password
  file, never the command line); query texts and credentials never reach the logs;
- HTTPS with ``--tls-cert``/``--tls-key``.

Readers run concurrently, each on a chdb connection of its own; a request that may write
holds the store's session, one at a time, as the store's own writers do.
"""

from __future__ import annotations

import base64
import hmac
import logging
import os
import re
import ssl
import tempfile
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable
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
_OUTFILE = re.compile(r"\bINTO\s+OUTFILE\b", re.IGNORECASE)
_FUNCTION_NODE = re.compile(r"^\s*Function (\w+)", re.MULTILINE)
_TEXT_FORMATS = {"tabseparated", "tsv", "csv", "json", "jsoneachrow", "jsoncompact", "values", "pretty"}
_CONTENT_TYPES = {"JSON": "application/json", "JSONEachRow": "application/x-ndjson", "CSV": "text/csv",
                  "CSVWithNames": "text/csv", "TabSeparated": "text/tab-separated-values",
                  "TabSeparatedWithNames": "text/tab-separated-values"}
#: ClickHouse error codes answered with 4xx rather than 500 (as the server does).
_CLIENT_ERRORS = {62: 400, 47: 404, 60: 404, 81: 404, 46: 404, 115: 400, 27: 400, 26: 400, 6: 400, 53: 400,
                  36: 400, 43: 400, 516: 403, 497: 403}


#: Table functions and functions that reach the host or the network: never served (a
#: SELECT from file('/etc/passwd') or an INSERT INTO FUNCTION file('x.pth') would hand out
#: or change the machine the store runs on).
HOST_FUNCTIONS = frozenset({
    "file", "filecluster", "filesystem", "url", "urlcluster", "s3", "s3cluster", "s3queue", "gcs", "oss", "cos",
    "azureblobstorage", "azureblobstoragecluster", "hdfs", "hdfscluster", "remote", "remotesecure", "cluster",
    "clusterallreplicas", "mysql", "postgresql", "sqlite", "mongodb", "redis", "jdbc", "odbc", "executable",
    "executablepool", "iceberg", "icebergs3", "icebergazure", "iceberghdfs", "iceberglocal", "deltalake",
    "deltalakeazure", "deltalakelocal", "hudi", "paimon", "arrowflight", "ytsaurus", "hive", "kafka", "nats",
    "rabbitmq",
})
#: Statement kinds served to readers (by the root node of ClickHouse's own parse).
READ_KINDS = ("SelectWithUnionQuery", "SelectIntersectExceptQuery", "ShowTables", "ShowColumns", "DescribeQuery",
              "ExistsTableQuery", "ExistsDatabaseQuery", "ShowCreate", "Explain")
#: Statement kinds served too when the server allows writes (--allow-writes): inserts
#: and schema changes, as Tessera's own store needs through a server (its migrations).
WRITE_KINDS = ("InsertQuery", "CreateQuery", "AlterQuery", "DropQuery", "RenameQuery", "OptimizeQuery")
#: Settings a request may give (as URL parameters), each for that request only.
ALLOWED_SETTINGS = frozenset({
    "max_result_rows", "max_result_bytes", "result_overflow_mode", "max_execution_time", "max_block_size",
    "max_rows_to_read", "max_bytes_to_read", "read_overflow_mode", "extremes", "join_use_nulls",
    "date_time_output_format", "date_time_input_format", "output_format_json_quote_64bit_integers",
    "output_format_json_quote_decimals", "output_format_json_quote_denormals", "output_format_pretty_max_rows",
    "output_format_write_statistics", "output_format_json_named_tuples_as_objects", "input_format_skip_unknown_fields",
    "input_format_null_as_default", "input_format_allow_errors_num", "input_format_allow_errors_ratio",
    "format_csv_delimiter", "max_threads", "timeout_overflow_mode", "session_timezone",
    "output_format_arrow_string_as_string", "output_format_native_encode_types_in_binary_format",
    "input_format_binary_decode_types_in_binary_format", "insert_deduplication_token", "insert_deduplicate",
    "async_insert", "wait_for_async_insert", "date_time_overflow_behavior",
    # sent by clickhouse-connect with every request
    "cancel_http_readonly_queries_on_client_close", "cast_string_to_dynamic_use_inference",
    "output_format_binary_write_json_as_string", "input_format_binary_read_json_as_string",
})
#: A query runs at most this long unless a request asks for less.
MAX_EXECUTION_TIME_S = 60
#: Request bodies (and what they decompress to) larger than these are refused.
MAX_BODY_BYTES = 64 << 20
MAX_DECOMPRESSED_BYTES = 256 << 20


class SqlError(Exception):
    def __init__(self, message: str, code: int = 1000, status: int = 500) -> None:
        super().__init__(message)
        self.code, self.status = code, status


def decompress(body: bytes, encoding: str, limit: int | None = None) -> bytes:
    """The body decoded, never larger than ``limit`` (default MAX_DECOMPRESSED_BYTES): a
    compression bomb is refused, not expanded (each decoder is asked for limit + 1 bytes)."""
    limit = MAX_DECOMPRESSED_BYTES if limit is None else limit
    enc = encoding.strip().lower()
    if not enc or enc == "identity":
        return body
    try:   # zstd, lz4 and brotli are optional packages: imported when a client uses them
        if enc in ("gzip", "deflate"):
            d = zlib.decompressobj(wbits=31 if enc == "gzip" else 15)
            out = d.decompress(body, limit + 1)
        elif enc == "zstd":
            import zstandard
            out = zstandard.ZstdDecompressor().decompress(body, max_output_size=limit + 1)
        elif enc == "lz4":
            import lz4.frame
            out = lz4.frame.LZ4FrameDecompressor().decompress(body, max_length=limit + 1)
        elif enc == "br":
            raise SqlError("Code: 1001. DB::Exception: Content-Encoding br is not served (it cannot be bounded "
                           "while decoding); use gzip, zstd or lz4", 1001, 415)
        else:
            raise SqlError(f"Code: 1001. DB::Exception: unknown Content-Encoding {encoding[:40]!r}", 1001, 415)
    except ImportError:
        raise SqlError(f"Code: 1001. DB::Exception: Content-Encoding {enc} is not supported here", 1001, 415) \
            from None
    except SqlError:
        raise
    except Exception as exc:
        raise SqlError(f"Code: 1001. DB::Exception: cannot decompress {enc} body: {exc}", 1001, 400) from None
    if len(out) > limit:
        raise SqlError(f"Code: 1002. DB::Exception: the body decompresses to over {limit:,} bytes", 1002, 413)
    return out


def _code_only(sql: str) -> str:
    """``sql`` with its string literals, quoted identifiers and comments blanked out (same
    length), so that what is left is the statement's own syntax."""
    out, i, n = list(sql), 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            j = i + 1
            while j < n and sql[j] != c:
                j += 2 if sql[j] == "\\" else 1
            end = min(j + 1, n)
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = n if end < 0 else end + 2
        else:
            i += 1
            continue
        out[i:end] = " " * (end - i)
        i = end
    return "".join(out)


def _allowed_settings(names: Iterable[str]) -> None:
    """Refuse a request that would change a setting outside ALLOWED_SETTINGS."""
    for name in names:
        if name not in ALLOWED_SETTINGS:
            raise SqlError(f"Code: 164. DB::Exception: setting {name[:64]!r} cannot be changed through this "
                           f"endpoint (allowed: {', '.join(sorted(ALLOWED_SETTINGS)[:8])}, ...)", 164, 403)


def _quote(v: str) -> str:
    if re.fullmatch(r"-?\d+(\.\d+)?", v):
        return v
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Engine:
    """Runs one request's statements on the embedded store, serialised."""

    def __init__(self, store: ChdbStore) -> None:
        self.store = store
        self.default_database = store.database
        self.max_execution_time_s = MAX_EXECUTION_TIME_S
        self._local = threading.local()   # .run: the connection the current thread's request holds

    def _q(self, sql: str, fmt: str = "TabSeparated") -> bytes:
        run = getattr(self._local, "run", None)
        assert run is not None, "statements run inside execute()"
        try:
            return run(sql, fmt)
        except Exception as exc:
            text = str(exc).strip()
            m = _CODE.search(text)
            code = int(m.group(1)) if m else 1000
            if not text.startswith("Code:"):
                text = f"Code: {code}. DB::Exception: {text}"
            raise SqlError(text, code, _CLIENT_ERRORS.get(code, 500)) from None

    def _settings(self, params: dict[str, str]) -> dict[str, str]:
        """The request's settings: allow-listed only, and a time limit always."""
        settings = {k: v for k, v in params.items() if k not in TRANSPORT_PARAMS and not k.startswith("param_")}
        _allowed_settings(settings)
        limit = settings.get("max_execution_time", "")
        if not (limit.isdigit() and 0 < int(limit) <= self.max_execution_time_s):
            settings["max_execution_time"] = str(self.max_execution_time_s)
        return settings

    def _check(self, sql: str, writable: bool) -> None:
        """Refuse what this endpoint does not serve, by ClickHouse's own parse of ``sql``:
        more than one statement, statements other than reads (and inserts, when writes are
        allowed), INTO OUTFILE, and functions that reach the host or the network."""
        text = sql.strip()
        code = _code_only(text).rstrip()
        if code.endswith(";"):
            code, text = code[:-1], text[: text.rstrip().rfind(";")]
        if ";" in code:
            raise SqlError("Code: 62. DB::Exception: one statement per request", 62, 400)
        if _OUTFILE.search(code):
            raise SqlError("Code: 497. DB::Exception: INTO OUTFILE is not served: the result is the HTTP answer",
                           497, 403)
        ast = self._q("EXPLAIN AST " + text, "TSVRaw").decode(errors="replace")
        root = ast.lstrip().split(" ", 1)[0] if ast.strip() else ""
        for name in _FUNCTION_NODE.findall(ast):
            if name.lower() in HOST_FUNCTIONS:
                raise SqlError(f"Code: 497. DB::Exception: {name}() reaches the host or the network and is not "
                               "served here", 497, 403)
        if root.startswith(READ_KINDS):
            return
        if writable and root.startswith(WRITE_KINDS):
            return
        what = ("reads, inserts and schema changes" if writable
                else "reads (start the server with --allow-writes for inserts and schema changes)")
        raise SqlError(f"Code: 164. DB::Exception: {root or 'this statement'} is not served: this endpoint "
                       f"serves {what}", 164, 403)

    def execute(self, query: str, body: bytes, params: dict[str, str], *, writable: bool = False
                ) -> tuple[bytes, str, dict[str, Any]]:
        """(result bytes, output format, summary) of one HTTP request. Its settings apply
        to it alone: they are put back as they were before the next request runs."""
        started = time.perf_counter()
        settings = self._settings(params)
        # Readers run concurrently, each on a connection of its own; a request that may write
        # holds the store's own session, as the store's writers do.
        with (self.store.exclusive() if writable else self.store.reader()) as self._local.run:
            before = self._current(settings)
            try:
                return self._execute(query, body, params, settings, writable, started)
            finally:
                for k, v in before.items():
                    self._q(f"SET {k} = {_quote(v)}")
                self._local.run = None

    def _current(self, settings: dict[str, str]) -> dict[str, str]:
        names = ", ".join(_quote(k) for k in settings)
        rows = self._q(f"SELECT name, value FROM system.settings WHERE name IN ({names})", "TSVRaw").decode()
        return dict(line.split("\t", 1) for line in rows.splitlines() if "\t" in line)

    def _execute(self, query: str, body: bytes, params: dict[str, str], settings: dict[str, str], writable: bool,
                 started: float) -> tuple[bytes, str, dict[str, Any]]:
        database = params.get("database") or self.default_database
        if not re.fullmatch(r"[A-Za-z0-9_]+", database):
            raise SqlError(f"Code: 81. DB::Exception: database {database[:64]!r} does not exist", 81, 404)
        self._q(f"USE {database}")
        for k, v in settings.items():
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
            self._check(f"INSERT INTO {ins.group('target').strip()} FORMAT {ins.group('fmt')}", writable)
            out, fmt, written = self._insert(ins, body), "TabSeparated", True
        else:
            sql = (query + ("\n" + body.decode() if body else "")) if query else body.decode()
            if not sql.strip():
                raise SqlError("Code: 62. DB::Exception: Empty query", 62, 400)
            self._check(sql, writable)
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
            _allowed_settings(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*=", s.group("settings")))
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


def make_handler(engine: Engine, user: str | None, password: str | None, *, allow_writes: bool = False,
                 hosts: frozenset[str] = frozenset()) -> type[BaseHTTPRequestHandler]:
    """The request handler. It refuses, before reading a body: requests whose Host is not
    one of ``hosts`` (DNS rebinding) or that come from a web page of another origin
    (``Origin``), wrong credentials, and bodies over MAX_BODY_BYTES."""
    want_user = (user or "default").encode()
    want_password = (password or "").encode()

    class Handler(BaseHTTPRequestHandler):
        server_version = "Tessera-chdb-HTTP"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:
            # The request line carries the query (and perhaps a password): log the path only.
            log.debug("%s %s %s", self.address_string(), self.command, urlsplit(self.path).path)

        def _params(self) -> dict[str, str]:
            return dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))

        def _authorised(self, params: dict[str, str]) -> bool:
            if password is None and user is None:
                return True
            # Compared as bytes, in constant time: header values arrive as latin-1 text (their
            # raw bytes, UTF-8 for a non-ASCII password), URL parameters as UTF-8.
            def header(name: str) -> bytes | None:
                value = self.headers.get(name)
                return value.encode("latin-1", "replace") if value is not None else None

            def param(name: str) -> bytes | None:
                value = params.get(name)
                return value.encode("utf-8", "surrogateescape") if value is not None else None

            u = header("X-ClickHouse-User") or param("user") or b""
            p = header("X-ClickHouse-Key") or param("password") or b""
            auth = self.headers.get("Authorization", "")
            if auth.lower().startswith("basic "):
                try:
                    u, _, p = base64.b64decode(auth[6:], validate=True).partition(b":")
                except ValueError:
                    return False
            return hmac.compare_digest(u or b"default", want_user) & hmac.compare_digest(p, want_password)

        def _foreign(self) -> str | None:
            host = (self.headers.get("Host") or "").strip().lower()
            name = host.rsplit(":", 1)[0].strip("[]") if not host.startswith("[") else host[1:host.find("]")]
            if hosts and name not in hosts:
                return f"Host {host[:100]!r} is not this server's"
            origin = self.headers.get("Origin")
            if origin is not None:
                o = urlsplit(origin)
                if (o.hostname or "").lower() not in hosts or (o.port or (443 if o.scheme == "https" else 80)) \
                        != self.server.server_address[1]:
                    return f"requests from web pages of {origin[:100]!r} are refused"
            return None

        def _body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():   # clickhouse-connect streams inserts
                parts, total = [], 0
                while True:
                    size = int(self.rfile.readline(64).split(b";")[0].strip() or b"0", 16)
                    total += size
                    if total > MAX_BODY_BYTES:
                        raise SqlError(f"Code: 1002. DB::Exception: request body over {MAX_BODY_BYTES:,} bytes",
                                       1002, 413)
                    if size == 0:
                        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(parts)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline(64)
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                raise SqlError(f"Code: 1002. DB::Exception: request body over {MAX_BODY_BYTES:,} bytes", 1002, 413)
            return self.rfile.read(length) if length else b""

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _refuse(self, exc: SqlError, base: dict[str, str]) -> None:
            # A request refused before its body was read leaves the body unread: close.
            self.close_connection = True
            self._send(exc.status, (str(exc).rstrip() + "\n").encode(),
                       {**base, "Connection": "close", "X-ClickHouse-Exception-Code": str(exc.code),
                        "Content-Type": "text/plain; charset=UTF-8"})

        def _handle(self, method: str) -> None:
            params = self._params()
            query_id = params.get("query_id") or str(uuid.uuid4())
            base = {"X-ClickHouse-Query-Id": query_id[:128], "X-ClickHouse-Timezone": "UTC",
                    "X-ClickHouse-Server-Display-Name": "tessera-chdb", "Connection": "keep-alive"}
            try:
                foreign = self._foreign()
                if foreign:
                    raise SqlError(f"Code: 497. DB::Exception: {foreign}", 497, 403)
                path = urlsplit(self.path).path
                if path in ("/ping", "/replicas_status") or (path == "/" and method == "GET" and "query" not in params):
                    self._send(200, b"Ok.\n", {**base, "Content-Type": "text/plain; charset=UTF-8"})
                    return
                if not self._authorised(params):
                    raise SqlError("Code: 516. DB::Exception: Authentication failed: password is incorrect, "
                                   "or there is no user with such name.", 516, 403)
                raw = self._body()
            except SqlError as exc:
                self._refuse(exc, base)
                return
            try:
                body = decompress(raw, self.headers.get("Content-Encoding", ""))
                if method == "GET" and body:
                    body = b""
                # GET never writes, whatever the server allows (a link or an <img> can make one).
                out, fmt, summary = engine.execute(params.get("query", ""), body, params,
                                                   writable=allow_writes and method == "POST")
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


LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class SqlServer:
    """A running ClickHouse-HTTP server over an embedded store (a thread, or the foreground).

    Readers only, by default; ``allow_writes`` adds inserts and schema changes (POST only).
    Listening beyond loopback needs a password; ``certfile``/``keyfile`` serve HTTPS."""

    def __init__(self, store: ChdbStore, host: str = "127.0.0.1", port: int = 8123,
                 user: str | None = None, password: str | None = None, *, allow_writes: bool = False,
                 certfile: str | None = None, keyfile: str | None = None,
                 max_execution_time_s: int = MAX_EXECUTION_TIME_S) -> None:
        if host not in LOOPBACK and not password:
            raise SqlError(f"refusing to listen on {host} without a password: anyone who can reach it could read "
                           "the store (set TESSERA_SQL_PASSWORD or --password-file)", 0, 0)
        self.engine = Engine(store)
        self.engine.max_execution_time_s = max_execution_time_s
        hosts = LOOPBACK | {host.lower()} if host not in ("0.0.0.0", "::") else frozenset()
        self.httpd = ThreadingHTTPServer((host, port), make_handler(self.engine, user, password,
                                                                      allow_writes=allow_writes, hosts=hosts))
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if certfile:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(certfile, keyfile)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.host, self.port = host, self.httpd.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self) -> "SqlServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="tessera-sql-serve", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


