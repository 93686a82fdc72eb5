"""Checkpoints without a broker: chunking, the newest complete one wins, and loading runs no code."""

from __future__ import annotations

import base64
import os
import pickle
import zlib

import pytest

from tessera.schemas import Checkpoint, decode, encode
from tessera.schemas.events import CHECKPOINT_CHUNK_B64
from tessera.streams.checkpoint import CheckpointError, checkpoint_events, loads, newest


def test_a_large_state_travels_in_chunks_that_pass_the_edge_and_comes_back_whole():
    state = {"blob": os.urandom(600_000), "n": 3}          # incompressible: several chunks
    events = checkpoint_events("scheduler/eu", 7, state, {("tessera.allocations.v1", 2): 41})
    assert len(events) > 2 and all(len(e.payload_b64) <= CHECKPOINT_CHUNK_B64 for e in events)
    assert len({e.key() for e in events}) == len(events)    # one compaction key per chunk
    wire = [decode(encode(e)) for e in events]              # every chunk is a valid event
    restored = newest(wire, "scheduler/eu")
    assert restored.state == state and restored.checkpoint_id == 7
    assert restored.positions == {("tessera.allocations.v1", 2): 41}


def test_the_newest_complete_checkpoint_wins_and_a_partial_one_is_skipped():
    old = checkpoint_events("billing", 1, "old", {})
    new = checkpoint_events("billing", 2, {"blob": os.urandom(300_000)}, {})
    other = checkpoint_events("scheduler/global", 9, "not mine", {})
    assert newest([*old, *new, *other], "billing").checkpoint_id == 2
    assert newest([*old, *new[1:], *other], "billing").state == "old"     # chunk 0 of 2 missing
    assert newest(other, "billing") is None


def test_loading_refuses_a_state_that_names_anything_outside_tessera():
    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with pytest.raises(CheckpointError, match="may not name"):
        loads(zlib.compress(pickle.dumps(Boom())))
    evil = Checkpoint(owner="billing", checkpoint_id=5, chunk=0, chunks=1,
                      payload_b64=base64.b64encode(zlib.compress(pickle.dumps(Boom()))).decode())
    fine = checkpoint_events("billing", 4, "fine", {})
    assert newest([*fine, evil], "billing").state == "fine"   # falls back to the one before
    with pytest.raises(CheckpointError, match="does not load"):
        loads(b"not zlib")


def test_a_scheduler_restored_from_a_checkpoint_decides_exactly_as_the_one_saved():
    from datetime import datetime, timezone
    from decimal import Decimal

    import tessera.schemas as s
    from tessera.scheduler.core import Scheduler

    now, now_dt = 1_800_000_000.0, datetime(2027, 1, 15, tzinfo=timezone.utc)
    core = Scheduler()
    for i in range(4):
        core.apply(s.ResourceDiscovered(resource_id=f"own/n{i}", spec=s.ResourceSpec(
            provider="own", region="eu", capacity=s.Capacity(vcpu=8, memory_bytes=16 << 30),
            price_per_hour=Decimal("0.20"))))

    def req(i):
        return s.WorkloadRequest(request_id=f"q{i}", tenant="t", replicas=1 + i % 2,
                                 per_replica=s.Capacity(vcpu=1 + i % 3, memory_bytes=1 << 30))

    for i in range(12):
        core.submit(req(i), now, now_dt)
    core.run_batch(now, now_dt, batch_id="b1")
    restored = newest(checkpoint_events("scheduler/global", 1, {"core": core}, {}), "scheduler/global").state["core"]
    assert restored.allocations.keys() == core.allocations.keys()
    assert restored.allocations["alloc:q3"].placement_events == core.allocations["alloc:q3"].placement_events
    for c in (core, restored):
        for i in range(12, 20):
            c.submit(req(i), now, now_dt)
    a, b = (c.run_batch(now, now_dt, batch_id="b2") for c in (core, restored))
    strip = lambda evs: [(e.event_type, getattr(e, "allocation_id", ""), getattr(e, "placements", None)) for e in evs]  # noqa: E731
    assert strip(a) == strip(b) and a
    assert restored.release("alloc:q3")[0].placements == core.release("alloc:q3")[0].placements
