"""The whole Tessera pipeline in one process: what the demo and the end-to-end test run.

Faust agents (event log -> ClickHouse, live resource table, demand forecasts), the
transactional scheduler and the billing agent, all on one event loop against one broker.
In production these are separate processes (``tessera worker``, ``tessera scheduler``,
``tessera billing``); the code paths are the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, AsyncIterator, Callable

from tessera.agents.billing import BillingWorker
from tessera.agents.migration import MigrationWorker
from tessera.agents.scheduler import SchedulerWorker
from tessera.agents.warmup import compiled_off_loop
from tessera.agents.worker import build_worker_app
from tessera.app import datasets
from tessera.config import Settings
from tessera.migration.budget import DisruptionBudget
from tessera.migration.machine import BookkeepingExecutor
from tessera.pricing.agreements import Agreement
from tessera.schemas import HealthSample
from tessera.streams.admin import ensure_topics, wait_for_coordinators
from tessera.streams.produce import publish, send_events, started_producer
from tessera.streams.runner import running

log = logging.getLogger(__name__)

#: Agreements for the demo partners: per-unit rates close to their catalogs' list prices
#: per vCPU-hour (GCP europe-west4 n2, DigitalOcean basic droplets), one with a tier and a
#: commitment, one with a spend limit.
DEMO_AGREEMENTS: list[dict[str, Any]] = [
    {"partner": "gcp", "currency": "USD", "provider_name": "Google Cloud",
     "rates": {"vcpu_hour": "0.034", "memory_gib_hour": "0.0046", "gpu_hour": "2.48"},
     "tiers": {"vcpu_hour": [{"from": "0", "rate": "0.034"}, {"from": "500", "rate": "0.029"}]},
     "monthly_commit": "0.20"},
    {"partner": "digitalocean", "currency": "USD", "provider_name": "DigitalOcean",
     "rates": {"vcpu_hour": "0.018", "memory_gib_hour": "0.0045", "gpu_hour": "2.99"},
     "limits": {"spend": {"amount": "5.00", "thresholds": [50, 80, 100], "enforcement": "hard"}}},
]


def blended_fleet(own_cpu: int, own_gpu: int, digitalocean: int, gcp: int) -> list[Any]:
    """An own data center (Alibaba v2023 nodes: CPU-only and GPU ones, at amortized capex +
    opex) beside DigitalOcean and GCP europe-west4 catalog offers. Most Alibaba pods want
    GPUs, so the own GPU nodes decide how much spills to partners."""
    gpu_nodes = [r for r in datasets.own_nodes() if r.spec.capacity.gpu][:own_gpu]
    return [*datasets.own_nodes(limit=own_cpu), *gpu_nodes, *datasets.digitalocean_vms(limit=digitalocean),
            *datasets.gcp_instances(limit=gcp, region="europe-west4")]


async def register(settings: Settings, resources: list[Any]) -> None:
    """Publish the resources and a first heartbeat for each (healthy from the start)."""
    await publish(settings, "resources", resources)
    await publish(settings, "health", [HealthSample(resource_id=r.resource_id) for r in resources])


async def heartbeat(settings: Settings, resource_ids: list[str], stop: asyncio.Event,
                    silenced: set[str] | None = None) -> None:
    """Play the resources' node agents: a heartbeat for each every third of the heartbeat
    timeout until ``stop``, so that a run longer than the timeout keeps them healthy (with
    only the first heartbeat they all turn unhealthy after it and placement stops). A node
    added to ``silenced`` stops beating, as a failed node does."""
    every = max(settings.health_heartbeat_timeout_s / 3, 1.0)
    silenced = silenced if silenced is not None else set()
    async with started_producer(settings) as producer:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), every)
            except asyncio.TimeoutError:
                await send_events(producer, settings, "health",
                                  [HealthSample(resource_id=r) for r in resource_ids if r not in silenced])


@dataclass
class Pipeline:
    settings: Settings
    app: Any
    scheduler: Any
    billing: Any
    stop: asyncio.Event
    migration: Any = None
    tasks: list[asyncio.Task] = field(default_factory=list)
    scheduler_stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def store(self) -> Any:
        return self.app.tessera_store

    async def stop_deciding(self) -> None:
        """Stop the scheduler alone (no new allocation events); billing and the sink go on,
        so a caller can wait for them to drain what was decided."""
        self.scheduler_stop.set()
        await asyncio.wait_for(self.tasks[0], 30)


@contextlib.asynccontextmanager
async def pipeline(settings: Settings, agreements: dict[str, Agreement], *, batch_wait_ms: int = 50,
                   aging_s: float = 30.0, say: Callable[[str], None] | None = None,
                   tuning_interval_s: float = 0.0, consolidate_every_s: float | None = None
                   ) -> AsyncIterator[Pipeline]:
    """The whole pipeline in this event loop; ``say`` reports slow start-up steps. With
    ``consolidate_every_s`` the migration agent runs too (moves in the books only: the
    demo's workloads are replayed, not run), evacuating failed nodes at once."""
    await ensure_topics(settings)
    await compiled_off_loop(say, forecasts=True)   # before any consumer joins a group (tessera.agents.warmup says why)
    app, _ = build_worker_app(settings, ["event-log", "resources", "forecast"], app_id=settings.app_id)
    scheduler = SchedulerWorker(settings, batch_wait_ms=batch_wait_ms, aging_s=aging_s, agreements=agreements,
                                tuning_interval_s=tuning_interval_s)
    billing = BillingWorker(settings, agreements)
    migration = None
    if consolidate_every_s is not None:
        migration = MigrationWorker(settings, BookkeepingExecutor(),
                                    DisruptionBudget(max_fraction=0.5, move_cost=Decimal("0.001")),
                                    consolidate_every_s=consolidate_every_s, agreements=agreements)
    # A fresh broker creates its offsets and transaction logs on first use; joining before
    # that only fills the log with retried coordinator errors.
    await wait_for_coordinators(settings, groups=[settings.app_id, f"{settings.app_id}-event-log", scheduler.group],
                                transactional_ids=[scheduler.group] + ([migration.transactional_id] if migration else []))
    stop = asyncio.Event()
    async with running(app, ready_timeout=120):
        p = Pipeline(settings, app, scheduler, billing, stop, migration=migration)
        p.tasks = [asyncio.create_task(scheduler.run(p.scheduler_stop), name="scheduler"),
                   asyncio.create_task(billing.run(stop), name="billing")]
        if migration is not None:
            p.tasks.append(asyncio.create_task(migration.run(stop), name="migration"))
        try:
            yield p
        finally:
            stop.set()
            p.scheduler_stop.set()
            for t in p.tasks:
                try:
                    await asyncio.wait_for(t, 30)
                except Exception:   # a worker's failure is reported, the others still stop
                    log.exception("%s did not stop cleanly", t.get_name())
