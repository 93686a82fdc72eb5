"""Keep a Kafka service running through broker restarts, leader changes and lost coordinators.

A service's run is crash-only: any broker fault ends the attempt (its open transaction
aborts, or is aborted by the next producer with the same transactional id), and the next
attempt rebuilds the state from the checkpoint and the topics, which it does anyway at start.
So one rule covers every fault, including those nobody listed: wait with capped exponential
backoff, say so in the log, the metrics and ``/readyz``, and start again; never exit
because the broker is away. Only two things stop it: the stop event, and being fenced
again right after starting, which means another instance with the same transactional id
is running (two schedulers for one domain): exiting then is the right answer, and the
error says what to fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from typing import Any, Awaitable, Callable

from aiokafka.errors import KafkaError, ProducerFenced

from . import metrics

log = logging.getLogger(__name__)

#: Backoff between attempts (s): doubles from the first to the cap.
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 15.0
#: An attempt that ran this long was healthy: the backoff starts over after it.
HEALTHY_AFTER_S = 60.0


class FencedError(RuntimeError):
    """Another instance with this service's transactional id is running."""


async def supervise(name: str, attempt: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event,
                    *, first_backoff_s: float = FIRST_BACKOFF_S, max_backoff_s: float = MAX_BACKOFF_S) -> None:
    """Run ``attempt(stop)`` until it returns (stop was set), starting it again after a
    broker fault. Errors that are not Kafka's or the network's are bugs: they propagate."""
    backoff, fenced_in_a_row = first_backoff_s, 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            await attempt(stop)
            return
        except (KafkaError, ConnectionError, OSError, asyncio.TimeoutError) as exc:
            ran = time.monotonic() - started
            if ran >= HEALTHY_AFTER_S:
                backoff, fenced_in_a_row = first_backoff_s, 0
            if isinstance(exc, ProducerFenced):
                fenced_in_a_row += 1
                if fenced_in_a_row >= 2:
                    raise FencedError(f"{name}: fenced twice in a row: another instance with the same "
                                      "transactional id is running (for the scheduler: the same --domain); "
                                      "stop one of them") from exc
            else:
                fenced_in_a_row = 0
            why = f"{type(exc).__name__}: {exc}"
            metrics.child(metrics.SERVICE_RESTARTS, name, type(exc).__name__).inc()
            metrics.PROBE.wait(f"waiting for Kafka ({why}); next attempt in {backoff:.1f} s")
            log.warning("%s: Kafka fault after %.1f s (%s); starting again in %.1f s", name, ran, why, backoff)
            try:
                await asyncio.wait_for(stop.wait(), backoff)
            except asyncio.TimeoutError:
                pass
            backoff = min(backoff * 2, max_backoff_s)


async def start_client(stack: contextlib.AsyncExitStack, client: Any) -> Any:
    """Start an aiokafka producer or consumer whose ``stop`` runs when ``stack`` closes, also
    when ``start`` itself fails (the broker is away): an attempt leaks no connections and
    no background tasks into the next. A stop that fails (the broker is still away) is
    logged, not raised over the fault that ended the attempt."""
    async def stop() -> None:
        try:
            await client.stop()
        except asyncio.CancelledError:
            # aiokafka's fetcher lets the cancellation of its own fetch task out of stop()
            # when a fetch was failing (broker away); only a cancellation of ours propagates.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
        except Exception as exc:   # noqa: BLE001
            log.debug("stopping %s: %s", type(client).__name__, exc)

    stack.push_async_callback(stop)
    await client.start()
    return client


class BrokerWatch:
    """Readiness that follows the broker: every ``every_s`` a service's loop asks its
    client for fresh metadata (cheap, and answered by any live broker), and ``/readyz``
    turns 503 with the reason while none answers. aiokafka retries a lost broker inside
    ``getmany`` and heartbeats without raising, so without this a service whose broker
    is away would look ready while it does nothing."""

    def __init__(self, client: Any, every_s: float = 5.0, timeout_s: float = 5.0) -> None:
        self.client, self.every_s, self.timeout_s = client, every_s, timeout_s
        self.next_at = 0.0

    async def tick(self) -> None:
        """Once per loop: beat the liveness probe, and every ``every_s`` ask the broker."""
        metrics.PROBE.beat()
        now = time.monotonic()
        if now < self.next_at:
            return
        self.next_at = now + self.every_s
        try:
            ok = bool(await asyncio.wait_for(self.client.force_metadata_update(), self.timeout_s))
        except (asyncio.TimeoutError, KafkaError, OSError):
            ok = False
        if ok:
            metrics.PROBE.ready()
        else:
            metrics.PROBE.wait("waiting for Kafka: no broker answered a metadata request; the client retries")


def exit_after(grace_s: float) -> threading.Timer:
    """From a stop signal on, give the process ``grace_s`` to stop, then exit it with status 1.

    A graceful stop can hang in a client library (a consumer or producer that never finishes
    closing while the broker is away; the kill -9 drill once saw a Faust worker ignore
    SIGTERM for a minute). Every service's output is transactional, so a hard exit loses
    nothing a kill -9 would not, and the host's shutdown does not hang on it."""
    timer = threading.Timer(grace_s, _exit_now, args=(grace_s,))
    timer.daemon = True
    timer.start()
    return timer


def _exit_now(grace_s: float) -> None:
    log.error("did not stop within %g s of the stop signal (TESSERA_SHUTDOWN_GRACE_S); exiting now", grace_s)
    logging.shutdown()
    os._exit(1)
