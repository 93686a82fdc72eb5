"""Checkpoints: a worker's state saved to a compacted topic, so that it outlives retention.

A worker that rebuilds its state by reading its input topics from the beginning forgets
whatever the broker's retention deleted (a week by default: long-running allocations,
resources that never changed) and takes longer to start the more history there is. So the
scheduler and the billing agent save their state every so often as a ``checkpoint`` on
the compacted ``checkpoints`` topic, with the position in each input topic that the state
includes. On start they load the newest complete checkpoint and read their inputs on from
those positions only: restart time follows the state's size and the events since the
checkpoint, not the length of history, and retention only has to outlast the checkpoint
interval (minutes), not the life of an allocation.

The state is pickled (the cores are plain Python objects; a hand-written codec for each
would be a second model of them to keep true), zlib-compressed, base64-encoded and split
into chunks that fit the edge's message limit. Loading uses an unpickler that resolves only
Tessera's own classes and a short list of standard and NumPy types, so a record on the topic
can at worst fail to load, never run code; the broker's ACLs (tessera.infra.acl_policy) let
only the owning worker write its checkpoints in any case. A checkpoint that fails to load is
skipped with a warning and the worker falls back to the one before it, or to a full read.
"""

from __future__ import annotations

import base64
import io
import logging
import pickle
import zlib
from dataclasses import dataclass
from typing import Any, Iterable

from tessera.config import Settings
from tessera.schemas import Checkpoint, InputPosition
from tessera.schemas.events import CHECKPOINT_CHUNK_B64
from tessera.schemas.topics import topic_spec

from .edge import decode_record
from .reader import read_to_end

log = logging.getLogger(__name__)

#: Bump when a saved state's layout changes incompatibly: older checkpoints are then ignored.
STATE_VERSION = 2

#: Modules whose classes a checkpoint may name (prefix match on the dotted module path).
_ALLOWED_MODULES = ("tessera.", "numpy", "decimal", "datetime", "collections", "fractions", "enum",
                    "pydantic", "pydantic_core", "river.", "zoneinfo", "uuid")
_ALLOWED_BUILTINS = frozenset({"set", "frozenset", "dict", "list", "tuple", "bytes", "bytearray", "complex",
                               "float", "int", "str", "bool", "slice", "range", "object"})
_ALLOWED_COPYREG = frozenset({("copyreg", "_reconstructor"), ("copyreg", "__newobj__"), ("_codecs", "encode")})


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: incomplete, a newer layout, or a refused class."""


class _StateUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module == "builtins" and name in _ALLOWED_BUILTINS) or (module, name) in _ALLOWED_COPYREG \
                or any(module == m.rstrip(".") or module.startswith(m) for m in _ALLOWED_MODULES):
            return super().find_class(module, name)
        raise CheckpointError(f"a checkpoint may not name {module}.{name}")


def dumps(state: Any) -> bytes:
    return zlib.compress(pickle.dumps(state, protocol=5), 3)


def loads(data: bytes) -> Any:
    try:
        return _StateUnpickler(io.BytesIO(zlib.decompress(data))).load()
    except CheckpointError:
        raise
    except Exception as exc:     # corrupt bytes: any of a dozen exception types
        raise CheckpointError(f"the checkpoint's state does not load: {exc}") from exc


def checkpoint_events(owner: str, checkpoint_id: int, state: Any,
                      positions: dict[tuple[str, int], int]) -> list[Checkpoint]:
    """The events of one checkpoint: ``state`` saved in chunks, with the next offset to read
    per (topic, partition). Publish them in one transaction with what the state includes."""
    blob = base64.b64encode(dumps(state)).decode()
    parts = [blob[i:i + CHECKPOINT_CHUNK_B64] for i in range(0, len(blob), CHECKPOINT_CHUNK_B64)] or [""]
    pos = [InputPosition(topic=t, partition=p, offset=off) for (t, p), off in sorted(positions.items())]
    return [Checkpoint(owner=owner, checkpoint_id=checkpoint_id, chunk=i, chunks=len(parts),
                       state_version=STATE_VERSION, positions=pos if i == 0 else [], payload_b64=part)
            for i, part in enumerate(parts)]


@dataclass(frozen=True)
class Restored:
    checkpoint_id: int
    state: Any
    #: Next offset to read per (topic, partition).
    positions: dict[tuple[str, int], int]
    size_bytes: int

    def by_topic(self) -> dict[str, dict[int, int]]:
        """The positions as topic -> {partition: next offset}, the way ``read_span`` takes a start."""
        out: dict[str, dict[int, int]] = {}
        for (topic, part), off in self.positions.items():
            out.setdefault(topic, {})[part] = off
        return out


def newest(events: Iterable[Checkpoint], owner: str) -> Restored | None:
    """The newest checkpoint of ``owner`` whose chunks are all present and that loads."""
    by_id: dict[int, dict[int, Checkpoint]] = {}
    for e in events:
        if e.owner == owner and e.state_version == STATE_VERSION:
            by_id.setdefault(e.checkpoint_id, {})[e.chunk] = e
    for cid in sorted(by_id, reverse=True):
        chunks = by_id[cid]
        n = next(iter(chunks.values())).chunks
        if sorted(chunks) != list(range(n)):
            continue    # compaction keeps each chunk key's newest: an older, longer one is partial
        blob = base64.b64decode("".join(chunks[i].payload_b64 for i in range(n)))
        try:
            state = loads(blob)
        except CheckpointError as exc:
            log.warning("checkpoint %d of %s skipped: %s", cid, owner, exc)
            continue
        positions = {(p.topic, p.partition): p.offset for p in chunks[0].positions}
        return Restored(cid, state, positions, len(blob))
    return None


async def load_checkpoint(settings: Settings, owner: str, consumer: str) -> Restored | None:
    """The newest complete checkpoint of ``owner`` on the checkpoints topic, or None."""
    return (await load_checkpoints(settings, [owner], consumer))[owner]


async def load_checkpoints(settings: Settings, owners: Iterable[str], consumer: str) -> dict[str, Restored | None]:
    """The newest complete checkpoint of each of ``owners`` (None for none), in one read."""
    spec = topic_spec("checkpoints")
    records = await read_to_end(settings, spec.full_name(settings.topic_prefix), spec.partitions,
                                committed_only=True)
    events = []
    for r in records:
        d = decode_record(r, spec, consumer)
        if isinstance(d.event, Checkpoint):
            events.append(d.event)
    return {owner: newest(events, owner) for owner in owners}
