"""Batch packing: Python values in, the Numba kernel, Python values out.

``pack_batch`` builds the kernel's inputs (``batch``), runs the kernel (or its plain-Python
twin), gives small batches extra search (``search``), and explains each rejection with a
code and a sentence. Pure: no Kafka, no Faust.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Sequence

import numpy as np

from tessera.schemas import TIER_RANK, RejectReason

from . import kernel
from .batch import (
    PackRequest,
    Rejection,
    kernel_inputs,
    order_requests,
    request_bits,
    tag_index,
    validate_request,
    why_not_placed,
)
from .kernel import Packing, Requests
from .search import FULL, NO_SEARCH, QUICK, SearchEffort, refine
from .table import MICRO, PackingError, PackResource, ResourceTable, interchangeable_types
from .twin import python_twin

__all__ = ["PackRequest", "PackResource", "PackResult", "PackingError", "Rejection", "ResourceTable",
           "SearchEffort", "FULL", "QUICK", "NO_SEARCH", "pack_batch", "compile_packing_kernels"]

#: Feasible open resources scored per replica (0 = all). Small batches never reach it.
SCORE_LIMIT = 64
#: Batches up to this many request x resource pairs also get the extra search.
SMALL_BATCH = 50_000
#: The rejection of a request ``pack_batch(explain=False)`` did not place.
UNEXPLAINED = Rejection(RejectReason.insufficient_capacity, "not placed (not explained)")


@dataclass
class PackResult:
    placements: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    rejected: dict[str, Rejection] = field(default_factory=dict)
    opened: list[str] = field(default_factory=list)
    cost: Decimal = Decimal(0)
    lower_bound: Decimal = Decimal(0)
    kernel_seconds: float = 0.0
    #: Free capacity and open flags per resource after the batch, rows in the order of the
    #: resources given (None when nothing was packed).
    free_after_rows: np.ndarray | None = None
    opened_rows: np.ndarray | None = None

    @property
    def gap(self) -> float:
        """Relative gap to the lower bound (0 = provably optimal opening cost)."""
        if self.cost == 0:
            return 0.0
        return float((self.cost - self.lower_bound) / self.cost)


def pack_batch(requests: Sequence[PackRequest], resources: Sequence[PackResource] | ResourceTable, *,
               improve: bool = True, jit: bool = True, dims: int | None = None, score_limit: int = SCORE_LIMIT,
               effort: SearchEffort = FULL, explain: bool = True) -> PackResult:
    """Place a batch. ``resources`` may be a prepared ``ResourceTable`` (a live scheduler's,
    kept between batches) or PackResource values (a table is built from them). Without
    ``explain``, a request the kernel could not place is rejected as ``insufficient_capacity``
    without working out why (a caller that only asks whether all of a batch fits)."""
    if isinstance(resources, ResourceTable):
        D = dims or resources.cap.shape[1]
    else:
        D = dims or (len(resources[0].capacity) if resources else len(requests[0].demand) if requests else 1)
    result = PackResult()
    valid: list[PackRequest] = []
    for q in requests:
        problem = validate_request(q, D)
        if problem:
            result.rejected[q.id] = problem
        else:
            valid.append(q)
    if not valid or not resources:
        for q in valid:
            result.rejected[q.id] = Rejection(RejectReason.no_resources, "no resources available")
        return result
    table = resources if isinstance(resources, ResourceTable) else ResourceTable.from_resources(resources, D)
    if len(valid) == 1 and valid[0].spread_min_providers == 1:
        if _on_open(valid[0], table, D, result, jit, score_limit):
            return result
    reqs, res = kernel_inputs(valid, table, D)
    order = order_requests(valid, res.cap.sum(axis=0))
    fn = kernel.pack if jit else python_twin(kernel.pack)

    def run(free: np.ndarray, order: np.ndarray = order, open_: np.ndarray | None = None) -> Packing:
        if open_ is None:
            return fn(reqs, order, res._replace(free=free), improve, score_limit)
        # Some requests (``order``) on another state of the resources: the kernel takes every
        # request it is given, and needs the interchangeable types of that state.
        types = interchangeable_types(free, res.cap, res.price, res.tags, res.region, res.provider, open_)
        sub = fn(Requests(*(a[order] for a in reqs)), np.arange(len(order), dtype=np.int64),
                 res._replace(free=free, open=open_, type=types), improve, score_limit)
        placed = np.zeros(len(reqs.replicas), dtype=np.bool_)
        placed[order] = sub.placed
        return sub._replace(placed=placed, pl_req=order[sub.pl_req])

    t0 = time.perf_counter()
    out = run(res.free)
    if improve and effort.searches and len(valid) * len(resources) <= SMALL_BATCH:
        # Small batches can afford more search (fixed seeds and budgets: still deterministic).
        tiers = np.array([TIER_RANK[q.tier] for q in valid], dtype=np.int64)
        out = refine(out, run, reqs, res, order, tiers, effort, jit)
    result.kernel_seconds = time.perf_counter() - t0
    for r, s, k in zip(out.pl_req.tolist(), out.pl_res.tolist(), out.pl_count.tolist()):
        result.placements.setdefault(valid[r].id, []).append((table.ids[s], k))
    # Merge repeated (request, resource) pairs left by the improvement passes.
    for rid, pls in result.placements.items():
        result.placements[rid] = _merged(pls)
    reasons: dict[tuple, Rejection] = {}  # rejections often share a shape: explain each shape once
    for i, q in enumerate(valid):
        if not out.placed[i]:
            if not explain:
                result.rejected[q.id] = UNEXPLAINED
                continue
            shape = (q.demand, q.tags_required, q.regions, q.providers, q.spread_min_providers)
            if shape not in reasons:
                reasons[shape] = why_not_placed(i, q, reqs, res)
            result.rejected[q.id] = reasons[shape]
    opened = np.nonzero(out.open & ~res.open)[0].tolist()
    result.opened = [table.ids[s] for s in opened]
    result.cost = sum((table.prices[s] for s in opened), Decimal(0))
    if result.cost:     # nothing opened: the bound, never negative and at most the cost, is 0
        demand_placed = (reqs.demand * (reqs.replicas * out.placed)[:, None]).sum(axis=0)
        lb_fn = kernel.lower_bound if jit else python_twin(kernel.lower_bound)
        lb_micro = lb_fn(demand_placed, res.free, res.cap, res.price.astype(np.float64), res.open)
        result.lower_bound = min(Decimal(int(lb_micro)) / MICRO, result.cost) if lb_micro < 1e299 else result.cost
    result.free_after_rows, result.opened_rows = out.free, out.open
    return result


def _on_open(q: PackRequest, table: ResourceTable, D: int, result: PackResult, jit: bool,
             score_limit: int) -> bool:
    """The usual batch, one request whose replicas all fit on open resources, answered by
    ``kernel.pack_one_on_open`` (the kernel's own greedy for that case, without its
    set-up); False when it does not apply, and the batch goes to the kernel."""
    demand, bits, res_tags = _lane_inputs(q, table, D)
    fn = kernel.pack_one_on_open if jit else python_twin(kernel.pack_one_on_open)
    t0 = time.perf_counter()
    pl_res, pl_count, n, free = fn(demand, q.replicas, bits, np.ascontiguousarray(table.free),
                                   table.inverse_square(), table.open, res_tags, table.res_region,
                                   table.res_provider, score_limit)
    if n == 0:
        return False
    if n == 1:      # most requests: one step places them all
        result.placements[q.id] = [(table.ids[pl_res[0]], int(pl_count[0]))]
    else:
        result.placements[q.id] = _merged([(table.ids[s], k) for s, k in zip(pl_res[:n].tolist(),
                                                                               pl_count[:n].tolist())])
    result.kernel_seconds = time.perf_counter() - t0
    result.free_after_rows, result.opened_rows = free, table.open
    return True


#: Request shapes whose lane inputs a table keeps (bounded: a live fleet's requests may
#: all differ in size).
LANE_SHAPES_KEPT = 4096


def _lane_inputs(q: PackRequest, table: ResourceTable, D: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The one-request lane's arrays for ``q`` (its demand, its constraint bitsets, the
    resources' bits over its tags), kept by the table per request shape: most requests of
    a fleet share a few shapes, and every request's batch comes here."""
    kept = table.derived.setdefault("lane", {})
    shape = (q.demand, q.tags_required, q.regions, q.providers)
    inputs = kept.get(shape)
    if inputs is None:
        if q.tags_required:
            tag_idx = tag_index([q], table)
            res_tags = table.tag_bits(tag_idx)
        else:                    # the usual request: no tags, and no per-tag arrays to build
            tag_idx, res_tags = {}, table.no_tags()
        if len(kept) >= LANE_SHAPES_KEPT:
            kept.clear()
        inputs = kept[shape] = (np.array(q.demand, dtype=np.float64).reshape(1, D),
                                np.array(request_bits(q, tag_idx, table), dtype=np.int64), res_tags)
    return inputs


