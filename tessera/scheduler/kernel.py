"""The packing kernel: place a batch of requests onto resources at the least opening cost.

A pure function over arrays, compiled with ``numba.njit(cache=True)``; ``pack.py_func``
is the very same code run by CPython (the plain-Python twin the benchmark compares).

Inputs (R requests, S resources, D dimensions):

* ``req_demand[R, D]`` per-replica demand; ``req_replicas[R]``; ``req_order[R]`` the order
  to place them in (tier first, then larger first; see ``tessera.scheduler.batch``);
* constraint bitsets: ``req_tags[R]`` tags required (all must be on the resource),
  ``req_regions[R]`` / ``req_providers[R]`` allowed region / provider bits (0 = any),
  ``req_spread[R]`` minimum number of distinct providers for the replicas;
* ``res_free[S, D]`` free capacity now, ``res_cap[S, D]`` total capacity,
  ``res_price[S]`` whole-resource price per hour in integer micro-units,
  ``res_open[S]`` already hosting work (zero marginal price), ``res_tags[S]``,
  ``res_region[S]`` / ``res_provider[S]`` bit indexes.

Cost model: opening a closed resource costs its price; an open one costs nothing more.
Heuristic, in three passes:

1. Greedy in request order. Each replica goes to the open, compatible resource with the
   best dot-product alignment between its demand and the resource's free capacity
   (both normalized by the resource's size), as many replicas as fit at once; if none
   fits, the compatible closed resource with the lowest price per normalized capacity
   is opened. A request is placed whole or not at all (rolled back otherwise).
2. Consolidation: resources opened in this batch, most expensive first, are emptied
   into other open resources when everything on them fits elsewhere; they close again.
3. Downsizing: each resource still opened in this batch is swapped for the cheapest
   closed compatible resource that holds everything on it, when that is cheaper.

All loops run in a fixed order and ties break on the lower index: the same input always
gives the same placements.
"""

from __future__ import annotations

import numpy as np
from numba import njit

EPS = 1e-9


@njit(cache=True)
def _compatible(r, s, req_tags, req_regions, req_providers, res_tags, res_region, res_provider):
    if (res_tags[s] & req_tags[r]) != req_tags[r]:
        return False
    if req_regions[r] != 0 and (req_regions[r] >> res_region[s]) & 1 == 0:
        return False
    if req_providers[r] != 0 and (req_providers[r] >> res_provider[s]) & 1 == 0:
        return False
    return True


