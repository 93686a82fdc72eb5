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

import os
import re
import uuid
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    WithJsonSchema,
)

UTC = timezone.utc
#: Bytes in a GiB. Capacities travel in bytes; GiB appear only where people read or write them.
GIB = 1 << 30

# Limits every input meets at the edge: generous for real use, small enough that no single
# message can cost a worker seconds or gigabytes, or overflow the kernels' integer money.
#: A larger message is dead-lettered without being parsed.
MAX_MESSAGE_BYTES = 256 * 1024
#: Any text field (identifiers have their own, smaller limit).
MAX_TEXT = 1024
#: Items in any list or map of an event (tags, regions, labels, placements, quantiles ...).
MAX_ITEMS = 256
#: Money: at most this many digits before the decimal point and after it.
MONEY_INTEGER_DIGITS = 12
MONEY_FRACTION_DIGITS = 12
#: A resource's price per hour (whole resource, any currency) is below this.
MAX_PRICE_PER_HOUR = 10 ** 6


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})")


def _rfc3339_on_the_wire(value: Any, info: ValidationInfo) -> Any:
    # The JSON Schema says "format": "date-time" (RFC 3339): a number, or a string of one,
    # is not a time on the wire, though pydantic would read it as Unix seconds.
    if info.mode != "json":
        return value
    if not (isinstance(value, str) and _RFC3339.fullmatch(value)):
        raise ValueError("must be an RFC 3339 date-time with a timezone offset, e.g. \"2026-11-30T12:00:00Z\"")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a valid date and time") from None


def _parse_money(value: Any, info: ValidationInfo) -> Decimal:
    # On the wire money is a decimal string: a JSON number may already have lost digits
    # (0.1 + 0.2) in the producer. From Python, Decimal and int are exact and accepted.
    if info.mode == "json" and not isinstance(value, str):
        raise ValueError("money must be a decimal string such as \"0.0475\", not a JSON number")
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError("money must be a decimal string such as \"0.0475\", not a float")
    if isinstance(value, (int, Decimal)):
        d = Decimal(value)
    elif isinstance(value, str):
        # The wire form is plain digits (the JSON Schema's pattern): no exponent, so that
        # "1e999999999" cannot cost seconds and a gigabyte to print back.
        if len(value) > MONEY_INTEGER_DIGITS + MONEY_FRACTION_DIGITS + 2 or not _MONEY_TEXT.fullmatch(value):
            raise ValueError(f"{value[:40]!r} is not a decimal amount like \"0.0475\" (at most "
                             f"{MONEY_INTEGER_DIGITS} digits before the point and {MONEY_FRACTION_DIGITS} after)")
        try:
            d = Decimal(value)
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a decimal number") from None
    else:
        raise ValueError(f"money must be a decimal string, got {type(value).__name__}")
    if not d.is_finite() or d.adjusted() >= MONEY_INTEGER_DIGITS or d.as_tuple().exponent < -MONEY_FRACTION_DIGITS:
        raise ValueError(f"money must be finite, below 10^{MONEY_INTEGER_DIGITS}, with at most "
                         f"{MONEY_FRACTION_DIGITS} decimal places")
    return d


_MONEY_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?")


#: A tz-aware timestamp, stored and emitted in UTC.
UtcTime = Annotated[AwareDatetime, BeforeValidator(_rfc3339_on_the_wire), AfterValidator(_to_utc)]

_MONEY_ON_THE_WIRE = PlainSerializer(lambda d: format(d, "f"), return_type=str, when_used="json")

#: An exact decimal amount; a string on the wire.
Money = Annotated[
    Decimal,
    BeforeValidator(_parse_money),
    _MONEY_ON_THE_WIRE,
    WithJsonSchema({"type": "string", "pattern": rf"^-?[0-9]{{1,{MONEY_INTEGER_DIGITS}}}(\.[0-9]{{1,{MONEY_FRACTION_DIGITS}}})?$",
                    "maxLength": MONEY_INTEGER_DIGITS + MONEY_FRACTION_DIGITS + 2,
                    "description": "decimal amount"}),
]

#: A resource's price per hour: non-negative and below MAX_PRICE_PER_HOUR (so that the
#: packing kernel's integer micro-unit sums cannot overflow). The bounds come before the
#: parser so that pydantic-core checks them in its decimal validator; placed after it
#: (as on ``Money``) they ran as two Python validators, half the cost of every price.
Price = Annotated[
    Decimal,
    Field(ge=0, lt=MAX_PRICE_PER_HOUR),
    BeforeValidator(_parse_money),
    _MONEY_ON_THE_WIRE,
    WithJsonSchema({"type": "string", "pattern": rf"^[0-9]{{1,6}}(\.[0-9]{{1,{MONEY_FRACTION_DIGITS}}})?$",
                    "maxLength": 6 + MONEY_FRACTION_DIGITS + 1,
                    "description": f"non-negative decimal amount below {MAX_PRICE_PER_HOUR}"}),
]

