"""The migration state machine: one migration's steps, resumable from its events.

    planned -> reserve_target -> sync -> cut_over -> release_source -> done
                     \\------------\\--------> failed -> rolled_back (target released,
                                                          source kept, billing told)

Each step is published on ``migrations.v1`` (key ``migration_id``) *after* it completed:
``migration.planned``, then ``migration.progress`` with ``step`` for each of the four,
then ``migration.done`` (with ``cut_over_at``), or ``migration.failed`` after a rollback.
The history of a migration is therefore its state; :class:`MigrationLog` folds events into
states (a repeated event changes nothing), and :func:`drive` runs the remaining steps of
one migration against an :class:`Executor`, publishing each before the next begins.

Never twice: a step whose event is committed is never run again. A crash between a step's
effect and its event means the step runs again on resume, so every executor step is
idempotent per migration id (a target already reserved is found, not created twice; a
source already released is a no-op), which the executors' tests check.

Rollback: a failure before ``cut_over`` completed releases the target and keeps the
source (``rolled_back``). After cut-over the work already runs on the target, so a failing
``release_source`` is retried, never rolled back.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Awaitable, Callable, Iterable, Protocol

from tessera.schemas import Event, MigrationDone, MigrationFailed, MigrationPlanned, MigrationProgress, utc_now

log = logging.getLogger(__name__)

STEPS = ("reserve_target", "sync", "cut_over", "release_source")
#: The migration events' fields that let billing bill the target without the placement.
BILLING_FIELDS = ("source_provider", "tenant", "per_replica", "target_instance_type", "target_price_per_hour")


@dataclass
class Migration:
    migration_id: str
    allocation_id: str
    source: str
    target: str
    target_provider: str = ""
    replicas: int = 0
    reason: str = "manual"
    done_steps: list[str] = field(default_factory=list)
    status: str = "planned"      # planned | running | done | rolled_back | failed
    cut_over_at: datetime | None = None
    failure: str = ""
    #: What billing needs to bill the target on its own (``BILLING_FIELDS`` of the events).
    billing: dict = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in ("done", "rolled_back", "failed")

    @property
    def next_step(self) -> str | None:
        """The first step not yet completed (None when all are)."""
        for s in STEPS:
            if s not in self.done_steps:
                return s
        return None

    def fields(self) -> dict:
        return dict(migration_id=self.migration_id, allocation_id=self.allocation_id,
                    source_resource_id=self.source, target_resource_id=self.target,
                    target_provider=self.target_provider, replicas=self.replicas, **self.billing)


@dataclass
class MigrationLog:
    """Every migration's state, folded from its events (in any order of redelivery)."""

    migrations: dict[str, Migration] = field(default_factory=dict)

    def apply(self, e: Event) -> Migration | None:
        if not isinstance(e, (MigrationPlanned, MigrationProgress, MigrationDone, MigrationFailed)):
            return None
        m = self.migrations.get(e.migration_id)
        if m is None:
            m = self.migrations[e.migration_id] = Migration(
                e.migration_id, e.allocation_id, e.source_resource_id, e.target_resource_id, e.target_provider,
                e.replicas, getattr(e, "reason", "manual"),
                billing={k: getattr(e, k) for k in BILLING_FIELDS if getattr(e, k)})
        if m.finished:
            return m
        if isinstance(e, MigrationPlanned):
            m.reason = e.reason
        elif isinstance(e, MigrationProgress):
            if e.step in STEPS and e.step not in m.done_steps:
                m.done_steps.append(e.step)
                m.status = "running"
                if e.step == "cut_over":
                    m.cut_over_at = e.event_time
        elif isinstance(e, MigrationDone):
            m.status, m.cut_over_at = "done", e.cut_over_at
            for s in STEPS:
                if s not in m.done_steps:
                    m.done_steps.append(s)
        elif isinstance(e, MigrationFailed):
            m.status, m.failure = ("rolled_back" if e.rolled_back else "failed"), e.reason
        return m

    def replay(self, events: Iterable[Event]) -> "MigrationLog":
        for e in events:
            self.apply(e)
        return self

    def unfinished(self) -> list[Migration]:
        return [m for m in self.migrations.values() if not m.finished]

    def active_for(self, allocation_id: str) -> Migration | None:
        return next((m for m in self.migrations.values() if m.allocation_id == allocation_id and not m.finished),
                    None)


