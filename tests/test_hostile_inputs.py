"""No input can stop a worker: every decoder and every worker's batch step, fed hostile
and careless inputs (tests/hostile.py) and random ones (hypothesis).

The edge must end every input as exactly one valid event or one dead letter that fits in
a Kafka message; the cores behind it must take every valid event, however extreme,
without raising.
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tessera.schemas as s
from tessera.billing.state import BillingState
from tessera.forecast.demand import observation_of_request
from tessera.pricing.agreements import parse_agreements
from tessera.scheduler.core import MAX_PLACES, Scheduler
from tessera.storage.rows import dead_letter_row, event_row
from tessera.streams.edge import decode_message

from .hostile import VALID_HOSTILE, corpus
from .samples import SAMPLES, T0

#: Kafka's default largest message (message.max.bytes): a dead letter must always fit.
KAFKA_MAX_MESSAGE = 1_000_000
CORPUS = corpus()


def _decode(value, topic: str = "requests"):
    spec = s.topic_spec(topic)
    return decode_message(value, topic=f"tessera.{topic}.v1", partition=3, offset=17, key=b"k", spec=spec,
                          consumer="test")


def _fits(dl: s.DeadLetter) -> None:
    wire = s.encode(dl)
    assert len(wire) < KAFKA_MAX_MESSAGE
    assert s.decode(wire) == dl, "a dead letter is itself a valid event"
    assert dl.reason and dl.source_topic and dl.source_offset == 17


@pytest.mark.parametrize("topic", [t.name for t in s.TOPICS])
def test_every_hostile_input_becomes_one_dead_letter_on_every_topic(topic):
    for name, value in CORPUS:
        d = _decode(value, topic)
        assert d.event is None and d.dead_letter is not None, f"{name} was accepted on {topic}"
        _fits(d.dead_letter)
        assert d.dead_letter.original_size == len(value)
        assert d.dead_letter.original_truncated == (len(value) > s.events.MAX_KEPT_BYTES)


def test_the_reasons_say_what_is_wrong():
    reasons = {name: _decode(value).dead_letter.reason for name, value in CORPUS}
    assert "unknown event type" in reasons["unknown event type of 300 characters"]
    assert len(reasons["unknown event type of 300 characters"]) < 200
    assert "exceeds the limit" in reasons["10 MB string"] and "exceeds the limit" in reasons["a message of about 1 MB, under the broker's limit"]
    assert "not valid JSON" in reasons["deep array"]
    assert "valid number" in reasons["vcpu as a string"]
    assert "RFC 3339" in reasons["time as unix seconds"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes_never_stop_the_edge(value):
    d = _decode(value)
    assert (d.event is None) != (d.dead_letter is None)
    if d.dead_letter:
        _fits(d.dead_letter)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner, max_size=5),
    max_leaves=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_type=st.sampled_from(sorted(SAMPLES)), field=st.text(max_size=30), value=_json)
def test_any_field_set_to_anything_never_stops_the_edge(event_type, field, value):
    doc = orjson.loads(s.encode(SAMPLES[event_type]))
    target = doc
    for key in [k for k in ("spec", "per_replica", "agreement") if isinstance(doc.get(k), dict)][:1]:
        target = doc[key]
    target[field or "event_id"] = value
    topic = next(t.name for t in s.TOPICS if event_type in t.event_types)
    d = _decode(json.dumps(doc).encode(), topic)   # json: it writes what orjson refuses (ints > 64 bits)
    assert (d.event is None) != (d.dead_letter is None)
    if d.dead_letter:
        _fits(d.dead_letter)


# --------------------------------------------------------------------------- cores
def _valid(topic: str):
    out = []
    for name, value in VALID_HOSTILE:
        ev = s.decode(value)
        if ev.event_type in s.topic_spec(topic).event_types:
            out.append((name, ev))
    return out


def test_valid_extremes_are_accepted_at_the_edge():
    for name, value in VALID_HOSTILE:
        topic = next(t.name for t in s.TOPICS if s.decode(value).event_type in t.event_types)
        assert _decode(value, topic).event is not None, name


def _resource(i: int, region: str = "eu", provider: str = "own", tags=()) -> s.ResourceDiscovered:
    return s.ResourceDiscovered(resource_id=f"{provider}/n{i}", spec=s.ResourceSpec(
        provider=provider, region=region, capacity=s.Capacity(vcpu=16, memory_bytes=64 << 30), tags=list(tags),
        price_per_hour=Decimal("0.5")))


def test_the_scheduler_takes_every_valid_extreme_and_answers_each_request_once():
    sch = Scheduler()
    for i in range(4):
        sch.apply(_resource(i, tags=[f"rare{i}"]))
    for _name, ev in _valid("resources"):
        assert sch.apply(ev) is None
    requests = [ev for _name, ev in _valid("requests")]
    for q in requests:
        sch.submit(q, 0.0, T0)
    out = sch.run_batch(0.0, T0) + sch.run_batch(1.0, T0 + timedelta(seconds=1))
    answered = {e.request_id for e in out if isinstance(e, (s.AllocationPlaced, s.AllocationRejected,
                                                            s.AllocationQueued))}
    assert answered == {q.request_id for q in requests}


def test_a_batch_beyond_the_packers_tag_bits_is_split_not_failed():
    """70 requests, each requiring one of 70 tags that resources carry: more distinct tags
    than the packer's 62-bit sets; the batch is packed in parts and every request placed."""
    sch = Scheduler(batch_max=100)
    for i in range(70):
        sch.apply(_resource(i, tags=[f"t{i}"]))
    for i in range(70):
        sch.submit(s.WorkloadRequest(request_id=f"q{i}", tenant="t", per_replica=s.Capacity(vcpu=1),
                                     required_tags=[f"t{i}"]), 0.0, T0)
    out = sch.run_batch(0.0, T0)
    assert sorted(e.request_id for e in out if isinstance(e, s.AllocationPlaced)) == sorted(f"q{i}" for i in range(70))
    assert all(e.placements[0].resource_id == f"own/n{e.request_id[1:]}" for e in out
               if isinstance(e, s.AllocationPlaced))


