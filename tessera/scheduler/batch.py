"""A batch of requests for the kernel: validation, placing order, the kernel's inputs, and
why a request was not placed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from tessera.schemas import TIER_RANK, RejectReason

from .kernel import Requests, Resources
from .table import ResourceTable, bitset, index_names


@dataclass(slots=True)     # not frozen: a frozen dataclass's __init__ costs four times as
class PackRequest:         # much, and one is built for every request of every batch
    id: str
    tier: str
    replicas: int
    demand: tuple[float, ...]  # per replica
    tags_required: frozenset[str] = frozenset()
    regions: frozenset[str] = frozenset()
    providers: frozenset[str] = frozenset()
    spread_min_providers: int = 1
    seq: int = 0  # arrival order (ties), or an aged priority computed by the queue


class Rejection(NamedTuple):
    """Why a request was not placed: a code for programs, a sentence for people."""

    code: RejectReason
    text: str


def validate_request(q: PackRequest, D: int) -> Rejection | None:
    def invalid(text: str) -> Rejection:
        return Rejection(RejectReason.invalid_request, text)

    if q.tier not in TIER_RANK:
        return invalid(f"unknown tier {q.tier!r}; use one of {', '.join(TIER_RANK)}")
    if q.replicas < 1:
        return invalid("replicas must be at least 1")
    if len(q.demand) != D:
        return invalid(f"demand has {len(q.demand)} dimensions, expected {D}")
    asks = False
    for x in q.demand:          # one pass (every request of every batch comes here)
        if not x >= 0:          # negative, or NaN
            return invalid("demand must be non-negative numbers")
        asks = asks or x > 0
    if not asks:
        return invalid("the request asks for nothing")
    if q.spread_min_providers < 1 or q.spread_min_providers > q.replicas:
        return invalid("spread_min_providers must be between 1 and replicas")
    return None


def order_requests(requests: Sequence[PackRequest], total_cap: np.ndarray) -> np.ndarray:
    """Tier first; within a tier the larger request (dominant share of capacity) first; then arrival."""
    def key(i: int) -> tuple:
        q = requests[i]
        share = max((q.demand[d] * q.replicas / total_cap[d]) if total_cap[d] > 0 else 0.0
                    for d in range(len(q.demand))) if q.demand else 0.0
        return (TIER_RANK.get(q.tier, 9), -share, q.seq, q.id)
    return np.array(sorted(range(len(requests)), key=key), dtype=np.int64)


#: The bit a constraint gets when nothing can satisfy it (bitsets are int64; bit 62 is
#: never a real tag, region or provider).
IMPOSSIBLE = 1 << 62


def tag_index(requests: Sequence[PackRequest], table: ResourceTable) -> dict[str, int]:
    """A bit per tag these requests require that some resource carries. A request requiring
    any other tag can go nowhere, like one naming only unknown regions or providers: it
    gets the impossible bit (``request_bits``)."""
    wanted = sorted({t for q in requests for t in q.tags_required})
    return index_names([t for t in wanted if table.has_tag(t).any()], "required tags carried by resources")


def request_bits(q: PackRequest, tag_idx: dict[str, int], table: ResourceTable) -> tuple[int, int, int]:
    """A request's required tags, allowed regions and allowed providers as bitsets (0: any
    region or provider)."""
    region_idx, prov_idx = table.region_idx, table.provider_idx
    return (bitset(q.tags_required, tag_idx) if q.tags_required <= tag_idx.keys() else IMPOSSIBLE,
            (bitset([x for x in q.regions if x in region_idx], region_idx) or IMPOSSIBLE) if q.regions else 0,
            (bitset([x for x in q.providers if x in prov_idx], prov_idx) or IMPOSSIBLE) if q.providers else 0)


def kernel_inputs(requests: Sequence[PackRequest], table: ResourceTable, D: int) -> tuple[Requests, Resources]:
    """The kernel's arrays for these requests on this table (constraint bitsets over the
    batch's tags and the table's regions and providers)."""
    tag_idx = tag_index(requests, table)
    R = len(requests)
    bits = np.array([request_bits(q, tag_idx, table) for q in requests], dtype=np.int64).reshape(R, 3)
    reqs = Requests(
        demand=np.array([q.demand for q in requests], dtype=np.float64).reshape(R, D),
        replicas=np.array([q.replicas for q in requests], dtype=np.int64),
        tags=bits[:, 0].copy(), regions=bits[:, 1].copy(), providers=bits[:, 2].copy(),
        spread=np.array([q.spread_min_providers for q in requests], dtype=np.int64))
    res_tags = table.tag_bits(tag_idx)
    res = Resources(free=np.ascontiguousarray(table.free), cap=table.cap, price=table.price_micro,
                    open=table.open, tags=res_tags, region=table.res_region, provider=table.res_provider,
                    type=table.types(res_tags))
    return reqs, res


def compatibility(reqs: Requests, res: Resources, rows=slice(None)) -> np.ndarray:
    """Request x resource: may request r run on resource s (tags, regions, providers)?
    For the requests ``rows`` (all by default)."""
    tags, regions, providers = reqs.tags[rows, None], reqs.regions[rows, None], reqs.providers[rows, None]
    one = np.int64(1)
    ok = (res.tags[None, :] & tags) == tags
    ok &= (regions == 0) | (((regions >> res.region[None, :]) & one) == 1)
    ok &= (providers == 0) | (((providers >> res.provider[None, :]) & one) == 1)
    return ok


def why_not_placed(i: int, q: PackRequest, reqs: Requests, res: Resources) -> Rejection:
    """Why request i was not placed (vectorized over resources: rejections can be many)."""
    compat = compatibility(reqs, res, [i])[0]
    if not compat.any():
        parts = []
        if q.tags_required:
            parts.append(f"tags {_few(q.tags_required)}")
        if q.regions:
            parts.append(f"regions {_few(q.regions)}")
        if q.providers:
            parts.append(f"providers {_few(q.providers)}")
        return Rejection(RejectReason.no_matching_resource,
                         "no resource matches " + (" and ".join(parts) or "the constraints"))
    big_enough = compat & (res.cap + 1e-9 >= reqs.demand[i]).all(axis=1)
    if not big_enough.any():
        return Rejection(RejectReason.too_large, "no compatible resource is large enough for one replica")
    providers = np.unique(res.provider[compat])
    if q.spread_min_providers > len(providers):
        return Rejection(RejectReason.spread_impossible, f"spread over {q.spread_min_providers} providers "
                         f"impossible: only {len(providers)} compatible")
    return Rejection(RejectReason.insufficient_capacity,
                     "insufficient free capacity for all replicas (placed whole or not at all)")


def _few(names: frozenset[str], shown: int = 4) -> str:
    """Names for a person to read: a long list is cut (the event's reason is bounded)."""
    names_ = sorted(names)
    text = ", ".join(n[:40] for n in names_[:shown])
    return f"[{text}{f' and {len(names_) - shown} more' if len(names_) > shown else ''}]"