def _integral(value: Any) -> Any:
    # JSON has one number type: 3.0 is the integer 3 to JSON Schema (and to JavaScript,
    # which cannot tell them apart), so the edge reads it as 3 too. 3.5 stays an error.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: An integer on the wire (an integral JSON number). Fields bound it themselves, within
#: int64 (ClickHouse's and Kafka's widest): constraints placed here would not reach the
#: published JSON Schema.
Integer = Annotated[int, BeforeValidator(_integral)]
INT64_MAX = (1 << 63) - 1

#: A bounded, finite quantity (non-negative): capacities, durations, forecasts.
Quantity = Annotated[float, Field(ge=0, le=1e15)]
#: A bounded, finite number that may be negative (scores, deviations).
Number = Annotated[float, Field(ge=-1e15, le=1e15)]

NonEmptyStr = Annotated[str, Field(min_length=1, max_length=256)]
Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:/@+=-]+$")]


def new_event_id() -> str:
    return uuid.uuid4().hex


def utc_now() -> datetime:
    return datetime.now(UTC)


#: Every contract (events and the value objects inside them): unknown fields ignored,
#: immutable, text bounded, numbers finite.
CONTRACT_CONFIG = ConfigDict(extra="ignore", frozen=True, str_max_length=MAX_TEXT, allow_inf_nan=False)


M = TypeVar("M", bound=BaseModel)

#: Whether ``built`` also validates what it builds and fails unless validation gives the
#: same value (equal, of the same types, encoded alike). The test suite sets
#: TESSERA_CHECK_BUILT=1, so every contract a core builds anywhere in the tests is checked;
#: services and the simulator skip it.
CHECK_BUILT = os.environ.get("TESSERA_CHECK_BUILT") == "1"


class _Shape:
    """What ``built`` needs of a contract class, worked out once per class: every field in
    declaration order (the order a contract encodes in) with its default, if any."""

    def __init__(self, cls: type[BaseModel]) -> None:
        fields = cls.model_fields
        self.template = {n: None if f.is_required() or f.default_factory else f.default for n, f in fields.items()}
        self.factories = tuple((n, f.default_factory) for n, f in fields.items() if f.default_factory is not None)
        self.required = frozenset(n for n, f in fields.items() if f.is_required())


_SHAPES: dict[type, _Shape] = {}
# The setters of a model's four slots, called directly: ``object.__setattr__`` looks each
# one up again (contracts are frozen, so plain assignment is refused), three times slower.
_SET_DICT = BaseModel.__dict__["__dict__"].__set__
_SET_FIELDS_SET = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_SET_EXTRA = BaseModel.__dict__["__pydantic_extra__"].__set__
_SET_PRIVATE = BaseModel.__dict__["__pydantic_private__"].__set__


def built(cls: type[M], **fields: Any) -> M:
    """A contract Tessera's own code builds from values that already passed validation (a
    placement made from a validated request and the price book's quantized prices),
    without validating them again: events are validated where they enter, and re-checking
    the scheduler's own output took a tenth of the simulator's time per request. The
    values must be in their validated form (UTC times, lists, exact prices); defaults and
    default factories apply as in validation. (pydantic's own ``model_construct`` is
    slower than validating.)"""
    shape = _SHAPES.get(cls)
    if shape is None:
        shape = _SHAPES[cls] = _Shape(cls)
    values = shape.template.copy()
    values.update(fields)           # keys already there keep their (declaration) order
    for name, factory in shape.factories:
        if name not in fields:
            values[name] = factory()
    if len(values) != len(shape.template) or not shape.required <= fields.keys():
        raise TypeError(f"built({cls.__name__}): missing required fields {sorted(shape.required - fields.keys())} "
                        f"or unknown ones {sorted(values.keys() - shape.template.keys())}")
    model = object.__new__(cls)
    _SET_DICT(model, values)
    _SET_FIELDS_SET(model, set(fields))
    _SET_EXTRA(model, None)
    _SET_PRIVATE(model, None)
    if CHECK_BUILT:
        checked = cls(**values)
        if checked != model or any(type(v) is not type(checked.__dict__[k]) for k, v in values.items()) \
                or checked.model_dump_json() != model.model_dump_json():
            raise AssertionError(f"built({cls.__name__}): fields not in their validated form: {values!r} "
                                 f"validates to {checked!r}")
    return model


class Event(BaseModel):
    """Base of every event contract. Subclasses set ``event_type`` as a Literal and ``KEY``."""

    model_config = CONTRACT_CONFIG

    #: Contract version of this event type. Bump only for incompatible changes.
    SCHEMA_VERSION: ClassVar[int] = 1
    #: Name of the field whose value is the Kafka message key (partitioning on purpose).
    KEY: ClassVar[str] = "event_id"

    # le=1: the only version of every contract so far; a contract that bumps SCHEMA_VERSION
    # redeclares this field with its own bound.
    schema_version: Integer = Field(1, ge=1, le=1, description="contract version of event_type")
    event_type: str
    event_id: Identifier = Field(default_factory=new_event_id, description="unique id; consumers deduplicate on it")
    event_time: UtcTime = Field(default_factory=utc_now, description="when it happened (UTC)")

    def key(self) -> bytes:
        return str(getattr(self, self.KEY)).encode()
