"""The compiled key partitioner puts every key where every other Kafka client does."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tessera.streams.partitioner import Murmur2Partitioner, murmur2


def signed(h: int) -> int:
    return h - (1 << 32) if h >= 1 << 31 else h


def test_matches_the_java_clients_test_vectors():
    # org.apache.kafka.common.utils.UtilsTest#testMurmur2
    cases = {"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536,
             "a-little-bit-longer-string": -1486304829,
             "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971, "abc": 479470107}
    for text, expected in cases.items():
        assert signed(murmur2(text.encode())) == expected, text


@hsettings(max_examples=500, deadline=None)
@given(st.binary(max_size=80), st.integers(min_value=1, max_value=64))
def test_equals_aiokafkas_hash_and_partition(key, partitions):
    assert murmur2(key) == aiokafka_murmur2(key)
    parts = list(range(partitions))
    assert Murmur2Partitioner()(key, parts, parts) == DefaultPartitioner()(key, parts, parts)


def test_unkeyed_records_go_to_an_available_partition():
    p = Murmur2Partitioner()
    assert {p(None, [0, 1, 2], [2]) for _ in range(20)} == {2}
    assert p(None, [0, 1, 2], []) in {0, 1, 2}
