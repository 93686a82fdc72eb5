"""The edge: bytes from Kafka in, validated events (or dead letters) out.

Every agent decodes through here. A message that fails validation becomes a DeadLetter
event carrying the reason, the offending field, the original bytes and the exact origin
(topic, partition, offset); the agent publishes it and goes on with the next message.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from tessera.schemas import DeadLetter, Event, SchemaError, decode
from tessera.schemas.events import MAX_KEPT_BYTES, MAX_REASON
from tessera.schemas.topics import TopicSpec


@dataclass(frozen=True)
class Decoded:
    """Outcome of decoding one message: exactly one of ``event`` / ``dead_letter`` is set."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    event: Event | None = None
    dead_letter: DeadLetter | None = None


def _bytes(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return str(value).encode()


def decode_message(
    value: Any, *, topic: str, partition: int, offset: int, key: Any, spec: TopicSpec, consumer: str
) -> Decoded:
    """Exactly one valid event or one dead letter, whatever ``value`` holds: this never
    raises, so no message can stop the worker that reads it."""
    raw = _bytes(value)
    k = _bytes(key) if key is not None else None
    try:
        event = decode(raw, allowed=spec.event_types)
    except SchemaError as exc:
        problem, field = str(exc), exc.field
    except Exception as exc:  # noqa: BLE001 - a decoder bug must not stop the worker either
        problem, field = f"could not be decoded ({type(exc).__name__}: {exc})", ""
    else:
        return Decoded(topic, partition, offset, k, event=event)
    dl = dead_letter(problem, field=field, topic=topic, partition=partition, offset=offset, key=k, value=raw,
                     consumer=consumer)
    return Decoded(topic, partition, offset, k, dead_letter=dl)


def dead_letter(reason: str, *, topic: str, partition: int, offset: int, key: bytes | None, value: bytes,
                consumer: str, field: str = "") -> DeadLetter:
    """A dead letter that is always valid and always fits in a Kafka message: the reason
    and field are cut to their limits, and only the first MAX_KEPT_BYTES of the key and
    value are kept (``original_truncated`` says so; ``original_size`` is the whole size)."""
    kept = value[:MAX_KEPT_BYTES]
    return DeadLetter(
        reason=_cut(reason or "invalid", MAX_REASON),
        field=_cut(field, 200),
        source_topic=_cut(topic or "?", 249),
        source_partition=max(partition, 0),
        source_offset=max(offset, 0),
        source_key_b64=base64.b64encode(key[:MAX_KEPT_BYTES]).decode() if key else "",
        original_b64=base64.b64encode(kept).decode(),
        original_size=len(value),
        original_truncated=len(kept) < len(value),
        consumer=_cut(consumer, 128),
    )


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def decode_record(record: Any, spec: TopicSpec, consumer: str) -> Decoded:
    """Decode a consumer record (aiokafka's ``ConsumerRecord``: value, topic, partition,
    offset, key), the way every batch consumer reads its input."""
    return decode_message(record.value, topic=record.topic, partition=record.partition, offset=record.offset,
                          key=record.key, spec=spec, consumer=consumer)


def decode_faust_event(fevent: Any, spec: TopicSpec, consumer: str) -> Decoded:
    """Decode a ``faust.Event`` (keeps Faust types out of the signature above)."""
    m = fevent.message
    return decode_message(
        fevent.value, topic=m.topic, partition=m.partition, offset=m.offset, key=m.key, spec=spec, consumer=consumer
    )
