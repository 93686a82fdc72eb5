"""SLA priority queues with aging and deadlines (pure; time is passed in).

One FIFO per tier. A batch takes up to ``batch_max`` requests by *effective* rank: the
tier's rank minus one for every ``aging_s`` seconds waited, so a bronze request that has
waited 3 x aging_s competes as platinum and lower tiers cannot starve. Ties break on
arrival order. Expired requests (deadline passed) are handed back for rejection.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterator

from tessera.schemas import TIER_RANK, TIERS, WorkloadRequest


@dataclass
class Queued:
    request: WorkloadRequest
    enqueued_at: float  # seconds (event-time clock of the scheduler)
    seq: int
    notified: bool = False  # a "queued" event was already emitted for it
    #: (capacity epoch, aged tier) when it last failed for want of capacity: until capacity
    #: is freed or its tier ages, trying it again cannot succeed.
    failed_at: tuple[int, str] | None = None

    def effective_rank(self, now: float, aging_s: float) -> float:
        waited = max(now - self.enqueued_at, 0.0)
        return TIER_RANK[self.request.sla_tier.value] - (waited / aging_s if aging_s > 0 else 0.0)

    def aged_tier(self, now: float, aging_s: float) -> str:
        return TIERS[max(0, min(3, int(self.effective_rank(now, aging_s) + 0.999999)))]


@dataclass
class SchedulingQueue:
    batch_max: int = 1000
    aging_s: float = 60.0
    _items: dict[str, Queued] = field(default_factory=dict)
    _seq: int = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._items

    def push(self, request: WorkloadRequest, now: float) -> bool:
        """Queue a request; False if it is already queued (a redelivery)."""
        if request.request_id in self._items:
            return False
        self._seq += 1
        self._items[request.request_id] = Queued(request, now, self._seq)
        return True

    def remove(self, request_id: str) -> Queued | None:
        return self._items.pop(request_id, None)

    def expired(self, now_dt: datetime) -> list[Queued]:
        out = [q for q in self._items.values() if q.request.deadline is not None and q.request.deadline < now_dt]
        if not out:          # every batch asks; hardly any finds one
            return out
        for q in out:
            del self._items[q.request.request_id]
        return sorted(out, key=lambda q: q.seq)

    def ordered(self, now: float) -> list[Queued]:
        return sorted(self._items.values(), key=lambda q: (q.effective_rank(now, self.aging_s), q.seq))

    def next_batch(self, now: float, epoch: int | None = None) -> list[Queued]:
        """Up to batch_max requests, best effective rank first (they stay queued until decided).
        With ``epoch`` (the scheduler's capacity epoch), requests that already failed for
        want of capacity at this epoch and aged tier are left out: nothing they could use
        was freed since, and re-packing a long queue at every batch is what made a
        scheduler's batches grow with its queue."""
        items = self._items.values()
        if epoch is not None:
            items = [q for q in items if q.failed_at is None or q.failed_at[0] != epoch
                     or q.failed_at[1] != q.aged_tier(now, self.aging_s)]
        if len(items) <= 1 and self.batch_max >= 1:     # the usual batch of a running fleet: no ranking to do
            return list(items)
        return heapq.nsmallest(self.batch_max, items, key=lambda q: (q.effective_rank(now, self.aging_s), q.seq))

    def positions(self, now: float) -> dict[str, int]:
        return {q.request.request_id: i for i, q in enumerate(self.ordered(now))}

    def __iter__(self) -> Iterator[Queued]:
        return iter(self._items.values())
