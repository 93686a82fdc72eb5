"""Publish the dead letters of a decoded batch, durably, before the batch is acknowledged."""

from __future__ import annotations

from typing import Any, Sequence

from tessera.schemas import encode
from tessera.streams import cloudevents, metrics

from .edge import Decoded


async def publish_dead_letters(dlq: Any, decoded: Sequence[Decoded], agent: str) -> int:
    futures = []
    for d in decoded:
        if d.dead_letter is not None:
            metrics.DEAD_LETTERS.labels(agent, d.topic).inc()
            futures.append(await dlq.send(key=d.topic.encode(), value=encode(d.dead_letter),
                                          headers=cloudevents.headers(d.dead_letter, dlq.get_topic_name())))
    for f in futures:
        await f
    return len(futures)


async def publish_events(topic: Any, events: Sequence[Any]) -> None:
    """Send events keyed per their contract and wait until the broker has them."""
    futures = [await topic.send(key=e.key(), value=encode(e), headers=cloudevents.headers(e, topic.get_topic_name()))
               for e in events]
    for f in futures:
        await f
