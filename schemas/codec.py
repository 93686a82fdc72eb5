"""orjson encoding and validating decoding of events.

``decode`` is the edge: it accepts raw bytes from Kafka and returns a typed, validated
event, or raises ``SchemaError`` naming the field and the problem. Agents route a
``SchemaError`` to the dead-letter topic and keep going.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Iterable

import orjson
from pydantic import ValidationError

from .base import MAX_MESSAGE_BYTES, Event
from .events import ALL_EVENTS

EVENT_TYPES: dict[str, type[Event]] = {e.model_fields["event_type"].default: e for e in ALL_EVENTS}


class SchemaError(ValueError):
    """An event that does not satisfy its contract.

    ``field`` is the dotted path of the offending field ('' when the whole message is bad),
    ``problem`` says what is wrong with it.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)


def json_default(obj: object) -> object:
    """orjson ``default``: Decimal as an exact decimal string (money never becomes a float)."""
    if isinstance(obj, Decimal):
        return format(obj, "f")
    raise TypeError(f"cannot encode {type(obj).__name__}")


def encode(event: Event) -> bytes:
    """Event -> JSON bytes. Datetimes as RFC 3339 UTC ('Z'), Decimals as strings."""
    return orjson.dumps(
        event.model_dump(mode="python"),
        default=json_default,
        option=orjson.OPT_UTC_Z | orjson.OPT_PASSTHROUGH_SUBCLASS,
    )


def _loc(loc: Iterable[object]) -> str:
    return ".".join(str(p) for p in loc)


def decode(data: bytes | bytearray | memoryview | str, allowed: Iterable[str] | None = None) -> Event:
    """JSON bytes -> validated Event.

    ``allowed``: the event types this topic may carry; anything else is a SchemaError.
    Validation is strict, as the published JSON Schemas are: a string is never read as a
    number, nor a number as a string.
    """
    if isinstance(data, str):
        data = data.encode()
    elif not isinstance(data, bytes):
        data = bytes(data)
    if len(data) > MAX_MESSAGE_BYTES:
        raise SchemaError("", f"message of {len(data):,} bytes exceeds the limit of {MAX_MESSAGE_BYTES:,} bytes")
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SchemaError("", f"not valid JSON: {exc}") from None
    return _validate(_contract(raw, allowed), data)


def decode_obj(raw: object, allowed: Iterable[str] | None = None) -> Event:
    """A parsed JSON object -> validated Event (as ``decode``)."""
    try:
        data = orjson.dumps(raw)
    except TypeError as exc:
        raise SchemaError("", f"not a JSON document: {exc}") from None
    return decode(data, allowed)


def _validate(cls: type[Event], data: bytes) -> Event:
    try:
        return cls.model_validate_json(data, strict=True)
    except ValidationError as exc:
        raise schema_error(exc) from None


def schema_error(exc: ValidationError) -> SchemaError:
    """What validation found wrong, as the edge reports it: the first problem's field and
    sentence, and how many more there are."""
    first = exc.errors(include_url=False)[0]
    more = exc.error_count() - 1
    problem = first["msg"] + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")
    return SchemaError(_loc(first["loc"])[:200], problem[:500])


def _contract(raw: object, allowed: Iterable[str] | None) -> type[Event]:
    """The contract the envelope names, checked against the topic and the versions read."""
    if not isinstance(raw, dict):
        raise SchemaError("", f"an event must be a JSON object, got {type(raw).__name__}")
    event_type = raw.get("event_type")
    if not isinstance(event_type, str):
        raise SchemaError("event_type", "missing or not a string")
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        raise SchemaError("event_type", f"unknown event type {event_type[:64]!r}")
    if allowed is not None and event_type not in allowed:
        raise SchemaError("event_type", f"{event_type[:64]!r} does not belong on this topic")
    for required in ("event_id", "event_time"):     # defaults in Python, required on the wire
        if required not in raw:
            raise SchemaError(required, "Field required")
    version = raw.get("schema_version")
    if isinstance(version, float) and version.is_integer():
        version = int(version)        # 1.0 is the integer 1 in JSON (see base.Integer)
    if not isinstance(version, int) or isinstance(version, bool):
        raise SchemaError("schema_version", "missing or not an integer")
    if version > cls.SCHEMA_VERSION or version < 1:
        raise SchemaError(
            "schema_version",
            f"version {version} of {event_type!r} is not supported (this consumer reads up to {cls.SCHEMA_VERSION})",
        )
    return cls
