"""Extra search for small batches, after the kernel's greedy pass.

Each step keeps a candidate only if it places at least as many requests of every tier
and costs less (or, for ``place_everything``, places the whole batch): restarts with the
order shuffled within each tier, re-packing with an opened type forbidden, and the exact
search (``tessera.scheduler.exact``) over which resources to open. Budgets count work, not
time, so the same input always gives the same placements; the one exception is the
offline effort's integer program (``tessera.scheduler.mip``), whose answer is taken only
when proven optimal within its time limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import exact
from .batch import compatibility
from .kernel import Packing, Requests, Resources
from .mip import lexicographic_packing
from .twin import python_twin

#: The exact search runs on batches of at most this many placed replicas, with at most
#: this many packing nodes per candidate set.
EXACT_MAX_ITEMS = 64
EXACT_NODES = 20000


@dataclass(frozen=True)
class SearchEffort:
    """How much extra search a small batch gets after the greedy pass."""

    restarts: int              # greedy reruns with the order shuffled within each tier
    exclusion_rounds: int      # rounds of re-packing with an opened type forbidden
    exact_nodes: int           # total packing nodes for the exact search (1M ~ 50 ms here)
    #: Tier by tier exact tries for requests the greedy left out (place_more_by_tier): up
    #: to ~15 ms per try, so offline only.
    tier_search: bool = False
    #: Rounds of ruin and recreate (``recreate``): each empties one opened resource and
    #: places its requests again elsewhere. Offline only (a kernel run per opened resource).
    recreate_rounds: int = 0
    #: Branch-and-bound nodes per stage of the exact lexicographic integer program
    #: (``tessera.scheduler.mip``) on a batch of at most ``mip.MIP_MAX_PAIRS`` request x
    #: resource pairs; 0: not tried. Offline only; a node budget, not seconds, so the answer
    #: does not depend on the machine (used only when proven optimal).
    mip_nodes: int = 0

    @property
    def searches(self) -> bool:
        """Whether any step has a budget (``NO_SEARCH`` leaves the greedy result as it is)."""
        return bool(self.restarts or self.exclusion_rounds or self.exact_nodes or self.tier_search
                    or self.recreate_rounds or self.mip_nodes)


#: Offline (`tessera pack`, what-if, the quality benchmark): up to ~0.2 s per small batch,
#: plus the integer program on the smallest ones. Its budget, 5,000 nodes a stage, proves
#: every lexicographic benchmark instance (at most 338 nodes in a stage) and more of the
#: larger quality instances than 1,000 or 2,500 did; the slowest of those takes ~11 s here.
FULL = SearchEffort(restarts=24, exclusion_rounds=4, exact_nodes=1_000_000, tier_search=True, recreate_rounds=8,
                    mip_nodes=5_000)
#: Live scheduling: a few milliseconds per batch, so that the search never becomes the
#: latency (a batch is waited for by every request in it).
QUICK = SearchEffort(restarts=2, exclusion_rounds=1, exact_nodes=40_000)
NO_SEARCH = SearchEffort(restarts=0, exclusion_rounds=0, exact_nodes=0)

#: ``run(free, order[, open])``: the kernel on the batch with other free capacity, order
#: or open resources.
Run = Callable[..., Packing]


def placed_profile(placed: np.ndarray, tiers: np.ndarray, replicas: np.ndarray) -> tuple[int, ...]:
    """Placed replicas per tier, best tier first (the yardstick: most replicas of each tier
    in turn): a candidate must not place fewer anywhere."""
    # One bincount instead of four masked sums: the live scheduler and the simulator call
    # this a few times per batch, and most batches are one request.
    counts = np.bincount(tiers[placed], weights=replicas[placed], minlength=4)
    return tuple(int(c) for c in counts[:4])


def refine(out: Packing, run: Run, reqs: Requests, res: Resources, order: np.ndarray, tiers: np.ndarray,
           effort: SearchEffort, jit: bool) -> Packing:
    """The greedy result ``out`` improved by every step within ``effort``."""
    def profile(p: Packing) -> tuple[int, ...]:
        return placed_profile(p.placed, tiers, reqs.replicas)

    greedy = out
    if out.cost == 0 and out.placed.all():
        # Every replica placed and nothing opened: no search can beat that by the yardstick
        # (most of each tier, then least cost). Most batches of a running fleet end here.
        return out
    if effort.restarts and len(order) > 1 and not out.placed.all():
        # Smallest replicas first within each tier: when room is short, more of a tier's
        # replicas fit that way than largest first. Taken if the yardstick prefers it.
        size = (reqs.demand / np.maximum(res.cap.max(axis=0), 1e-12)).max(axis=1)     # per replica
        small_first = np.array(sorted(order.tolist(), key=lambda i: (int(tiers[i]), float(size[i]),
                                                                   -int(reqs.replicas[i]), i)),
                               dtype=np.int64)
        cand = run(res.free, small_first)
        if (profile(cand), -cand.cost) > (profile(out), -out.cost):
            out, order = cand, small_first
    base = profile(out)
    # Shuffling the order of one request changes nothing: a single-request batch (most
    # batches at moderate rates) skips the restarts.
    for seed in range(effort.restarts if len(order) > 1 else 0):
        rng = np.random.default_rng(seed)
        keys = [(int(tiers[i]), float(rng.random())) for i in order]
        shuffled = np.array([i for _, i in sorted(zip(keys, order.tolist()))], dtype=np.int64)
        cand = run(res.free, shuffled)
        if cand.cost < out.cost and all(a >= b for a, b in zip(profile(cand), base)):
            out, order = cand, shuffled
    out = exclusion_search(out, lambda free: run(free, order), res, profile, effort.exclusion_rounds)
    out = place_everything(out, reqs, res, jit, effort.exact_nodes)
    # Two ways to place more of the better tiers (keeping every placed request, or letting
    # worse tiers make way and trying them again); the exact search is budgeted, so either
    # can miss what the other finds. The better by the yardstick is kept.
    if effort.tier_search:
        kept = place_more_by_tier(out, reqs, res, tiers, jit, effort.exact_nodes // 2, displace=False)
        made_way = place_more_by_tier(out, reqs, res, tiers, jit, effort.exact_nodes // 2, displace=True)
        out = max(kept, made_way, key=lambda p: (profile(p), -p.cost))
    if out is not greedy:       # the greedy itself tried every request on what it left free
        out = place_left_out(out, run, order)
    out = recreate(out, run, reqs, res, order, profile, effort.recreate_rounds)
    out = exact_search(out, reqs, res, jit, effort.exact_nodes)
    if effort.mip_nodes:
        # The searches above miss packings that rearrange several requests at once (three
        # of thirty benchmark instances placed fewer silver or bronze replicas than fit).
        proven = lexicographic_packing(reqs, res, tiers, effort.mip_nodes, known=out)
        if proven is not None and (profile(proven), -proven.cost) > (profile(out), -out.cost):
            out = proven
    return out


#: Ruin and recreate pairs a resource from this many of the dearest opened with any other.
RUIN_PAIRS_FROM = 12


def recreate(out: Packing, run: Run, reqs: Requests, res: Resources, order: np.ndarray,
             profile: Callable[[Packing], tuple[int, ...]], rounds: int) -> Packing:
    """Ruin and recreate: take every request with a replica on one resource opened in this
    batch (dearest first) off the packing, forbid that resource, and place them (and any
    left out) again by the greedy kernel on what is free; keep the result if the yardstick
    prefers it (more replicas of each tier in turn, then less cost). The searches before it
    reach more replicas of the better tiers at any cost, and can leave a dear resource opened
    for a few replicas that fit on capacity already paid for (one benchmark instance cost
    75 % over the optimum that way)."""
    def key(p: Packing) -> tuple:
        return profile(p), -p.cost       # the yardstick: more of each tier in turn, then cost

    for _ in range(rounds):
        opened = sorted(np.nonzero(out.open & ~res.open)[0].tolist(), key=lambda i: (-int(res.price[i]), i))
        # One resource at a time, then (when none pays alone) one of the dearest few and the
        # work of another: room for what leaves the first is often taken by what the second
        # holds. (All pairs grow with the square of the opened resources: 0.2 s for 23; 0.1 s so.)
        tries = [(s, None) for s in opened] + [(s, t) for s in opened[:RUIN_PAIRS_FROM] for t in opened if t != s]
        for s, t in tries:
            cand = _ruin(out, run, reqs, res, order, s, t)
            if key(cand) > key(out):
                out = cand
                break
        else:
            break
    return out


def _ruin(out: Packing, run: Run, reqs: Requests, res: Resources, order: np.ndarray, s: int,
          also: int | None) -> Packing:
    """``out`` with every request on resource ``s`` (and on ``also``) placed again, with those
    left out, but not on ``s``."""
    on = out.pl_res == s if also is None else (out.pl_res == s) | (out.pl_res == also)
    moved = np.unique(out.pl_req[on])
    stay = ~np.isin(out.pl_req, moved)
    free = out.free.copy()
    for p in np.nonzero(~stay)[0].tolist():
        free[out.pl_res[p]] += reqs.demand[out.pl_req[p]] * out.pl_count[p]
    hosts = res.open.copy()
    hosts[out.pl_res[stay]] = True
    placed = out.placed.copy()
    placed[moved] = False
    partial = Packing(placed, out.pl_req[stay], out.pl_res[stay], out.pl_count[stay], free, hosts,
                      int(res.price[hosts & ~res.open].sum()))
    real = free[s].copy()
    free[s] = 0.0                      # forbidden: the point is to close it
    cand = place_left_out(partial, run, order)
    cand.free[s] = real                # nothing is on it any more
    return cand


def place_left_out(out: Packing, run: Run, order: np.ndarray) -> Packing:
    """The requests ``out`` leaves out, tried once more by the greedy kernel (in ``order``,
    best tier first) on what ``out`` leaves free, opening capacity as it needs: it only adds
    placements, so the yardstick (more replicas of each tier in turn, then cost) never gets
    worse. The searches above can leave room unused: a worse tier that made way for a better
    one is tried again only by the budgeted exact search, which may give up (one instance
    placed 3 of its 17 silver and bronze replicas where all fit)."""
    left = order[~out.placed[order]]
    if not len(left):
        return out
    more = run(out.free, left, out.open)
    if not more.placed.any():
        return out
    return Packing(out.placed | more.placed, np.concatenate((out.pl_req, more.pl_req)),
                   np.concatenate((out.pl_res, more.pl_res)), np.concatenate((out.pl_count, more.pl_count)),
                   more.free, more.open, out.cost + more.cost)


def exclusion_search(best: Packing, run: Callable[[np.ndarray], Packing], res: Resources,
                     profile: Callable[[Packing], tuple[int, ...]], rounds: int = 4) -> Packing:
    """Re-pack with the type of one newly opened resource forbidden (all its closed
    instances: forbidding one would just open its twin), dearest first; keep any result that
    is cheaper and places at least as many requests of every tier. Forbidden types
    accumulate while they help. Small batches only: each try is a full kernel run."""
    base_profile = profile(best)
    forbidden = np.zeros(len(res.free), dtype=bool)
    for _ in range(rounds):
        improved = False
        opened = np.nonzero(best.open & ~res.open)[0]
        for s in sorted(opened.tolist(), key=lambda i: (-int(res.price[i]), i)):
            trial = forbidden | ((res.type == res.type[s]) & ~res.open)
            free = res.free.copy()
            free[trial, :] = 0.0
            cand = run(free)
            if cand.cost < best.cost and all(a >= b for a, b in zip(profile(cand), base_profile)):
                cand.free[trial, :] = res.free[trial, :]  # report real free capacity of forbidden ones
                best, forbidden, improved = cand, trial, True
                break
        if not improved:
            break
    return best


def place_everything(out: Packing, reqs: Requests, res: Resources, jit: bool, total_nodes: int) -> Packing:
    """When the greedy left requests out of a small batch, look for a packing of the whole
    batch by the exact search: a request rejected for want of room may fit once the others
    are packed differently (two requests, three bins: the greedy can fill the one bin each
    needs with the other's replicas). Requests that fit no resource at all are not tried."""
    compat = compatibility(reqs, res)
    if out.placed.all() or not compat.any(axis=1).all():
        return out
    # The whole batch cannot fit when it asks more of some dimension than is free in all, or
    # when a request left out has no compatible resource with room for one replica even
    # before anything else is placed (a queue waiting for capacity): no search then, it
    # would only spend its budget (~20 ms a batch).
    if ((reqs.demand * reqs.replicas[:, None]).sum(axis=0) > res.free.sum(axis=0) + 1e-9).any():
        return out
    left = np.nonzero(~out.placed)[0]
    room = (res.free[None, :, :] + 1e-9 >= reqs.demand[left][:, None, :]).all(axis=2) & compat[left]
    if not room.any(axis=1).all():
        return out
    unbounded = int(res.price[~res.open].sum()) + 1
    return exact_search(out, reqs, res, jit, total_nodes, chosen=np.arange(len(out.placed)), bound=unbounded)


def place_more_by_tier(out: Packing, reqs: Requests, res: Resources, tiers: np.ndarray, jit: bool,
                       total_nodes: int, displace: bool = True) -> Packing:
    """More replicas of the better tiers: tier by tier (best first), each request left out
    (most replicas first) is tried by the exact search, at any cost, together with every
    placed request (``displace=False``) or every placed request of its tier or better
    (``displace=True``: requests of worse tiers may make way for it, and are tried again
    when their tier's turn comes). No tier ever loses replicas to a worse one, and more
    replicas of a better tier come before cost (the scheduler's yardstick). Small batches
    only; the node budget is shared by all the tries."""
    if out.placed.all() or not total_nodes:
        return out
    fits_somewhere = compatibility(reqs, res).any(axis=1)
    unbounded = int(res.price[~res.open].sum()) + 1
    budget = [total_nodes]

    def attempt(chosen: np.ndarray) -> Packing | None:
        if budget[0] <= 0 or int(reqs.replicas[chosen].sum()) > EXACT_MAX_ITEMS:
            return None
        cand = exact_search(out, reqs, res, jit, min(EXACT_NODES, budget[0]), chosen=np.sort(chosen), bound=unbounded)
        budget[0] -= EXACT_NODES
        return cand if cand is not out else None

    for tier in sorted(set(tiers.tolist())):
        mine = tiers == tier
        tried: set[int] = set()
        while budget[0] > 0:
            left = [i for i in np.nonzero(~out.placed & fits_somewhere & mine)[0].tolist() if i not in tried]
            if not left:
                break
            i = min(left, key=lambda j: (-int(reqs.replicas[j]), j))
            tried.add(i)
            keep = np.nonzero(out.placed & ((tiers <= tier) if displace else True))[0]
            cand = attempt(np.append(keep, i))
            if cand is None:
                # Swap: the placed requests of this tier with fewer replicas make way, if
                # that places more of the tier; they are tried again afterwards.
                smaller = out.placed & mine & (reqs.replicas < reqs.replicas[i])
                if smaller.any():
                    swapped = attempt(np.append(np.setdiff1d(keep, np.nonzero(smaller)[0]), i))
                    if swapped is not None and (int(reqs.replicas[swapped.placed & mine].sum())
                                                > int(reqs.replicas[out.placed & mine].sum())):
                        cand = swapped
                        tried -= set(np.nonzero(smaller)[0].tolist())
            if cand is not None:
                out = cand
    return out


def exact_search(out: Packing, reqs: Requests, res: Resources, jit: bool, total_nodes: int,
                 chosen: np.ndarray | None = None, bound: int | None = None) -> Packing:
    """Re-choose which resources to open for the requests ``chosen`` (by default those ``out``
    placed) by the exact search; the answer replaces ``out`` only if it places all of them
    for less than ``bound`` (by default ``out``'s cost). Small batches without spread only."""
    chosen = np.nonzero(out.placed)[0] if chosen is None else chosen
    bound = int(out.cost) if bound is None else bound
    if not total_nodes or not len(chosen) or bound == 0 or (reqs.spread[chosen] > 1).any():
        return out
    if int(reqs.replicas[chosen].sum()) > EXACT_MAX_ITEMS:
        return out
    # Items (one per replica), largest first relative to the biggest resource. Replicas with
    # the same demand and the same compatible resources are interchangeable twins (whatever
    # their request) and stay adjacent, so the packing never tries their permutations.
    compat = compatibility(reqs, res)
    top = np.maximum(res.cap.max(axis=0), 1e-12)
    item_req = np.repeat(chosen, reqs.replicas[chosen])
    size = (reqs.demand[item_req] / top).max(axis=1)
    kinds: dict[tuple, int] = {}
    kind = np.array([kinds.setdefault((reqs.demand[r].tobytes(), compat[r].tobytes()), len(kinds))
                     for r in item_req.tolist()], dtype=np.int64)
    order = np.lexsort((item_req, kind, -size))
    item_req, kind = item_req[order].astype(np.int64), kind[order]
    dem = np.ascontiguousarray(reqs.demand[item_req])
    twin_prev = np.zeros(len(item_req), dtype=np.bool_)
    twin_prev[1:] = kind[1:] == kind[:-1]
    open_bins = np.nonzero(res.open & (res.free > 0).any(axis=1))[0].astype(np.int64)
    closed = np.nonzero(~res.open & (res.free > 0).any(axis=1))[0]
    types: dict[int, list[int]] = {}
    for s_ in closed.tolist():
        types.setdefault(int(res.type[s_]), []).append(s_)
    members = [m for _, m in sorted(types.items())]
    if not members:
        # Nothing closed to open (the search walks types; with none it has nothing to
        # choose): the greedy's packing of the open resources stands.
        return out
    type_rep = np.array([m[0] for m in members], dtype=np.int64)
    type_members = np.array([s_ for m in members for s_ in m], dtype=np.int64)
    type_count = np.zeros(len(members) + 1, dtype=np.int64)
    type_count[1:] = np.cumsum([len(m) for m in members])
    need = np.maximum(dem.sum(axis=0) - res.free[open_bins].sum(axis=0), 0.0)
    fn = exact.search if jit else python_twin(exact.search)
    cost, assign, bins, _complete = fn(dem, item_req, twin_prev, open_bins, res.free, res.price, compat,
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
    free_after = res.free.copy()
    np.subtract.at(free_after, pl_res, reqs.demand[pl_req] * pl_count[:, None])
    open_after = res.open.copy()
    open_after[pl_res] = True
    placed_after = np.zeros_like(out.placed)
    placed_after[chosen] = True
    return Packing(placed_after, pl_req, pl_res, pl_count, free_after, open_after,
                   int(res.price[open_after & ~res.open].sum()))
