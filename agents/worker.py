"""Assemble a Faust worker from the agents that registered themselves, and run it.

Each agent module declares its agents with ``@worker_agent("name")`` on its
``register(app, topics, settings, store)`` function; importing ``tessera.agents`` imports
every agent module, so the registry is complete whenever this module is used through it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterable

import faust

from tessera.config import Settings
from tessera.storage.ddl import apply_migrations
from tessera.storage.store import AnalyticsStore, open_store
from tessera.streams import collector, metrics
from tessera.streams.admin import ensure_topics
from tessera.streams.app import create_app
from tessera.streams.runner import running, serve_until_stopped
from tessera.streams.topics import Topics, declare_topics

Register = Callable[[faust.App, Topics, Settings, AnalyticsStore], None]


@dataclass(frozen=True)
class WorkerAgent:
    name: str
    register: Register
    summary: str
    #: Run once before the worker joins its consumer groups (e.g. compile Numba kernels,
    #: which would otherwise block the event loop past the group's session timeout).
    prepare: Callable[[], Any] | None = None


REGISTRY: dict[str, WorkerAgent] = {}


def worker_agent(name: str, summary: str, *, prepare: Callable[[], Any] | None = None
                 ) -> Callable[[Register], Register]:
    """Register an agent module's ``register`` function under ``name``."""
    def add(register: Register) -> Register:
        REGISTRY[name] = WorkerAgent(name, register, summary, prepare)
        return register
    return add


def agent_names() -> list[str]:
    return list(REGISTRY)


def _chosen(agents: Iterable[str]) -> list[WorkerAgent]:
    chosen = []
    for name in agents:
        if name not in REGISTRY:
            raise ValueError(f"unknown agent {name!r}; available: {', '.join(REGISTRY)}")
        chosen.append(REGISTRY[name])
    return chosen


#: How often the worker's loop beats its liveness probe (s).
PROBE_EVERY_S = 5.0


def build_worker_app(settings: Settings, agents: Iterable[str] = ("event-log",), app_id: str | None = None
                     ) -> tuple[faust.App, Topics]:
    """A Faust app carrying the chosen agents, with the analytics store migrated."""
    chosen = _chosen(agents)
    app = create_app(settings, app_id=app_id)
    topics = declare_topics(app, settings)
    store = open_store(settings)
    apply_migrations(store)
    for agent in chosen:
        agent.register(app, topics, settings, store)

    @app.timer(interval=PROBE_EVERY_S)
    async def probe() -> None:
        # Runs once the app is up, then on its event loop: a stuck loop stops the beats.
        metrics.PROBE.ready()

    app.tessera_settings = settings  # type: ignore[attr-defined]
    app.tessera_store = store  # type: ignore[attr-defined]
    return app, topics


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, agents: Iterable[str], app_id: str | None = None,
                         ready_timeout: float = 60.0) -> AsyncIterator[faust.App]:
    """A worker app with these agents, started in this event loop (its partitions assigned)
    and stopped on exit: for the in-process pipeline and tests."""
    agents = list(agents)
    await asyncio.to_thread(prepare, agents)    # off the loop (tessera.agents.warmup says why)
    app, _topics = build_worker_app(settings, agents, app_id=app_id or settings.app_id)
    async with running(app, ready_timeout=ready_timeout):
        yield app


def prepare(agents: Iterable[str]) -> None:
    """Run the chosen agents' one-off preparations (before any consumer group is joined)."""
    for agent in _chosen(agents):
        if agent.prepare is not None:
            agent.prepare()


def run_worker(settings: Settings, agents: Iterable[str], loglevel: str = "info") -> int:
    """Run a Faust worker in this process until SIGINT/SIGTERM (``tessera worker``)."""
    agents = list(agents)
    collector.tune_for_service()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(ensure_topics(settings))
    prepare(agents)
    metrics.serve(settings.metrics_port, settings.metrics_bind)
    app, _topics = build_worker_app(settings, agents)
    return serve_until_stopped(app, loop, loglevel, grace_s=settings.shutdown_grace_s)