def _merged(placements: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """(resource, replicas) pairs with each resource once, in resource order (a packing may
    place a request's replicas on one resource in several steps)."""
    merged: dict[str, int] = {}
    for res_id, k in placements:
        merged[res_id] = merged.get(res_id, 0) + k
    return sorted(merged.items())


def compile_packing_kernels() -> None:
    """Compile the packing kernel and its searches (Numba, cached on disk) on a tiny batch
    that takes the paths a live batch takes (tags, regions, two tiers, a GPU dimension):
    the first compile on a fresh checkout takes about 30 s, so services call this before
    they join a consumer group."""
    resources = [PackResource(id=f"r{i}", provider=("own", "gcp")[i % 2], region="dc", free=(8.0, 32.0, 1.0),
                              capacity=(8.0, 32.0, 1.0), price_per_hour=Decimal("0.5"), tags=frozenset({"ssd"}))
                 for i in range(4)]
    requests = [PackRequest(id=f"q{i}", tier=("gold", "bronze")[i % 2], replicas=1 + i % 2,
                            demand=(1.0, 2.0, float(i % 2)), tags_required=frozenset({"ssd"} if i else ()),
                            regions=frozenset({"dc"}), seq=i) for i in range(4)]
    pack_batch(requests, resources, effort=QUICK)
    pack_batch(requests[:1], resources)     # the one-request lane (compiled even when it declines)