class StepFailed(RuntimeError):
    """An executor step could not complete; the message says why."""


class Executor(Protocol):
    """What moves a workload. Every step is idempotent per ``m.migration_id``."""

    async def reserve_target(self, m: Migration) -> None: ...
    async def sync(self, m: Migration) -> None: ...
    async def cut_over(self, m: Migration) -> None: ...
    async def release_source(self, m: Migration) -> None: ...
    async def rollback(self, m: Migration) -> None:
        """Undo what steps before cut-over did: release the target, keep the source."""
        ...


Publish = Callable[[Event], Awaitable[None]]


def planned(m: Migration, saving_per_hour=0) -> MigrationPlanned:
    return MigrationPlanned(event_id=f"{m.migration_id}:planned", reason=m.reason,
                            expected_saving_per_hour=saving_per_hour, **m.fields())


async def drive(m: Migration, executor: Executor, publish: Publish, *, release_retries: int = 5,
                retry_delay_s: float = 0.5) -> Migration:
    """Run ``m``'s remaining steps; each step's event is published (and, by the caller's
    ``publish``, committed) before the next step starts."""
    while not m.finished:
        step = m.next_step
        if step is None:
            cut = m.cut_over_at or utc_now()
            await publish(MigrationDone(event_id=f"{m.migration_id}:done", cut_over_at=cut, **m.fields()))
            m.status, m.cut_over_at = "done", cut
            break
        try:
            await _run_step(executor, step, m, release_retries, retry_delay_s)
        except StepFailed as exc:
            if "cut_over" in m.done_steps:
                # The work runs on the target; the source could not be released. Not rolled back.
                await publish(MigrationFailed(event_id=f"{m.migration_id}:failed", reason=str(exc),
                                              rolled_back=False, **m.fields()))
                m.status, m.failure = "failed", str(exc)
                break
            reason, rolled_back = str(exc), True
            try:
                await _retry(executor.rollback, m, release_retries, retry_delay_s)
            except StepFailed as undo:
                # Nothing more this agent can do: say so (an operator cleans up the target).
                reason, rolled_back = f"{exc}; rollback failed too: {undo}", False
            await publish(MigrationFailed(event_id=f"{m.migration_id}:failed", reason=reason[:1000],
                                          rolled_back=rolled_back, **m.fields()))
            m.status, m.failure = ("rolled_back" if rolled_back else "failed"), reason
            break
        now = utc_now()
        if step == "cut_over":
            m.cut_over_at = now    # the cut_over event's time is the cut-over time (billing splits there)
        await publish(MigrationProgress(event_id=f"{m.migration_id}:{step}", event_time=now, step=step,
                                        **m.fields()))
        m.done_steps.append(step)
        m.status = "running"
    return m


async def _run_step(executor: Executor, step: str, m: Migration, retries: int, delay: float) -> None:
    # Releasing the source is retried (the work already runs on the target); any other
    # step's failure rolls the migration back at once.
    await _retry(getattr(executor, step), m, retries if step == "release_source" else 1, delay)


async def _retry(fn: Callable[[Migration], Awaitable[None]], m: Migration, attempts: int, delay: float) -> None:
    for i in range(attempts):
        try:
            await fn(m)
            return
        except StepFailed:
            if i + 1 >= attempts:
                raise
            log.warning("migration %s: %s failed, retrying (%d/%d)", m.migration_id, fn.__name__, i + 1, attempts)
            await asyncio.sleep(delay)


class BookkeepingExecutor:
    """For work Tessera places but does not run itself (the demo's replayed pods, a batch
    system that follows the allocations topic): every step succeeds at once, so the move
    happens in the books (the scheduler's capacity, billing) and whoever runs the workload
    acts on the ``migrations.v1`` events. Idempotent trivially."""

    async def reserve_target(self, m: Migration) -> None:
        return None

    async def sync(self, m: Migration) -> None:
        return None

    async def cut_over(self, m: Migration) -> None:
        return None

    async def release_source(self, m: Migration) -> None:
        return None

    async def rollback(self, m: Migration) -> None:
        return None
