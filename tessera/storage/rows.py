"""Rows for the ``events`` and ``dead_letters`` tables (pure: no Kafka, no Faust)."""

from __future__ import annotations

import hashlib
from typing import Any, Iterable

from tessera.schemas import DeadLetter, Event, encode


def event_row(event: Event, *, topic: str, partition: int, offset: int, key: bytes | None) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "schema_version": event.schema_version,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": (key or b"").decode("utf-8", "replace"),
        "event_time": event.event_time,
        "payload": encode(event).decode(),
    }


def dead_letter_row(dl: DeadLetter) -> dict[str, Any]:
    return {
        "event_id": dl.event_id,
        "event_time": dl.event_time,
        "reason": dl.reason,
        "field": dl.field,
        "consumer": dl.consumer,
        "source_topic": dl.source_topic,
        "source_partition": dl.source_partition,
        "source_offset": dl.source_offset,
        "original_b64": dl.original_b64,
    }


def batch_token(table: str, spans: Iterable[tuple[str, int, int, int]]) -> str:
    """Insert deduplication token of a batch made of (topic, partition, first offset, last
    offset) spans: a redelivered identical batch is dropped by ClickHouse. Hashed, because a
    batch across every topic's partitions would make a token of kilobytes."""
    text = ";".join(f"{t}/{p}/{a}-{b}" for t, p, a, b in sorted(spans))
    return f"{table}/{hashlib.sha1(text.encode()).hexdigest()}"
