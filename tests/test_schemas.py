"""The event contracts: round trips, precise errors, exact money, UTC time, exported JSON Schemas."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import jsonschema
import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from tests.samples import SAMPLES

import tessera.schemas as s
from tessera.schemas import GIB, AllocationPlaced, AllocationReleased, Capacity, Placement, SlaTier, encode
from tessera.schemas import base as contracts
from tessera.schemas.base import built
from tessera.schemas.jsonschema import JSON_DIR, event_schema, rendered


def test_every_event_type_has_a_sample_and_a_topic():
    assert set(SAMPLES) == set(s.EVENT_TYPES)
    on_topics = {et for t in s.TOPICS for et in t.event_types}
    assert on_topics == set(s.EVENT_TYPES)


@pytest.mark.parametrize("event_type", sorted(SAMPLES))
def test_round_trip_and_envelope(event_type):
    event = SAMPLES[event_type]
    wire = s.encode(event)
    doc = orjson.loads(wire)
    assert doc["schema_version"] == 1 and doc["event_type"] == event_type
    assert doc["event_id"] and doc["event_time"].endswith("Z")
    assert s.decode(wire) == event
    # The contract's key field leads the message key (a checkpoint adds its chunk: owner#chunk).
    assert event.key().split(b"#")[0] == str(getattr(event, type(event).KEY)).encode()


@pytest.mark.parametrize("event_type", sorted(SAMPLES))
def test_encoding_satisfies_exported_json_schema(event_type):
    jsonschema.validate(orjson.loads(s.encode(SAMPLES[event_type])), event_schema(event_type))


def test_checked_in_json_schemas_match_the_code():
    files = rendered()
    on_disk = {p.name for p in JSON_DIR.glob("*.json")}
    assert on_disk == set(files), "run `tessera schemas export`"
    for name, content in files.items():
        assert (JSON_DIR / name).read_bytes() == content, f"{name} is stale; run `tessera schemas export`"


def _request_doc(**changes):
    doc = orjson.loads(s.encode(SAMPLES["workload.request"]))
    doc.update(changes)
    return doc


@pytest.mark.parametrize(
    "doc, field, words",
    [
        (_request_doc(per_replica={"vcpu": "lots"}), "per_replica.vcpu", "valid number"),
        (_request_doc(replicas=0), "replicas", "greater than or equal to 1"),
        (_request_doc(sla_tier="diamond"), "sla_tier", "platinum"),
        (_request_doc(max_price_per_hour=1.25), "max_price_per_hour", "not a JSON number"),
        (_request_doc(max_price_per_hour="1,25"), "max_price_per_hour", "not a decimal"),
        (_request_doc(event_time="2026-01-01T00:00:00"), "event_time", "timezone"),
        (_request_doc(event_type="workload.requested"), "event_type", "unknown event type"),
        (_request_doc(schema_version=2), "schema_version", "not supported"),
        ({k: v for k, v in _request_doc().items() if k != "tenant"}, "tenant", "Field required"),
        (_request_doc(per_replica={"vcpu": 0}), "", "must ask for some"),
    ],
)
def test_decode_errors_name_the_field_and_the_problem(doc, field, words):
    with pytest.raises(s.SchemaError) as err:
        s.decode(orjson.dumps(doc))
    assert err.value.field == field
    assert words in err.value.problem


def test_non_json_and_non_objects_are_schema_errors():
    for raw in (b"\xff\xfe", b"not json", b"[1,2]", b"42"):
        with pytest.raises(s.SchemaError):
            s.decode(raw)


def test_topic_restricts_event_types():
    wire = s.encode(SAMPLES["billing.line"])
    with pytest.raises(s.SchemaError, match="does not belong"):
        s.decode(wire, allowed=s.topic_spec("requests").event_types)


def test_times_are_normalized_to_utc():
    doc = _request_doc(event_time="2026-03-01T02:30:00+02:00")
    event = s.decode(orjson.dumps(doc))
    assert event.event_time == datetime(2026, 3, 1, 0, 30, tzinfo=timezone.utc)
    assert event.event_time.utcoffset() == timedelta(0)


def test_unknown_fields_are_ignored_for_additive_evolution():
    event = s.decode(orjson.dumps(_request_doc(added_in_a_later_minor="x")))
    assert event == SAMPLES["workload.request"]


def test_quantiles_must_not_cross():
    doc = orjson.loads(s.encode(SAMPLES["forecast"]))
    doc["horizons"][0]["quantiles"] = {"0.05": 10.0, "0.5": 5.0, "0.95": 12.0}
    with pytest.raises(s.SchemaError, match="cross"):
        s.decode(orjson.dumps(doc))


@given(st.decimals(allow_nan=False, allow_infinity=False, places=8, min_value=-10**9, max_value=10**9))
@hsettings(max_examples=200, deadline=None)
def test_money_survives_the_wire_exactly(amount):
    line = SAMPLES["billing.line"].model_copy(update={"amount": amount})
    back = s.decode(s.encode(line))
    assert back.amount == amount and isinstance(back.amount, Decimal)


@given(st.binary(max_size=200))
@hsettings(max_examples=300, deadline=None)
def test_arbitrary_bytes_never_crash_the_decoder(raw):
    try:
        s.decode(raw)
    except s.SchemaError:
        pass


def test_dead_letter_keeps_original_bytes():
    dl = SAMPLES["dead_letter"]
    assert base64.b64decode(dl.original_b64) == b"not json"


# -- contracts built by Tessera's own code without validation (``built``) --------------
def _placed_fields(**changes):
    fields = dict(event_id="placed:q1", event_time=datetime(2026, 11, 30, 12, tzinfo=timezone.utc), request_id="q1",
                  tenant="t", sla_tier=SlaTier.gold, allocation_id="alloc:q1",
                  per_replica=Capacity(vcpu=2, memory_bytes=GIB),
                  placements=[Placement(resource_id="r1", provider="gcp", replicas=2,
                                        price_per_hour=Decimal("0.0475"))],
                  required_tags=["ssd"])
    fields.update(changes)
    return fields


def test_built_equals_the_validated_contract_and_encodes_the_same(monkeypatch):
    monkeypatch.setattr(contracts, "CHECK_BUILT", False)
    fast = built(AllocationPlaced, **_placed_fields())
    slow = AllocationPlaced(**_placed_fields())
    assert fast == slow and encode(fast) == encode(slow)
    # defaults and default factories apply as in validation
    released = built(AllocationReleased, request_id="q1", allocation_id="alloc:q1")
    assert released.reason == "completed" and released.placements == [] and released.event_id
    assert released.event_time.tzinfo is not None and released.schema_version == 1


def test_built_refuses_a_missing_required_field():
    with pytest.raises(TypeError, match=r"missing required fields \['allocation_id'\]"):
        built(AllocationReleased, request_id="q1")


@pytest.mark.parametrize("changes", [
    {"required_tags": ("ssd",)},                                               # a tuple, not the list it validates to
    {"event_time": datetime(2026, 11, 30, 13, tzinfo=timezone(timedelta(hours=1)))},   # not in UTC
    {"sla_tier": "gold"},                                                      # text, not the tier
])
def test_the_suite_catches_fields_not_in_their_validated_form(changes):
    assert contracts.CHECK_BUILT     # the suite runs checked (conftest)
    with pytest.raises(AssertionError, match="not in their validated form"):
        built(AllocationPlaced, **_placed_fields(**changes))
