"""Kafka's key partitioner (murmur2, as the Java client computes it), compiled.

Every keyed event Tessera produces picks its partition by hashing the key. aiokafka's
``DefaultPartitioner`` does that in pure Python, a visible share of the scheduler's CPU
at thousands of events a second; this is the same function compiled with Numba
(``python -m load.bench_partitioner`` times both side by side; figures in
docs/benchmarks.md). The partition a key lands on is unchanged, which matters: other
clients (the Java one, Faust, kcat) must agree on where a key lives. ``tests/test_partitioner.py`` checks it
against aiokafka's implementation and against the Java client's published test vectors.
"""

from __future__ import annotations

import random

try:
    from numba import njit
except ImportError:          # a client-only install (no `worker` extra): the same hash, in Python
    njit = None

_MASK = 0xFFFFFFFF


def _murmur2_py(data):
    # Unsigned 32-bit arithmetic in int64 with explicit masks: every product is of two
    # values below 2**32 and 2**31, so it fits.
    m = 0x5BD1E995
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    for i in range(length // 4):
        j = 4 * i
        k = data[j] | (data[j + 1] << 8) | (data[j + 2] << 16) | (data[j + 3] << 24)
        k = (k * m) & _MASK
        k ^= k >> 24
        k = (k * m) & _MASK
        h = (h * m) & _MASK
        h ^= k
    rest = length & 3
    tail = length & ~3
    if rest >= 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & _MASK
    h ^= h >> 13
    h = (h * m) & _MASK
    h ^= h >> 15
    return h


_murmur2 = njit(cache=True)(_murmur2_py) if njit is not None else _murmur2_py


def murmur2(key: bytes) -> int:
    """Kafka's murmur2 of ``key`` as an unsigned 32-bit integer (aiokafka's convention)."""
    # Numba reads bytes in place; other buffers (bytearray, memoryview) are copied once.
    return int(_murmur2(key if type(key) is bytes else bytes(key)))


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's key partitioner puts ``key`` in: ``toPositive(murmur2) % n``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class Murmur2Partitioner:
    """Drop-in for aiokafka's ``DefaultPartitioner`` (and Faust's ``producer_partitioner``):
    keyed records go to ``toPositive(murmur2(key)) % partitions`` as in every Kafka client;
    unkeyed ones to a random available partition."""

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        return all_partitions[partition_of(key, len(all_partitions))]
