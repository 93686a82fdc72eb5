"""Build a worker app with chosen agents, and run it: as a process (``tessera worker``)
or inside a running event loop (tests and the demo)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from typing import Any, AsyncIterator, Iterable

import faust

from tessera.config import Settings
from tessera.storage.ddl import apply_migrations
from tessera.storage.store import open_store

from .admin import ensure_topics
from .app import create_app
from .topics import Topics, declare_topics

AGENT_MODULES = {"event-log": "tessera.agents.event_log", "resources": "tessera.agents.resources", "forecast": "tessera.agents.forecast"}


def build_worker_app(settings: Settings, agents: Iterable[str] = ("event-log",), app_id: str | None = None
                     ) -> tuple[faust.App, Topics]:
    app = create_app(settings, app_id=app_id)
    topics = declare_topics(app, settings)
    store = open_store(settings)
    apply_migrations(store)
    for name in agents:
        try:
            module = importlib.import_module(AGENT_MODULES[name])
        except KeyError:
            raise ValueError(f"unknown agent {name!r}; available: {', '.join(AGENT_MODULES)}") from None
        module.register(app, topics, settings, store)
    app.tessera_settings = settings  # type: ignore[attr-defined]
    app.tessera_store = store  # type: ignore[attr-defined]
    return app, topics


def app_settings(app: faust.App) -> Settings:
    return app.tessera_settings  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def running(app: faust.App, ready_timeout: float = 60.0) -> AsyncIterator[faust.App]:
    """Start the app's consumer, producer and agents in this loop; stop them on exit.

    Waits until the consumer group has its partitions assigned, so events produced after
    entering are seen.
    """
    await ensure_topics(app_settings(app))
    app.finalize()
    await app.start()
    try:
        deadline = asyncio.get_running_loop().time() + ready_timeout
        while not app.consumer.assignment():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the Faust consumer got no partitions assigned")
            await asyncio.sleep(0.1)
        yield app
    finally:
        await app.stop()


class QuietWorker(faust.Worker):
    """Faust's worker without its terminal progress spinner.

    The spinner spins on every log record, so for any log level of WARN or above Faust sets
    the root logger to DEBUG and leaves it there after start-up: every library's debug call
    (aiokafka logs a few per fetch) then builds a record and offers it to every handler.
    In the pipeline benchmark that was about a tenth of the sink worker's CPU, for nothing
    (the handler prints warnings only)."""

    def on_setup_root_logger(self, logger: Any, level: int) -> None:
        self.spinner = None


def run_worker(settings: Settings, agents: Iterable[str], loglevel: str = "info") -> int:
    """Run a Faust worker in this process until SIGINT/SIGTERM (``tessera worker``)."""
    from tessera.streams import collector, metrics

    agents = list(agents)
    collector.tune_for_service()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(ensure_topics(settings))
    if "forecast" in agents:
        from tessera.app.warmup import compile_kernels

        compile_kernels(packing=False)   # before the worker joins its group (tessera.warmup says why)
    metrics.serve(settings.metrics_port)
    app, _topics = build_worker_app(settings, agents)
    worker = QuietWorker(app, loglevel=loglevel, loop=loop)
    worker.execute_from_commandline()  # returns via SystemExit when stopped
    return 0
