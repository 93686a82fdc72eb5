"""The envelope every Tessera event shares, the field types, and the codec.

Wire format: one JSON object per Kafka message, encoded with orjson. Every event has

* ``schema_version`` -- integer, the contract version of its ``event_type``;
* ``event_type``     -- e.g. ``allocation.placed``; selects the contract;
* ``event_id``       -- unique per event; consumers deduplicate on it;
* ``event_time``     -- when it happened, RFC 3339 with an offset, normalized to UTC.

Money is a decimal *string* on the wire ("0.0475"), never a JSON float, and a
``Decimal`` in Python. Quantities of resources are numbers in base units (cores, bytes,
Gbps, GPUs). Unknown fields are ignored so that producers can add fields within a
version (additive changes only); a missing or ill-typed field is an error.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)

UTC = timezone.utc
#: Bytes in a GiB. Capacities travel in bytes; GiB appear only where people read or write them.
GIB = 1 << 30


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _parse_money(value: Any) -> Decimal:
    # Floats cannot represent most prices exactly; refuse them at the edge.
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError("money must be a decimal string such as \"0.0475\", not a JSON number with a fraction")
    if isinstance(value, (int, Decimal)):
        return Decimal(value)
    if isinstance(value, str):
        try:
            d = Decimal(value)
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a decimal number") from None
        if not d.is_finite():
            raise ValueError("money must be finite")
        return d
    raise ValueError(f"money must be a decimal string, got {type(value).__name__}")


#: A tz-aware timestamp, stored and emitted in UTC.
UtcTime = Annotated[AwareDatetime, AfterValidator(_to_utc)]

#: An exact decimal amount; a string on the wire.
Money = Annotated[
    Decimal,
    BeforeValidator(_parse_money),
    PlainSerializer(lambda d: format(d, "f"), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$", "description": "decimal amount"}),
]

NonEmptyStr = Annotated[str, Field(min_length=1, max_length=256)]
Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:/@+=-]+$")]


def new_event_id() -> str:
    return uuid.uuid4().hex


def utc_now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Base of every event contract. Subclasses set ``event_type`` as a Literal and ``KEY``."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=False)

    #: Contract version of this event type. Bump only for incompatible changes.
    SCHEMA_VERSION: ClassVar[int] = 1
    #: Name of the field whose value is the Kafka message key (partitioning on purpose).
    KEY: ClassVar[str] = "event_id"

    schema_version: int = Field(1, ge=1, description="contract version of event_type")
    event_type: str
    event_id: Identifier = Field(default_factory=new_event_id, description="unique id; consumers deduplicate on it")
    event_time: UtcTime = Field(default_factory=utc_now, description="when it happened (UTC)")

    def key(self) -> bytes:
        return str(getattr(self, self.KEY)).encode()