def test_resources_beyond_the_place_limit_are_refused_and_change_nothing():
    sch = Scheduler()
    for i in range(MAX_PLACES):
        assert sch.apply(_resource(i, region=f"r{i}")) is None
    refusal = sch.apply(_resource(999, region="one-too-many"))
    assert refusal and "placement domain" in refusal and "own/n999" not in sch.resources
    assert sch.apply(_resource(0, region="r0")) is None, "an update in a known region is fine"
    sch.apply(s.ResourceRemoved(resource_id="own/n1", provider="own"))
    assert sch.apply(_resource(999, region="one-too-many")) is None, "a freed place can be taken"
    sch.submit(s.WorkloadRequest(request_id="q", tenant="t", per_replica=s.Capacity(vcpu=1)), 0.0, T0)
    assert [e.event_type for e in sch.run_batch(0.0, T0)] == ["allocation.placed"]


def test_billing_forecasting_and_the_sink_take_every_valid_extreme():
    state = BillingState(parse_agreements([{"partner": "gcp", "currency": "USD", "rates": {"vcpu_hour": "0.03"}}]))
    for name, value in VALID_HOSTILE:
        ev = s.decode(value)
        row = event_row(ev, topic="t", partition=0, offset=1, key=b"k")
        assert orjson.loads(row["payload"])["event_id"] == ev.event_id, name
        if isinstance(ev, s.AgreementUpdated):
            with pytest.raises(Exception):      # nonsense terms: the agent dead-letters them
                parse_agreements([ev.agreement | {"rates": "nonsense"}])
        if isinstance(ev, s.WorkloadRequest):
            assert observation_of_request(ev, "t", 0, 1).amounts["vcpu"] >= 0
        state.apply(ev)
    state.outputs(set())
    for name, value in CORPUS:
        dead_letter_row(_decode(value).dead_letter)