@njit(cache=True)
def _fit_count(r, s, req_demand, res_free, limit):
    """How many replicas of r fit on s (at most ``limit``)."""
    n = limit
    for d in range(req_demand.shape[1]):
        need = req_demand[r, d]
        if need > 0.0:
            k = int((res_free[s, d] + EPS) // need)
            if k < n:
                n = k
                if n == 0:
                    return 0
    return n


@njit(cache=True)
def _alignment(r, s, req_demand, res_free, res_cap):
    score = 0.0
    for d in range(req_demand.shape[1]):
        c = res_cap[s, d]
        if c > 0.0:
            score += (req_demand[r, d] / c) * (res_free[s, d] / c)
    return score


@njit(cache=True)
def pack(req_demand, req_replicas, req_order, req_tags, req_regions, req_providers, req_spread,
         res_free_in, res_cap, res_price, res_open_in, res_tags, res_region, res_provider, improve):
    """Returns (placed[R] bool, pl_req[P], pl_res[P], pl_count[P], n_placements, res_free, res_open,
    opened_cost_micro)."""
    R, D = req_demand.shape
    S = res_free_in.shape[0]
    res_free = res_free_in.copy()
    res_open = res_open_in.copy()
    opened_here = np.zeros(S, dtype=np.bool_)
    placed = np.zeros(R, dtype=np.bool_)
    total_rep = 0
    for r in range(R):
        total_rep += req_replicas[r]
    pl_req = np.empty(total_rep, dtype=np.int64)
    pl_res = np.empty(total_rep, dtype=np.int64)
    pl_count = np.empty(total_rep, dtype=np.int64)
    n_pl = 0

    # Closed resources in order of price per normalized capacity (ties: index).
    scale = np.zeros(D)
    for s in range(S):
        for d in range(D):
            if res_cap[s, d] > scale[d]:
                scale[d] = res_cap[s, d]
    unit_price = np.empty(S)
    for s in range(S):
        size = 0.0
        for d in range(D):
            if scale[d] > 0.0:
                size += res_cap[s, d] / scale[d]
        unit_price[s] = res_price[s] / size if size > 0.0 else 1e300
    closed_order = np.argsort(unit_price, kind="mergesort")

    # Open resources, kept as a compact list so the greedy scans only them.
    open_list = np.empty(S, dtype=np.int64)
    n_open = 0
    for s in range(S):
        if res_open[s]:
            open_list[n_open] = s
            n_open += 1

    used_providers = np.zeros(64, dtype=np.bool_)
    for oi in range(R):
        r = req_order[oi]
        left = req_replicas[r]
        start = n_pl
        spread = req_spread[r]
        for p in range(64):
            used_providers[p] = False
        n_prov = 0
        failed = False
        while left > 0:
            # Until the spread is met, each new replica must go to a provider not used yet.
            need_new = n_prov < spread
            cap_now = 1 if need_new else left
            best = -1
            best_score = -1.0
            for i in range(n_open):
                s = open_list[i]
                if need_new and used_providers[res_provider[s]]:
                    continue
                if not _compatible(r, s, req_tags, req_regions, req_providers, res_tags, res_region, res_provider):
                    continue
                if _fit_count(r, s, req_demand, res_free, 1) == 0:
                    continue
                sc = _alignment(r, s, req_demand, res_free, res_cap)
                if sc > best_score:
                    best_score = sc
                    best = s
            if best < 0:
                for j in range(S):
                    s = closed_order[j]
                    if res_open[s]:
                        continue
                    if need_new and used_providers[res_provider[s]]:
                        continue
                    if not _compatible(r, s, req_tags, req_regions, req_providers, res_tags, res_region, res_provider):
                        continue
                    if _fit_count(r, s, req_demand, res_free, 1) == 0:
                        continue
                    best = s
                    break
                if best < 0:
                    failed = True
                    break
                res_open[best] = True
                opened_here[best] = True
                open_list[n_open] = best
                n_open += 1
            k = _fit_count(r, best, req_demand, res_free, cap_now)
            for d in range(D):
                res_free[best, d] -= k * req_demand[r, d]
            pl_req[n_pl] = r
            pl_res[n_pl] = best
            pl_count[n_pl] = k
            n_pl += 1
            left -= k
            if not used_providers[res_provider[best]]:
                used_providers[res_provider[best]] = True
                n_prov += 1
        if failed:
            # Whole or nothing: give back what this request took, in reverse.
            for q in range(n_pl - 1, start - 1, -1):
                s = pl_res[q]
                for d in range(D):
                    res_free[s, d] += pl_count[q] * req_demand[r, d]
            n_pl = start
            # Resources opened only for it close again.
            keep = 0
            for i in range(n_open):
                s = open_list[i]
                if opened_here[s] and _is_empty(s, res_free, res_cap):
                    res_open[s] = False
                    opened_here[s] = False
                else:
                    open_list[keep] = s
                    keep += 1
            n_open = keep
        else:
            placed[r] = True

    if improve:
        # Items per resource as linked lists, so the passes touch only what they move.
        head = np.full(S, -1, dtype=np.int64)
        nxt = np.full(n_pl, -1, dtype=np.int64)
        for q in range(n_pl - 1, -1, -1):
            nxt[q] = head[pl_res[q]]
            head[pl_res[q]] = q
        _consolidate(req_demand, req_tags, req_regions, req_providers, req_spread, pl_req, pl_res, pl_count,
                     head, nxt, res_free, res_cap, res_price, res_open, opened_here, res_tags, res_region,
                     res_provider, open_list, n_open)
        _downsize(req_demand, req_tags, req_regions, req_providers, req_spread, pl_req, pl_res,
                  head, nxt, res_free, res_cap, res_price, res_open, opened_here, res_tags, res_region,
                  res_provider)

    cost = 0
    for s in range(S):
        if opened_here[s]:
            cost += res_price[s]
    return placed, pl_req[:n_pl].copy(), pl_res[:n_pl].copy(), pl_count[:n_pl].copy(), res_free, res_open, cost


@njit(cache=True)
def _is_empty(s, res_free, res_cap):
    for d in range(res_free.shape[1]):
        if res_free[s, d] < res_cap[s, d] - 1e-6:
            return False
    return True


@njit(cache=True)
def _consolidate(req_demand, req_tags, req_regions, req_providers, req_spread, pl_req, pl_res, pl_count,
                 head, nxt, res_free, res_cap, res_price, res_open, opened_here, res_tags, res_region,
                 res_provider, open_list, n_open):
    """Empty batch-opened resources (most expensive first) into other open resources."""
    S, D = res_free.shape
    n_c = 0
    for s in range(S):
        if opened_here[s]:
            n_c += 1
    cand = np.empty(n_c, dtype=np.int64)
    prices = np.empty(n_c)
    i = 0
    for s in range(S):
        if opened_here[s]:
            cand[i] = s
            prices[i] = -res_price[s]
            i += 1
    order = np.argsort(prices, kind="mergesort")
    moved_q = np.empty(len(pl_req), dtype=np.int64)
    moved_to = np.empty(len(pl_req), dtype=np.int64)
    for oi in range(n_c):
        src = cand[order[oi]]
        if not opened_here[src]:
            continue
        # Items of requests with a provider spread stay put (moving could break the spread).
        movable = head[src] >= 0
        q = head[src]
        while q >= 0:
            if req_spread[pl_req[q]] > 1:
                movable = False
                break
            q = nxt[q]
        if not movable:
            continue
        n_moved = 0
        ok = True
        q = head[src]
        while q >= 0:
            r = pl_req[q]
            best = -1
            best_score = -1.0
            for i in range(n_open):
                s = open_list[i]
                if s == src or not res_open[s]:
                    continue
                if not _compatible(r, s, req_tags, req_regions, req_providers, res_tags, res_region, res_provider):
                    continue
                if _fit_count(r, s, req_demand, res_free, pl_count[q]) < pl_count[q]:
                    continue
                sc = _alignment(r, s, req_demand, res_free, res_cap)
                if sc > best_score:
                    best_score = sc
                    best = s
            if best < 0:
                ok = False
                break
            for d in range(D):
                res_free[best, d] -= pl_count[q] * req_demand[r, d]
            moved_q[n_moved] = q
            moved_to[n_moved] = best
            n_moved += 1
            q = nxt[q]
        if not ok:
            for m in range(n_moved):  # undo the tentative moves
                q = moved_q[m]
                for d in range(D):
                    res_free[moved_to[m], d] += pl_count[q] * req_demand[pl_req[q], d]
            continue
        head[src] = -1
        for m in range(n_moved):
            q = moved_q[m]
            t = moved_to[m]
            pl_res[q] = t
            nxt[q] = head[t]
            head[t] = q
        for d in range(D):
            res_free[src, d] = res_cap[src, d]
        res_open[src] = False
        opened_here[src] = False


@njit(cache=True)
def _downsize(req_demand, req_tags, req_regions, req_providers, req_spread, pl_req, pl_res,
              head, nxt, res_free, res_cap, res_price, res_open, opened_here, res_tags, res_region, res_provider):
    """Swap each batch-opened resource for the cheapest closed one that holds all it hosts."""
    S, D = res_free.shape
    by_price = np.argsort(res_price, kind="mergesort")
    used = np.zeros(D)
    for src in range(S):
        if not opened_here[src]:
            continue
        for d in range(D):
            used[d] = res_cap[src, d] - res_free[src, d]
        spread = False
        q = head[src]
        while q >= 0:
            if req_spread[pl_req[q]] > 1:
                spread = True
            q = nxt[q]
        best = -1
        for j in range(S):
            s = by_price[j]
            if res_price[s] >= res_price[src]:
                break
            if res_open[s] or (spread and res_provider[s] != res_provider[src]):
                continue
            fits = True
            for d in range(D):
                if res_free[s, d] + 1e-9 < used[d]:
                    fits = False
                    break
            if not fits:
                continue
            q = head[src]
            while q >= 0:
                if not _compatible(pl_req[q], s, req_tags, req_regions, req_providers, res_tags, res_region,
                                   res_provider):
                    fits = False
                    break
                q = nxt[q]
            if fits:
                best = s
                break
        if best < 0:
            continue
        q = head[src]
        while q >= 0:
            pl_res[q] = best
            q = nxt[q]
        head[best] = head[src]
        head[src] = -1
        for d in range(D):
            res_free[best, d] -= used[d]
            res_free[src, d] = res_cap[src, d]
        res_open[best] = True
        opened_here[best] = True
        res_open[src] = False
        opened_here[src] = False


@njit(cache=True)
def lower_bound(demand_total, res_free, res_cap, res_price, res_open):
    """Per-dimension fractional bound on the cost of newly opened resources.

    For each dimension, the demand that already-open free capacity cannot absorb must be
    covered by closed resources; covering it fractionally with the cheapest price per unit
    of that dimension first costs at least LB_d. Constraints are relaxed, so
    max_d LB_d is a valid lower bound for placing the same requests.
    """
    S, D = res_free.shape
    best = 0.0
    for d in range(D):
        need = demand_total[d]
        for s in range(S):
            if res_open[s]:
                need -= res_free[s, d]
        if need <= 1e-9:
            continue
        ratio = np.full(S, 1e300)
        for s in range(S):
            if not res_open[s] and res_cap[s, d] > 0.0:
                ratio[s] = res_price[s] / res_cap[s, d]
        order = np.argsort(ratio, kind="mergesort")
        cost = 0.0
        for j in range(S):
            s = order[j]
            if ratio[s] >= 1e300 or need <= 1e-9:
                break
            take = min(need, res_cap[s, d])
            cost += take * ratio[s]
            need -= take
        if need > 1e-9:
            cost = 1e300  # not enough capacity at all in this dimension
        if cost > best:
            best = cost
    return best
