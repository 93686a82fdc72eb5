"""The process executor: moves a real stateful process (the key-value service in
``kvstore``) on this machine, behind a proxy its clients keep talking to.

* reserve_target: start a new service process for the allocation on the target (its own
  data directory and port);
* sync: pre-copy the source's write log to the target, round after round, while the
  source keeps taking writes;
* cut_over: pause the proxy (new requests wait; those in flight finish), freeze the
  source, copy the last delta, check the target holds exactly the source's log, switch
  the proxy to the target, resume. The pause is the only time clients wait;
* release_source: stop the source process;
* rollback: stop the target, thaw the source, point the proxy back at it.

Every step is idempotent per migration id, so a resumed migration may run a step again
(after a crash between the step and its event) without doing it twice: the target's
process and port are recorded in ``<workdir>/<migration>.json`` before the step reports
done and found again; the allocation's current address lives in
``<workdir>/<allocation>.json`` (the registry) and cut-over is skipped if it already
points at the target.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from .kvstore import PAGE, request
from .machine import Migration, StepFailed

PRECOPY_ROUNDS = 8
PRECOPY_DONE = 64    # entries left: small enough to copy during the pause


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:   # a zombie child of this process counts as gone
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(doc))
    os.replace(tmp, path)     # atomic: a crash leaves the old or the new record, never half


def _safe(name: str) -> str:
    """A resource or allocation id as one file name (ids may hold '/')."""
    return name.replace("/", "_")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_service(data: Path, port: int | None = None, timeout: float = 20.0) -> tuple[int, str]:
    """Start a key-value service process (in its own session, so it outlives this one);
    returns its pid and address once it listens."""
    port = port or free_port()
    ready = data.with_suffix(".ready")
    ready.unlink(missing_ok=True)
    data.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "tessera.migration.kvstore", "serve", "--port", str(port),
                             "--data", str(data), "--ready-file", str(ready)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise StepFailed(f"the key-value service on port {port} did not start")
        await asyncio.sleep(0.05)
    return proc.pid, f"127.0.0.1:{port}"


def stop_process(pid: int, timeout: float = 10.0) -> None:
    if not _alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


@dataclass
class ProcessExecutor:
    workdir: Path
    proxy_control: str
    #: Cut-over pauses measured (seconds), for the benchmark.
    pauses: list[float] = field(default_factory=list)

    def registry(self, allocation_id: str) -> dict:
        path = self.workdir / f"{_safe(allocation_id)}.json"
        if not path.exists():
            raise StepFailed(f"no running process is registered for allocation {allocation_id} ({path})")
        return orjson.loads(path.read_bytes())

    def _record(self, m: Migration) -> Path:
        return self.workdir / f"{_safe(m.migration_id)}.json"

    def target(self, m: Migration) -> dict:
        path = self._record(m)
        if not path.exists():
            raise StepFailed(f"migration {m.migration_id} has no reserved target")
        return orjson.loads(path.read_bytes())

    async def register(self, allocation_id: str, resource_id: str) -> str:
        """Start the allocation's service on ``resource_id`` and register it (the workload's
        first placement)."""
        pid, addr = await start_service(self.workdir / "data" / _safe(f"{allocation_id}@{resource_id}"))
        _write_json(self.workdir / f"{_safe(allocation_id)}.json", {"pid": pid, "addr": addr, "resource": resource_id})
        return addr

    async def reserve_target(self, m: Migration) -> None:
        path = self._record(m)
        if path.exists() and _alive(orjson.loads(path.read_bytes())["pid"]):
            return            # reserved before a crash: found, not started twice
        # A fresh data directory per migration: the target starts empty and gets the whole log.
        pid, addr = await start_service(self.workdir / "data" / _safe(f"{m.allocation_id}@{m.target}#{m.migration_id}"))
        _write_json(path, {"pid": pid, "addr": addr, "resource": m.target, "starts": self._starts(path) + 1})

    def _starts(self, path: Path) -> int:
        return orjson.loads(path.read_bytes()).get("starts", 0) if path.exists() else 0

    async def _copy(self, source: str, target: str) -> int:
        """Copy what the target lacks of the source's log, page by page; returns how many entries."""
        copied = 0
        have = (await request(target, {"op": "ping"}))["seq"]
        while True:
            page = (await request(source, {"op": "log", "from": have}))["entries"]
            if page:
                have = (await request(target, {"op": "replay", "entries": page}))["seq"]
                copied += len(page)
            if len(page) < PAGE:
                return copied

    async def sync(self, m: Migration) -> None:
        src, dst = self.registry(m.allocation_id)["addr"], self.target(m)["addr"]
        try:
            for _ in range(PRECOPY_ROUNDS):
                if await self._copy(src, dst) <= PRECOPY_DONE:
                    return
        except (OSError, ConnectionError, asyncio.TimeoutError) as exc:
            raise StepFailed(f"sync: {exc}") from exc

    async def cut_over(self, m: Migration) -> None:
        reg, tgt = self.registry(m.allocation_id), self.target(m)
        if reg["addr"] == tgt["addr"]:
            return            # cut over before a crash
        src, dst = reg["addr"], tgt["addr"]
        t0 = time.perf_counter()
        try:
            await request(self.proxy_control, {"op": "pause"})
            await request(src, {"op": "freeze"})
            await self._copy(src, dst)
            have, want = (await request(dst, {"op": "ping"}))["seq"], (await request(src, {"op": "ping"}))["seq"]
            if have != want:
                raise StepFailed(f"the target holds {have} log entries, the source {want}")
            await request(self.proxy_control, {"op": "switch", "backend": dst})
            _write_json(self.workdir / f"{_safe(m.allocation_id)}.json",
                        {"pid": tgt["pid"], "addr": dst, "resource": m.target, "previous": reg})
        except (OSError, ConnectionError, asyncio.TimeoutError, StepFailed) as exc:
            try:
                await request(src, {"op": "thaw"})
            except (OSError, ConnectionError, asyncio.TimeoutError):
                pass
            await request(self.proxy_control, {"op": "resume"})
            raise StepFailed(f"cut_over: {exc}") from exc
        await request(self.proxy_control, {"op": "resume"})
        self.pauses.append(time.perf_counter() - t0)

    async def release_source(self, m: Migration) -> None:
        reg = self.registry(m.allocation_id)
        previous = reg.get("previous")
        if previous and previous.get("resource") == m.source:
            stop_process(previous["pid"])

    async def rollback(self, m: Migration) -> None:
        path = self._record(m)
        if path.exists():
            stop_process(orjson.loads(path.read_bytes())["pid"])
        try:
            reg = self.registry(m.allocation_id)
            await request(reg["addr"], {"op": "thaw"})
            await request(self.proxy_control, {"op": "switch", "backend": reg["addr"]})
            await request(self.proxy_control, {"op": "resume"})
        except (OSError, ConnectionError, asyncio.TimeoutError, StepFailed):
            pass
