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
    raw = _bytes(value)
    k = _bytes(key) if key is not None else None
    try:
        event = decode(raw, allowed=spec.event_types)
    except SchemaError as exc:
        dl = DeadLetter(
            reason=str(exc)[:2000],
            field=exc.field,
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            source_key_b64=base64.b64encode(k).decode() if k else "",
            original_b64=base64.b64encode(raw).decode(),
            consumer=consumer,
        )
        return Decoded(topic, partition, offset, k, dead_letter=dl)
    return Decoded(topic, partition, offset, k, event=event)


def decode_faust_event(fevent: Any, spec: TopicSpec, consumer: str) -> Decoded:
    """Decode a ``faust.Event`` (keeps Faust types out of the signature above)."""
    m = fevent.message
    return decode_message(
        fevent.value, topic=m.topic, partition=m.partition, offset=m.offset, key=m.key, spec=spec, consumer=consumer
    )
