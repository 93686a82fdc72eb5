"""The resource side of a batch as arrays, kept between batches by a live scheduler."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Iterable, Sequence

import numpy as np

from .kernel import _inverse_square, type_ids

MICRO = Decimal(1_000_000)


@dataclass(slots=True)     # not frozen: a frozen dataclass's __init__ costs four times as
class PackResource:         # much, and the migration planner builds the fleet's for every try
    id: str
    provider: str
    region: str
    free: tuple[float, ...]  # per dimension, same order as the batch's dims
    capacity: tuple[float, ...]
    price_per_hour: Decimal
    tags: frozenset[str] = frozenset()
    open: bool = False


class PackingError(ValueError):
    pass


def bitset(names: Iterable[str], index: dict[str, int]) -> int:
    v = 0
    for n in names:
        v |= 1 << index[n]
    return v


def index_names(values: Iterable[str], what: str) -> dict[str, int]:
    idx: dict[str, int] = {}
    for v in values:
        if v not in idx:
            idx[v] = len(idx)
    if len(idx) > 62:
        raise PackingError(f"more than 62 distinct {what} in one batch; split the batch by placement domain")
    return idx


@dataclass
class ResourceTable:
    """The resource side of a batch as arrays, built once and then kept.

    Building it walks every resource in Python; a live scheduler keeps one table and only
    writes the rows placements and releases change (``free``, ``open``), so a batch costs
    what its requests cost, not what the fleet costs. ``with_state`` gives a view with
    other free capacity (e.g. headroom held back) that shares the static arrays.
    """

    ids: list[str]
    tags: list[frozenset[str]]
    prices: list[Decimal]
    free: np.ndarray         # (S, D) float64
    cap: np.ndarray          # (S, D) float64
    open: np.ndarray         # (S,) bool: already running something (no opening cost)
    price_micro: np.ndarray  # (S,) int64, micro-units per hour
    region_idx: dict[str, int]
    provider_idx: dict[str, int]
    res_region: np.ndarray
    res_provider: np.ndarray
    _has_tag: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    #: What is worked out from the static columns once and shared by every ``with_state``
    #: view (they share this dict): the all-zero tag bits, 1 / capacity², the one-request
    #: lane's inputs per request shape (``packing``).
    derived: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_resources(cls, resources: Sequence[PackResource], D: int | None = None) -> "ResourceTable":
        D = D if D is not None else (len(resources[0].capacity) if resources else 1)
        region_idx = index_names(sorted({r.region for r in resources}), "regions")
        prov_idx = index_names(sorted({r.provider for r in resources}), "providers")
        S = len(resources)
        return cls(
            ids=[r.id for r in resources], tags=[r.tags for r in resources],
            prices=[r.price_per_hour for r in resources],
            free=np.array([r.free for r in resources], dtype=np.float64).reshape(S, D),
            cap=np.array([r.capacity for r in resources], dtype=np.float64).reshape(S, D),
            open=np.array([r.open for r in resources], dtype=np.bool_),
            price_micro=np.array([int((r.price_per_hour * MICRO).to_integral_value()) for r in resources],
                                 dtype=np.int64),
            region_idx=region_idx, provider_idx=prov_idx,
            res_region=np.array([region_idx[r.region] for r in resources], dtype=np.int64),
            res_provider=np.array([prov_idx[r.provider] for r in resources], dtype=np.int64))

    def __len__(self) -> int:
        return len(self.ids)

    def with_state(self, free: np.ndarray, open_: np.ndarray | None = None) -> "ResourceTable":
        # A shallow copy with two fields changed, without dataclasses.replace's re-run of
        # __init__ (a live batch takes a few views: this is on every request's path).
        view = object.__new__(ResourceTable)
        view.__dict__.update(self.__dict__)
        view.free = free
        if open_ is not None:
            view.open = open_
        return view

    def subset(self, rows: Sequence[int]) -> "ResourceTable":
        """The table of some of its resources (``rows``, in their order). Regions and
        providers keep their bits: a batch packed on several subsets of one fleet builds
        the table once (the migration planner offers its fleet in price classes)."""
        at = np.asarray(rows, dtype=np.int64)
        return ResourceTable(ids=[self.ids[i] for i in rows], tags=[self.tags[i] for i in rows],
                             prices=[self.prices[i] for i in rows], free=self.free[at], cap=self.cap[at],
                             open=self.open[at], price_micro=self.price_micro[at], region_idx=self.region_idx,
                             provider_idx=self.provider_idx, res_region=self.res_region[at],
                             res_provider=self.res_provider[at])

    def has_tag(self, tag: str) -> np.ndarray:
        """Which resources carry ``tag`` (kept per tag: the tags that exist bound it)."""
        has = self._has_tag.get(tag)
        if has is None:
            has = self._has_tag[tag] = np.array([tag in tags for tags in self.tags], dtype=np.bool_)
        return has

    def no_tags(self) -> np.ndarray:
        """``tag_bits`` of a batch that requires no tag (all zeros), kept: most batches."""
        bits = self.derived.get("no_tags")
        if bits is None:
            bits = self.derived["no_tags"] = np.zeros(len(self.ids), dtype=np.int64)
        return bits

    def inverse_square(self) -> np.ndarray:
        """The kernel's ``_inverse_square`` of the capacities (the alignment score's
        normalization), kept: capacity changes only with the fleet."""
        inv = self.derived.get("inverse_square")
        if inv is None:
            inv = self.derived["inverse_square"] = _inverse_square(self.cap)
        return inv

    def tag_bits(self, tag_idx: dict[str, int]) -> np.ndarray:
        """Each resource's tags as a bitset over the batch's required tags. Which resources
        carry a tag is kept per tag (bounded by the tags that exist; the batches' tag sets
        are not, so caching whole bitsets per set would grow without end)."""
        bits = np.zeros(len(self.ids), dtype=np.int64)
        for tag, i in tag_idx.items():
            bits |= self.has_tag(tag).astype(np.int64) << i
        return bits

    def types(self, res_tags: np.ndarray) -> np.ndarray:
        """Interchangeable resources (same free, capacity, price, tags, place, open) share a
        type id, numbered in order of first appearance (the kernel opens the lowest index first)."""
        return interchangeable_types(self.free, self.cap, self.price_micro, res_tags, self.res_region,
                                     self.res_provider, self.open)


def interchangeable_types(free: np.ndarray, cap: np.ndarray, price: np.ndarray, tags: np.ndarray,
                          region: np.ndarray, provider: np.ndarray, open_: np.ndarray) -> np.ndarray:
    """A type id per resource, equal for interchangeable ones (same free, capacity, price,
    tags, place, open), numbered in order of first appearance. The kernel relies on it: a
    packing run on other free capacity or open resources needs the types of that state."""
    return type_ids(np.ascontiguousarray(free), cap, price, tags, region, provider, open_)
