"""The Faust worker's offset commits pass the offsets read_committed never delivers.

The fault harness once saw a Faust worker's committed offsets on ``allocations.v1`` stop
near 800 per partition while processing went on to 1,900, so that a restart replayed
everything since (issue 20). Faust refuses to commit a partition while the lowest acked
offset is more than one past the committed offset, unless it registered the hole as a
gap, which it does only between two records it read. Transaction markers and an aborted
transaction's records (a scheduler killed with -9 leaves one) are such holes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faust.transport.drivers import aiokafka as faust_kafka
from faust.types import TP, Message

from tessera.streams.app import create_app

TOPIC = "tessera.allocations.v1"
tp = TP(TOPIC, 0)


@pytest.fixture
def consumer(base_settings) -> Any:
    async def build() -> Any:
        return create_app(base_settings, app_id="commit-test").consumer
    return asyncio.run(build())


def _message(offset: int) -> Message:
    return Message(TOPIC, 0, offset, 0.0, 0, None, b"k", b"v", None, tp=tp)


def test_a_hole_after_the_committed_offset_is_committed_over(consumer):
    consumer._committed_offset[tp] = 10      # 10..14: an aborted transaction and its marker
    consumer._acked[tp].extend([15, 16, 17])
    assert faust_kafka.Consumer._new_offset(consumer, tp) is None, "Faust alone stalls here"
    assert consumer._new_offset(tp) == 18


def test_a_record_still_being_processed_holds_the_commit_back(consumer):
    consumer._committed_offset[tp] = 10
    in_flight = _message(12)                 # read, not done: the commit must not pass it
    consumer._unacked_messages.add(in_flight)
    consumer._acked[tp].extend([13, 14])
    assert consumer._new_offset(tp) is None
    consumer._unacked_messages.discard(in_flight)
    consumer._acked[tp].append(12)
    assert consumer._new_offset(tp) == 15


def test_records_in_flight_on_other_partitions_do_not_matter(consumer):
    consumer._committed_offset[tp] = 10
    elsewhere = Message(TOPIC, 1, 12, 0.0, 0, None, b"k", b"v", None, tp=TP(TOPIC, 1))
    consumer._unacked_messages.add(elsewhere)
    consumer._acked[tp].extend([13])
    assert consumer._new_offset(tp) == 14


def test_the_ordinary_cases_are_faust_s(consumer):
    consumer._committed_offset[tp] = 10
    consumer._acked[tp].extend([11, 12, 14])   # one marker at 10 is fine; 13 not acked yet
    assert consumer._new_offset(tp) == 13
    assert consumer._new_offset(TP(TOPIC, 3)) is None
