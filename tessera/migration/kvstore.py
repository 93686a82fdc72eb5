"""The example stateful workload the process executor moves: a key-value service with a
write log, and the proxy its clients talk through.

Both speak JSON lines over TCP (one request line, one response line; orjson):

    service   {"op": "set", "k", "v"} -> {"ok": true, "seq": n}     (logged, flushed, then acked)
              {"op": "get", "k"}      -> {"ok": true, "v": ... | null}
              {"op": "log", "from": n} -> {"ok": true, "entries": [[seq, k, v], ...], "seq": last}
                                          (at most 2,000 entries after n: read it page by page)
              {"op": "replay", "entries": [...]} -> {"ok": true, "seq": last}   (entries at or below
                                          the service's seq are skipped: replaying is idempotent)
              {"op": "freeze"} / {"op": "thaw"} -> {"ok": true, "seq": n}  (a frozen service refuses writes)
    proxy     the same ops, forwarded to its backend; control ops on a second port:
              {"op": "pause"} (hold new requests, wait for those in flight), {"op": "switch",
              "backend": "host:port"}, {"op": "resume"}, {"op": "status"}

Run:  python -m tessera.migration.kvstore serve --port P --data DIR
      python -m tessera.migration.kvstore proxy --port P --control C --backend HOST:PORT
The service's state is its log file (DIR/log.jsonl): a restarted service replays it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path

import orjson

MAX_LINE = 16 << 20
PAGE = 2000      # log entries per "log" response


class KvService:
    def __init__(self, data: Path) -> None:
        data.mkdir(parents=True, exist_ok=True)
        self.path = data / "log.jsonl"
        self.values: dict[str, object] = {}
        self.seq = 0
        self.frozen = False
        self.entries: list[list] = []     # the log in memory too, for "log" requests
        good = 0
        if self.path.exists():
            raw = self.path.read_bytes()
            for line in raw.splitlines(keepends=True):
                try:
                    seq, k, v = orjson.loads(line)
                except (orjson.JSONDecodeError, ValueError):
                    break        # a torn last line from a crash: never acked, so nothing acked is lost
                self.entries.append([seq, k, v])
                self.values[k], self.seq = v, seq
                good += len(line)
            if good < len(raw):
                with open(self.path, "r+b") as f:
                    f.truncate(good)
        self.log = open(self.path, "ab")

    def _append(self, seq: int, k: str, v: object) -> None:
        entry = [seq, k, v]
        self.log.write(orjson.dumps(entry) + b"\n")
        self.entries.append(entry)
        self.values[k], self.seq = v, seq

    def handle(self, req: dict) -> dict:
        op = req.get("op")
        if op == "set":
            if self.frozen:
                return {"ok": False, "error": "frozen: cutting over"}
            k = req.get("k")
            if not isinstance(k, str):
                return {"ok": False, "error": "k must be a string"}
            self._append(self.seq + 1, k, req.get("v"))
            self.log.flush()
            return {"ok": True, "seq": self.seq}
        if op == "get":
            return {"ok": True, "v": self.values.get(req.get("k"))}
        if op == "log":    # a page of the log: entries after ``from``, at most ``limit``
            start, limit = int(req.get("from", 0)), min(int(req.get("limit", PAGE)), PAGE)
            return {"ok": True, "entries": self.entries[start:start + limit], "seq": self.seq}
        if op == "replay":
            for seq, k, v in req.get("entries", []):
                if seq == self.seq + 1:
                    self._append(seq, k, v)
            self.log.flush()
            return {"ok": True, "seq": self.seq}
        if op in ("freeze", "thaw"):
            self.frozen = op == "freeze"
            return {"ok": True, "seq": self.seq}
        if op == "ping":
            return {"ok": True, "seq": self.seq}
        return {"ok": False, "error": f"unknown op {op!r}"}

    async def serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    req = orjson.loads(line)
                    resp = self.handle(req) if isinstance(req, dict) else {"ok": False, "error": "not an object"}
                except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
                    resp = {"ok": False, "error": f"bad request: {exc}"}
                writer.write(orjson.dumps(resp) + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


class Proxy:
    """Forwards each client's request lines to the current backend; ``pause`` holds new
    requests and waits for those in flight, so a switch happens between requests."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.generation = 0
        self.open = asyncio.Event()
        self.open.set()
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()

    async def serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        gen = -1
        try:
            while line := await reader.readline():
                await self.open.wait()
                self.in_flight += 1
                self.idle.clear()
                try:
                    if conn is None or gen != self.generation:
                        if conn is not None:
                            conn[1].close()
                        host, port = self.backend.rsplit(":", 1)
                        conn, gen = await asyncio.open_connection(host, int(port), limit=MAX_LINE), self.generation
                    conn[1].write(line)
                    await conn[1].drain()
                    resp = await conn[0].readline()
                    if not resp:
                        raise ConnectionError("backend closed")
                except (ConnectionError, OSError) as exc:
                    conn = None
                    resp = orjson.dumps({"ok": False, "error": f"backend unavailable: {exc}"}) + b"\n"
                finally:
                    self.in_flight -= 1
                    if not self.in_flight:
                        self.idle.set()
                writer.write(resp)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            if conn is not None:
                conn[1].close()
            writer.close()

    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                req = orjson.loads(line)
                op = req.get("op") if isinstance(req, dict) else None
                if op == "pause":
                    self.open.clear()
                    await self.idle.wait()
                elif op == "switch":
                    if req.get("backend") != self.backend:
                        self.backend, self.generation = str(req["backend"]), self.generation + 1
                elif op == "resume":
                    self.open.set()
                elif op != "status":
                    writer.write(orjson.dumps({"ok": False, "error": f"unknown op {op!r}"}) + b"\n")
                    continue
                writer.write(orjson.dumps({"ok": True, "backend": self.backend, "paused": not self.open.is_set()})
                             + b"\n")
                await writer.drain()
        except (ConnectionError, orjson.JSONDecodeError):
            pass
        finally:
            writer.close()


async def request(addr: str, req: dict, timeout: float = 10.0) -> dict:
    """One request to a service or a proxy's control port."""
    host, port = addr.rsplit(":", 1)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port), limit=MAX_LINE), timeout)
    try:
        writer.write(orjson.dumps(req) + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        if not line:
            raise ConnectionError(f"{addr} closed the connection")
        return orjson.loads(line)
    finally:
        writer.close()


async def read_log(addr: str) -> list[list]:
    """A service's whole log, page by page."""
    entries: list[list] = []
    while True:
        page = (await request(addr, {"op": "log", "from": len(entries)}))["entries"]
        entries += page
        if len(page) < PAGE:
            return entries


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.command == "serve":
        svc = KvService(Path(args.data))
        servers = [await asyncio.start_server(svc.serve_client, "127.0.0.1", args.port, limit=MAX_LINE)]
    else:
        proxy = Proxy(args.backend)
        servers = [await asyncio.start_server(proxy.serve_client, "127.0.0.1", args.port, limit=MAX_LINE),
                   await asyncio.start_server(proxy.control, "127.0.0.1", args.control, limit=MAX_LINE)]
    if args.ready_file:
        Path(args.ready_file).write_text(str(os.getpid()))
    await stop.wait()
    for s in servers:
        s.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tessera.migration.kvstore", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--data", required=True)
    p = sub.add_parser("proxy")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--control", type=int, required=True)
    p.add_argument("--backend", required=True)
    for x in (s, p):
        x.add_argument("--ready-file", help="written with the pid once listening")
    asyncio.run(_main(ap.parse_args(argv)))


if __name__ == "__main__":
    main()
