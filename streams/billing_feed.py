"""The billing feed: allocation and migration events re-keyed by partner.

Billing state is a ledger per partner, but the allocations topic is keyed by request and
the migrations topic by migration, so a billing worker reading them needs every partition
and there can be only one. The scheduler and the migration agent therefore also write each
such event to the ``billing-feed`` topic, once per partition of the partners it concerns
(the placements' providers; a migration's source and target), keyed by partner, in the
same transaction as the original. Billing workers share that topic's partitions through
their consumer group: each partition is a *shard* of partners with its own state and
checkpoint, owned by one worker at a time.

An event can name partners of several shards (a placement split between own capacity and a
partner; a migration between partners); each shard's copy is the whole event, and each
shard bills only its own partners (``owns``). A migration to another shard's partner carries
what the target needs (tenant, capacity per replica, the target's price), since that shard
never saw the placement.
"""

from __future__ import annotations

from typing import Callable, Iterable

from tessera.schemas import (
    AllocationPlaced,
    AllocationReleased,
    Event,
    FeedTick,
    MigrationDone,
    MigrationFailed,
    MigrationProgress,
)
from tessera.schemas.topics import topic_spec

from . import cloudevents
from .partitioner import partition_of
from .produce import event_record, send_batched

FEED = "billing-feed"
PARTITIONS = topic_spec(FEED).partitions


def shard_of(partner: str, partitions: int = PARTITIONS) -> int:
    """The feed partition (billing shard) that holds ``partner``'s events: where Kafka's
    key partitioner puts the key."""
    return partition_of(partner.encode(), partitions)


def owned_by(shards: frozenset[int] | set[int], partitions: int = PARTITIONS) -> Callable[[str], bool]:
    """Whether a partner is billed by the shards ``shards``."""
    cache: dict[str, bool] = {}

    def owns(partner: str) -> bool:
        hit = cache.get(partner)
        if hit is None:
            hit = cache[partner] = shard_of(partner, partitions) in shards
        return hit
    return owns


def partners_of(e: Event) -> list[str]:
    """The partners an allocation or migration event concerns, sorted (none for others)."""
    if isinstance(e, (AllocationPlaced, AllocationReleased)):
        return sorted({p.provider for p in e.placements})
    if isinstance(e, (MigrationProgress, MigrationDone, MigrationFailed)):
        return sorted({p for p in (e.source_provider, e.target_provider) if p})
    return []


def feed_records(prefix: str, e: Event, partitions: int = PARTITIONS, original: tuple | None = None) -> list[tuple]:
    """The records (``send_batched`` form) that copy ``e`` to the feed: one per shard among
    its partners, keyed by the first partner of that shard. With ``original`` (the event's
    record for its own topic, from ``event_record``), its encoded value and headers are
    reused rather than encoded again: the scheduler copies thousands a second."""
    topic = topic_spec(FEED).full_name(prefix)
    first: dict[int, str] = {}
    for partner in partners_of(e):
        first.setdefault(shard_of(partner, partitions), partner)
    if original is None:
        return [event_record(topic, e, partner.encode()) for _, partner in sorted(first.items())]
    here = cloudevents.source(topic)
    headers = [(k, here if k == "ce_source" else v) for k, v in original[3]]
    return [(topic, partner.encode(), original[2], headers) for _, partner in sorted(first.items())]


def _tick_keys(partitions: int) -> list[bytes]:
    """A key per feed partition that Kafka's partitioner puts there (found once, by trying)."""
    keys: dict[int, bytes] = {}
    n = 0
    while len(keys) < partitions:
        key = f"tick-{n}".encode()
        keys.setdefault(partition_of(key, partitions), key)
        n += 1
    return [keys[p] for p in range(partitions)]


_TICK_KEYS = _tick_keys(PARTITIONS)


def tick_records(prefix: str, at) -> list[tuple]:
    """Clock ticks at ``at`` (a UTC datetime: the latest event time written to the feed) for
    every feed partition: every billing shard's month to date then runs to the same time,
    as one agent's did."""
    topic = topic_spec(FEED).full_name(prefix)
    return [event_record(topic, FeedTick(event_time=at, shard=p), _TICK_KEYS[p]) for p in range(PARTITIONS)]


async def send_to_feed(producer, prefix: str, events: Iterable[Event]) -> int:
    """Copy allocation and migration events to the feed outside a worker (tools, tests, a
    producer other than the scheduler placing work); returns once the broker has them."""
    records = [r for e in events for r in feed_records(prefix, e)]
    for f in await send_batched(producer, records):
        await f
    return len(records)
