"""The memory of identities a consumer keeps to apply the identity rule: an ``event_id``
names one event, a ``request_id`` one request, so a second sighting is a duplicate.

Duplicates are recent by nature (a redelivery after a crash, a producer's retry), so the
memory keeps the newest ids and forgets the oldest when a worker saves a checkpoint:
without a bound, the memory, the checkpoint and so the restart time would grow with history.
"""

from __future__ import annotations

from itertools import islice

#: Ids kept per memory (about 100 MB at most).
REMEMBERED_IDS = 1_000_000


class RecentIds(dict):
    """A set, oldest first, that can forget its oldest (a dict: id -> optional value)."""

    def add(self, key: str) -> None:
        self[key] = None

    def trim(self, keep: int) -> int:
        """Forget all but the newest ``keep``; returns how many were forgotten."""
        extra = len(self) - keep
        for key in list(islice(self, max(extra, 0))):
            del self[key]
        return max(extra, 0)
