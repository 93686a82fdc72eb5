"""Batch packing: Python values in, the Numba kernel, Python values out.

Builds the kernel's arrays (dimensions, constraint bitsets, integer micro-unit prices),
orders the batch (tier first, then the larger request first, then arrival), runs the
kernel (or its plain-Python twin), and explains rejections. Pure: no Kafka, no Faust.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Iterable, Sequence

import numpy as np

from tessera.schemas import TIER_RANK

from . import exact, kernel
from .twin import python_twin

MICRO = Decimal(1_000_000)


@dataclass(frozen=True)
class PackResource:
    id: str
    provider: str
    region: str
    free: tuple[float, ...]  # per dimension, same order as the batch's dims
    capacity: tuple[float, ...]
    price_per_hour: Decimal
    tags: frozenset[str] = frozenset()
    open: bool = False


@dataclass(frozen=True)
class PackRequest:
    id: str
    tier: str
    replicas: int
    demand: tuple[float, ...]  # per replica
    tags_required: frozenset[str] = frozenset()
    regions: frozenset[str] = frozenset()
    providers: frozenset[str] = frozenset()
    spread_min_providers: int = 1
    seq: int = 0  # arrival order (ties), or an aged priority computed by the queue


@dataclass
class PackResult:
    placements: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
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


class PackingError(ValueError):
    pass


def _bits(names: Iterable[str], index: dict[str, int]) -> int:
    v = 0
    for n in names:
        v |= 1 << index[n]
    return v


def _index(values: Iterable[str], what: str) -> dict[str, int]:
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

    @classmethod
    def from_resources(cls, resources: Sequence[PackResource], D: int | None = None) -> "ResourceTable":
        D = D if D is not None else (len(resources[0].capacity) if resources else 1)
        region_idx = _index(sorted({r.region for r in resources}), "regions")
        prov_idx = _index(sorted({r.provider for r in resources}), "providers")
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
        return replace(self, free=free, open=self.open if open_ is None else open_)

    def tag_bits(self, tag_idx: dict[str, int]) -> np.ndarray:
        """Each resource's tags as a bitset over the batch's required tags. Which resources
        carry a tag is kept per tag (bounded by the tags that exist; the batches' tag sets
        are not, so caching whole bitsets per set would grow without end)."""
        bits = np.zeros(len(self.ids), dtype=np.int64)
        for tag, i in tag_idx.items():
            has = self._has_tag.get(tag)
            if has is None:
                has = self._has_tag[tag] = np.array([tag in tags for tags in self.tags], dtype=np.bool_)
            bits |= has.astype(np.int64) << i
        return bits

    def types(self, res_tags: np.ndarray) -> np.ndarray:
        """Interchangeable resources (same free, capacity, price, tags, place, open) share a
        type id, numbered in order of first appearance (the kernel opens the lowest index first)."""
        S, D = self.free.shape
        if S == 0:
            return np.zeros(0, dtype=np.int64)
        rows = np.empty((S, 2 * D + 5))
        rows[:, :D] = self.free
        rows[:, D:2 * D] = self.cap
        rows[:, 2 * D] = self.price_micro
        rows[:, 2 * D + 1] = res_tags
        rows[:, 2 * D + 2] = self.res_region
        rows[:, 2 * D + 3] = self.res_provider
        rows[:, 2 * D + 4] = self.open
        rows += 0.0   # -0.0 -> 0.0: rows are compared as bytes below
        # Each row as one bytes value (a void view): a dict numbers them in first-appearance
        # order ~8x faster than np.unique(axis=0) and its re-ranking.
        keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel().tolist()
        ids: dict[bytes, int] = {}
        return np.array([ids.setdefault(k, len(ids)) for k in keys], dtype=np.int64)


def _arrays(requests: Sequence[PackRequest], table: ResourceTable, D: int):
    tag_idx = _index(sorted({t for q in requests for t in q.tags_required}), "required tags")
    region_idx, prov_idx = table.region_idx, table.provider_idx
    R = len(requests)
    req_demand = np.array([q.demand for q in requests], dtype=np.float64).reshape(R, D)
    req_replicas = np.array([q.replicas for q in requests], dtype=np.int64)
    req_tags = np.array([_bits(q.tags_required, tag_idx) for q in requests], dtype=np.int64)
    # A request naming only unknown regions/providers can go nowhere: give it an impossible bit.
    impossible = 1 << 62  # bitsets are int64; bit 62 is never a real region or provider
    req_regions = np.array([(_bits([x for x in q.regions if x in region_idx], region_idx) or impossible)
                            if q.regions else 0 for q in requests], dtype=np.int64)
    req_providers = np.array([(_bits([x for x in q.providers if x in prov_idx], prov_idx) or impossible)
                              if q.providers else 0 for q in requests], dtype=np.int64)
    req_spread = np.array([q.spread_min_providers for q in requests], dtype=np.int64)
    res_tags = table.tag_bits(tag_idx)
    res_type = table.types(res_tags)
    return (req_demand, req_replicas, req_tags, req_regions, req_providers, req_spread,
            np.ascontiguousarray(table.free), table.cap, table.price_micro, table.open, res_tags,
            table.res_region, table.res_provider, res_type)


def order_requests(requests: Sequence[PackRequest], total_cap: np.ndarray) -> np.ndarray:
    """Tier first; within a tier the larger request (dominant share of capacity) first; then arrival."""
    def key(i: int) -> tuple:
        q = requests[i]
        share = max((q.demand[d] * q.replicas / total_cap[d]) if total_cap[d] > 0 else 0.0
                    for d in range(len(q.demand))) if q.demand else 0.0
        return (TIER_RANK.get(q.tier, 9), -share, q.seq, q.id)
    return np.array(sorted(range(len(requests)), key=key), dtype=np.int64)


def validate_request(q: PackRequest, D: int) -> str | None:
    if q.tier not in TIER_RANK:
        return f"unknown tier {q.tier!r}; use one of {', '.join(TIER_RANK)}"
    if q.replicas < 1:
        return "replicas must be at least 1"
    if len(q.demand) != D:
        return f"demand has {len(q.demand)} dimensions, expected {D}"
    if any(x < 0 or x != x for x in q.demand):
        return "demand must be non-negative numbers"
    if not any(x > 0 for x in q.demand):
        return "the request asks for nothing"
    if q.spread_min_providers < 1 or q.spread_min_providers > q.replicas:
        return "spread_min_providers must be between 1 and replicas"
    return None


#: Feasible open resources scored per replica (0 = all). Small batches never reach it.
SCORE_LIMIT = 64
#: Batches up to this many request x resource pairs also get the extra search below.
SMALL_BATCH = 50_000
#: The exact search (tessera.scheduler.exact) runs on batches of at most this many placed
#: replicas, with at most this many packing nodes per candidate set.
EXACT_MAX_ITEMS = 64
EXACT_NODES = 20000


@dataclass(frozen=True)
class SearchEffort:
    """How much extra search a small batch gets after the greedy pass. Budgets count work,
    not time, so the same input always gives the same placements."""

    restarts: int              # greedy reruns with the order shuffled within each tier
    exclusion_rounds: int      # rounds of re-packing with an opened type forbidden
    exact_nodes: int           # total packing nodes for the exact search (1M ~ 50 ms here)


#: Offline (`tessera pack`, what-if, the quality benchmark): up to ~0.2 s per small batch.
FULL = SearchEffort(restarts=24, exclusion_rounds=4, exact_nodes=1_000_000)
#: Live scheduling: a few milliseconds per batch, so that the search never becomes the
#: latency (a batch is waited for by every request in it).
QUICK = SearchEffort(restarts=2, exclusion_rounds=1, exact_nodes=40_000)
NO_SEARCH = SearchEffort(restarts=0, exclusion_rounds=0, exact_nodes=0)


def req_tier_rank(requests: Sequence[PackRequest]) -> np.ndarray:
    return np.array([TIER_RANK[q.tier] for q in requests], dtype=np.int64)


def _placed_profile(placed: np.ndarray, tiers: np.ndarray) -> tuple[int, ...]:
    """Placed requests per tier, best tier first: a candidate must not place fewer anywhere."""
    return tuple(int(((tiers == t) & placed).sum()) for t in range(4))


def _exclusion_search(best, run, res_free: np.ndarray, res_open: np.ndarray, res_price: np.ndarray,
                      tiers: np.ndarray, res_type: np.ndarray, rounds: int = 4):
    """Re-pack with the type of one newly opened resource forbidden (all its closed
    instances: forbidding one would just open its twin), dearest first; keep any result that
    is cheaper and places at least as many requests of every tier. Forbidden types
    accumulate while they help. Small batches only: each try is a full kernel run."""
    base_profile = _placed_profile(best[0], tiers)
    forbidden = np.zeros(len(res_free), dtype=bool)
    for _ in range(rounds):
        improved = False
        opened = np.nonzero(best[5] & ~res_open)[0]
        for s in sorted(opened.tolist(), key=lambda i: (-int(res_price[i]), i)):
            trial = forbidden | ((res_type == res_type[s]) & ~res_open)
            free = res_free.copy()
            free[trial, :] = 0.0
            cand = run(free)
            profile = _placed_profile(cand[0], tiers)
            if cand[6] < best[6] and all(a >= b for a, b in zip(profile, base_profile)):
                cand[4][trial, :] = res_free[trial, :]  # report real free capacity of forbidden ones
                best, forbidden, improved = cand, trial, True
                break
        if not improved:
            break
    return best


def _compatibility(arrays: tuple, rows=slice(None)) -> np.ndarray:
    """Request x resource: may request r run on resource s (tags, regions, providers)?
    For the requests ``rows`` (all by default)."""
    (_d, _rep, req_tags, req_regions, req_providers, _spread, _free, _cap, _price, _open, res_tags, res_region,
     res_provider, _type) = arrays
    tags, regions, providers = req_tags[rows, None], req_regions[rows, None], req_providers[rows, None]
    one = np.int64(1)
    ok = (res_tags[None, :] & tags) == tags
    ok &= (regions == 0) | (((regions >> res_region[None, :]) & one) == 1)
    ok &= (providers == 0) | (((providers >> res_provider[None, :]) & one) == 1)
    return ok


def _place_everything(out, arrays: tuple, jit: bool, total_nodes: int):
    """When the greedy left requests out of a small batch, look for a packing of the whole
    batch by the exact search: a request rejected for want of room may fit once the others
    are packed differently (two requests, three bins: the greedy can fill the one bin each
    needs with the other's replicas). Requests that fit no resource at all are not tried."""
    placed = out[0]
    if placed.all() or not _compatibility(arrays).any(axis=1).all():
        return out
    res_price, res_open = arrays[8], arrays[9]
    unbounded = int(res_price[~res_open].sum()) + 1
    return _exact_search(out, arrays, jit, total_nodes, chosen=np.arange(len(placed)), bound=unbounded)


def _exact_search(out, arrays: tuple, jit: bool, total_nodes: int, chosen: np.ndarray | None = None,
                  bound: int | None = None):
    """Re-choose which resources to open for the requests ``chosen`` (by default those ``out``
    placed) by the exact search; the answer replaces ``out`` only if it places all of them
    for less than ``bound`` (by default ``out``'s cost). Small batches without spread only."""
    placed = out[0]
    (req_demand, req_replicas, _tags, _regions, _providers, req_spread, res_free, res_cap, res_price, res_open,
     _rt, _rr, _rp, res_type) = arrays
    chosen = np.nonzero(placed)[0] if chosen is None else chosen
    bound = int(out[6]) if bound is None else bound
    if not total_nodes or not len(chosen) or bound == 0 or (req_spread[chosen] > 1).any():
        return out
    if int(req_replicas[chosen].sum()) > EXACT_MAX_ITEMS:
        return out
    # Items (one per replica), largest first relative to the biggest resource. Replicas with
    # the same demand and the same compatible resources are interchangeable twins (whatever
    # their request) and stay adjacent, so the packing never tries their permutations.
    compat = _compatibility(arrays)
    top = np.maximum(res_cap.max(axis=0), 1e-12)
    item_req = np.repeat(chosen, req_replicas[chosen])
    size = (req_demand[item_req] / top).max(axis=1)
    kinds: dict[tuple, int] = {}
    kind = np.array([kinds.setdefault((req_demand[r].tobytes(), compat[r].tobytes()), len(kinds))
                     for r in item_req.tolist()], dtype=np.int64)
    order = np.lexsort((item_req, kind, -size))
    item_req, kind = item_req[order].astype(np.int64), kind[order]
    dem = np.ascontiguousarray(req_demand[item_req])
    twin_prev = np.zeros(len(item_req), dtype=np.bool_)
    twin_prev[1:] = kind[1:] == kind[:-1]
    open_bins = np.nonzero(res_open & (res_free > 0).any(axis=1))[0].astype(np.int64)
    closed = np.nonzero(~res_open & (res_free > 0).any(axis=1))[0]
    types: dict[int, list[int]] = {}
    for s_ in closed.tolist():
        types.setdefault(int(res_type[s_]), []).append(s_)
    members = [m for _, m in sorted(types.items())]
    type_rep = np.array([m[0] for m in members], dtype=np.int64)
    type_members = np.array([s_ for m in members for s_ in m], dtype=np.int64)
    type_count = np.zeros(len(members) + 1, dtype=np.int64)
    type_count[1:] = np.cumsum([len(m) for m in members])
    need = np.maximum(dem.sum(axis=0) - res_free[open_bins].sum(axis=0), 0.0)
    fn = exact.search if jit else python_twin(exact.search)
    cost, assign, bins, _complete = fn(dem, item_req, twin_prev, open_bins, res_free, res_price, compat,
                                       type_rep, type_members, type_count, need, bound,
                                       EXACT_NODES, total_nodes)
    if not len(bins) or cost >= bound:
        return out
    # The assignment as placements (request, resource, replicas), merged per pair.
    target = bins[assign]
    pairs: dict[tuple[int, int], int] = {}
    for r, s_ in zip(item_req.tolist(), target.tolist()):
        pairs[(r, s_)] = pairs.get((r, s_), 0) + 1
    keys = sorted(pairs)
    pl_req = np.array([k[0] for k in keys], dtype=np.int64)
    pl_res = np.array([k[1] for k in keys], dtype=np.int64)
    pl_count = np.array([pairs[k] for k in keys], dtype=np.int64)
    free_after = res_free.copy()
    np.subtract.at(free_after, pl_res, req_demand[pl_req] * pl_count[:, None])
    open_after = res_open.copy()
    open_after[pl_res] = True
    new_cost = int(res_price[open_after & ~res_open].sum())
    placed_after = np.zeros_like(placed)
    placed_after[chosen] = True
    return placed_after, pl_req, pl_res, pl_count, free_after, open_after, new_cost


def pack_batch(requests: Sequence[PackRequest], resources: Sequence[PackResource] | ResourceTable, *,
               improve: bool = True, jit: bool = True, dims: int | None = None, score_limit: int = SCORE_LIMIT,
               effort: SearchEffort = FULL) -> PackResult:
    """Place a batch. ``resources`` may be a prepared ``ResourceTable`` (a live scheduler's,
    kept between batches) or PackResource values (a table is built from them)."""
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
            result.rejected[q.id] = "no resources available"
        return result
    table = resources if isinstance(resources, ResourceTable) else ResourceTable.from_resources(resources, D)
    arrays = _arrays(valid, table, D)
    (req_demand, req_replicas, req_tags, req_regions, req_providers, req_spread,
     res_free, res_cap, res_price, res_open, res_tags, res_region, res_provider, res_type) = arrays
    order = order_requests(valid, res_cap.sum(axis=0))
    fn = kernel.pack if jit else python_twin(kernel.pack)

    def run(free: np.ndarray, order: np.ndarray = order):
        return fn(req_demand, req_replicas, order, req_tags, req_regions, req_providers, req_spread,
                  free, res_cap, res_price, res_open, res_tags, res_region, res_provider, res_type, improve,
                  score_limit)

    t0 = time.perf_counter()
    out = run(res_free)
    if improve and len(valid) * len(resources) <= SMALL_BATCH:
        # Small batches can afford more search: restarts with the order shuffled within each
        # tier (fixed seeds, so still deterministic), then the exclusion search on the best.
        tiers = req_tier_rank(valid)
        base = _placed_profile(out[0], tiers)
        for seed in range(effort.restarts):
            rng = np.random.default_rng(seed)
            keys = [(int(tiers[i]), float(rng.random())) for i in order]
            shuffled = np.array([i for _, i in sorted(zip(keys, order.tolist()))], dtype=np.int64)
            cand = run(res_free, shuffled)
            if cand[6] < out[6] and all(a >= b for a, b in zip(_placed_profile(cand[0], tiers), base)):
                out, order = cand, shuffled
        out = _exclusion_search(out, lambda free: run(free, order), res_free, res_open, res_price, tiers, res_type,
                                effort.exclusion_rounds)
        out = _place_everything(out, arrays, jit, effort.exact_nodes)
        out = _exact_search(out, arrays, jit, effort.exact_nodes)
    placed, pl_req, pl_res, pl_count, free_after, open_after, cost = out
    result.kernel_seconds = time.perf_counter() - t0
    for r, s, k in zip(pl_req.tolist(), pl_res.tolist(), pl_count.tolist()):
        result.placements.setdefault(valid[r].id, []).append((table.ids[s], k))
    # Merge repeated (request, resource) pairs left by the improvement passes.
    for rid, pls in result.placements.items():
        merged: dict[str, int] = {}
        for res_id, k in pls:
            merged[res_id] = merged.get(res_id, 0) + k
        result.placements[rid] = sorted(merged.items())
    reasons: dict[tuple, str] = {}  # rejections often share a shape: explain each shape once
    for i, q in enumerate(valid):
        if not placed[i]:
            shape = (q.demand, q.tags_required, q.regions, q.providers, q.spread_min_providers)
            if shape not in reasons:
                reasons[shape] = _why(i, q, arrays)
            result.rejected[q.id] = reasons[shape]
    opened = np.nonzero(open_after & ~res_open)[0].tolist()
    result.opened = [table.ids[s] for s in opened]
    result.cost = sum((table.prices[s] for s in opened), Decimal(0))
    demand_placed = (req_demand * (req_replicas * placed)[:, None]).sum(axis=0)
    lb_fn = kernel.lower_bound if jit else python_twin(kernel.lower_bound)
    lb_micro = lb_fn(demand_placed, res_free, res_cap, res_price.astype(np.float64), res_open)
    result.lower_bound = min(Decimal(int(lb_micro)) / MICRO, result.cost) if lb_micro < 1e299 else result.cost
    result.free_after_rows, result.opened_rows = free_after, open_after
    return result


def _why(i: int, q: PackRequest, arrays: tuple) -> str:
    """Why request i was not placed (vectorized over resources: rejections can be many)."""
    (req_demand, _rep, _tags, _regions, _providers, _spread,
     _free, res_cap, _price, _open, _res_tags, _res_region, res_provider, _type) = arrays
    compat = _compatibility(arrays, [i])[0]
    if not compat.any():
        parts = []
        if q.tags_required:
            parts.append(f"tags {sorted(q.tags_required)}")
        if q.regions:
            parts.append(f"regions {sorted(q.regions)}")
        if q.providers:
            parts.append(f"providers {sorted(q.providers)}")
        return "no resource matches " + (" and ".join(parts) or "the constraints")
    big_enough = compat & (res_cap + 1e-9 >= req_demand[i]).all(axis=1)
    if not big_enough.any():
        return "no compatible resource is large enough for one replica"
    providers = np.unique(res_provider[compat])
    if q.spread_min_providers > len(providers):
        return f"spread over {q.spread_min_providers} providers impossible: only {len(providers)} compatible"
    return "insufficient free capacity for all replicas (placed whole or not at all)"


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
