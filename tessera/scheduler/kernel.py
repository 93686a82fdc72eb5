"""The packing kernel: place a batch of requests onto resources at the least opening cost.

A pure function over arrays, compiled with ``numba.njit(cache=True)``;
``tessera.scheduler.twin.python_twin(pack)`` is the very same code run entirely by CPython
(the plain-Python twin the benchmark compares against).

Inputs and output are named tuples of arrays (R requests, S resources, D dimensions):
``Requests`` (per-replica demand, replicas, constraint bitsets, provider spread),
``Resources`` (free and total capacity, integer micro-unit prices, open flags, tags,
region, provider, interchangeable type), and the result ``Packing``. ``order`` lists the
requests in the order to place them (tier first, then larger first; see
``tessera.scheduler.batch``).

Cost model: opening a closed resource costs its price; an open one costs nothing more.
Heuristic, in three passes:

1. Greedy in request order. Each replica goes to the open, compatible resource with the
   best dot-product alignment between its demand and the resource's free capacity
   (both normalized by the resource's size), as many replicas as fit at once; if none
   fits, the compatible closed resource with the lowest price per normalized capacity
   is opened. A request is placed whole or not at all (rolled back otherwise).
   With ``score_limit`` > 0 only the first that many feasible open resources (in opening
   order) are scored, as kube-scheduler scores a share of feasible nodes in big clusters.
2. Consolidation: resources opened in this batch, most expensive first, are emptied
   into other open resources when everything on them fits elsewhere; they close again.
3. Downsizing: each resource still opened in this batch is swapped for the cheapest
   closed compatible resource that holds everything on it, when that is cheaper.

All loops run in a fixed order and ties break on the lower index: the same input always
gives the same placements.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

EPS = 1e-9


class Requests(NamedTuple):
    """A batch's requests as arrays (Numba takes named tuples of arrays as they are)."""

    demand: np.ndarray      # (R, D) float64, per replica
    replicas: np.ndarray    # (R,) int64
    tags: np.ndarray        # (R,) int64 bitset: tags required (all must be on the resource)
    regions: np.ndarray     # (R,) int64 bitset of allowed regions (0 = any)
    providers: np.ndarray   # (R,) int64 bitset of allowed providers (0 = any)
    spread: np.ndarray      # (R,) int64: the replicas span at least this many providers


class Resources(NamedTuple):
    """The resources a batch may use, as arrays."""

    free: np.ndarray        # (S, D) float64, free capacity now
    cap: np.ndarray         # (S, D) float64, total capacity
    price: np.ndarray       # (S,) int64, whole-resource price per hour in micro-units
    open: np.ndarray        # (S,) bool: already hosting work (no opening cost)
    tags: np.ndarray        # (S,) int64 bitset over the batch's required tags
    region: np.ndarray      # (S,) int64 bit index
    provider: np.ndarray    # (S,) int64 bit index
    type: np.ndarray        # (S,) int64: interchangeable resources share a type id


class Packing(NamedTuple):
    """What a packing decided."""

    placed: np.ndarray      # (R,) bool: request placed (whole)
    pl_req: np.ndarray      # (P,) int64: placement p puts pl_count[p] replicas of request pl_req[p]
    pl_res: np.ndarray      # (P,) int64: ... on resource pl_res[p]
    pl_count: np.ndarray    # (P,) int64
    free: np.ndarray        # (S, D) float64, free capacity after
    open: np.ndarray        # (S,) bool, open after
    cost: int               # micro-units per hour of the resources opened


@njit(cache=True, error_model="numpy")
def _compatible(r, s, req_tags, req_regions, req_providers, res_tags, res_region, res_provider):
    if (res_tags[s] & req_tags[r]) != req_tags[r]:
        return False
    if req_regions[r] != 0 and (req_regions[r] >> res_region[s]) & 1 == 0:
        return False
    if req_providers[r] != 0 and (req_providers[r] >> res_provider[s]) & 1 == 0:
        return False
    return True


@njit(cache=True, error_model="numpy")
def _fit_count(r, s, req_demand, res_free, limit):
    """How many replicas of r fit on s (at most ``limit``)."""
    n = limit
    for d in range(req_demand.shape[1]):
        need = req_demand[r, d]
        if need > 0.0:
            # floor of the quotient by division (float // compiles to a slow fmod call),
            # stepped down if rounding carried it over
            room = res_free[s, d] + EPS
            k = int(room / need)
            if k * need > room:
                k -= 1
            if k < n:
                n = k
                if n == 0:
                    return 0
    return n


@njit(cache=True, error_model="numpy")
def _fits_one(r, s, req_demand, res_free):
    for d in range(req_demand.shape[1]):
        if req_demand[r, d] > res_free[s, d] + EPS:
            return False
    return True


@njit(cache=True, error_model="numpy")
def _alignment(r, s, req_demand, res_free, inv_cap2):
    # Dot product of demand and free capacity, both normalized by the resource's size.
    score = 0.0
    for d in range(req_demand.shape[1]):
        score += req_demand[r, d] * res_free[s, d] * inv_cap2[s, d]
    return score


@njit(cache=True, error_model="numpy")
def _dominated(r, req_demand, req_tags, req_regions, req_providers, req_spread, memo_req, n_memo):
    """True if an earlier request with the same constraints and no larger demand found no closed resource."""
    for m in range(n_memo):
        f = memo_req[m]
        if req_spread[f] == 1 and _no_smaller(r, f, req_demand, req_tags, req_regions, req_providers):
            return True
    return False


# --------------------------------------------------------------------------- set-up
@njit(cache=True, error_model="numpy")
def _type_index(res_type):
    """Resources grouped by interchangeable type: (type_count, type_rep, type_members), where
    type t's members are type_members[type_count[t]:type_count[t + 1]] in index order and
    type_rep[t] is its first member."""
    S = len(res_type)
    n_types = 0
    for s in range(S):
        if res_type[s] + 1 > n_types:
            n_types = res_type[s] + 1
    type_count = np.zeros(n_types + 1, dtype=np.int64)
    type_rep = np.full(n_types, -1, dtype=np.int64)
    for s in range(S):
        type_count[res_type[s] + 1] += 1
        if type_rep[res_type[s]] < 0:
            type_rep[res_type[s]] = s
    for t in range(n_types):
        type_count[t + 1] += type_count[t]
    type_members = np.empty(S, dtype=np.int64)
    fill = type_count[:n_types].copy()
    for s in range(S):
        type_members[fill[res_type[s]]] = s
        fill[res_type[s]] += 1
    return type_count, type_rep, type_members


@njit(cache=True, error_model="numpy")
def _type_orders(req_demand, req_replicas, res_cap, res_price, type_rep):
    """The batch's total demand ``w``, and for each need signature (the dimensions a request
    asks for, as bits) the types cheapest per unit first.

    A type's "units" are how many copies of the batch's total demand vector, restricted to
    the dimensions the request needs, it holds (its bottleneck dimension): a GPU node is
    not cheap per unit for a CPU-only request just because it also has GPUs. Orders are
    built only for signatures present in the batch; ties keep the type id order."""
    R, D = req_demand.shape
    n_types = len(type_rep)
    w = np.zeros(D)
    for r in range(R):
        for d in range(D):
            w[d] += req_replicas[r] * req_demand[r, d]
    n_sig_all = 1 << D
    sig_present = np.zeros(n_sig_all, dtype=np.bool_)
    for r in range(R):
        m = 0
        for d in range(D):
            if req_demand[r, d] > 0.0:
                m |= 1 << d
        sig_present[m] = True
    type_order = np.zeros((n_sig_all, n_types), dtype=np.int64)
    type_unit = np.empty(n_types)
    for m in range(n_sig_all):
        if not sig_present[m]:
            continue
        for t in range(n_types):
            s = type_rep[t]
            units = 1e300
            for d in range(D):
                if (m >> d) & 1 and w[d] > 0.0:
                    u = res_cap[s, d] / w[d]
                    if u < units:
                        units = u
            type_unit[t] = res_price[s] / units if 0.0 < units < 1e300 else 1e300
        type_order[m] = np.argsort(type_unit, kind="mergesort")
    return w, type_order


@njit(cache=True, error_model="numpy")
def _inverse_square(res_cap):
    """1 / capacity^2 per resource and dimension (0 where the capacity is 0): the
    normalization of the alignment score."""
    S, D = res_cap.shape
    inv_cap2 = np.zeros((S, D))
    for s in range(S):
        for d in range(D):
            if res_cap[s, d] > 0.0:
                inv_cap2[s, d] = 1.0 / (res_cap[s, d] * res_cap[s, d])
    return inv_cap2


@njit(cache=True, error_model="numpy")
def _column_max(a):
    out = np.zeros(a.shape[1])
    for s in range(a.shape[0]):
        for d in range(a.shape[1]):
            if a[s, d] > out[d]:
                out[d] = a[s, d]
    return out


@njit(cache=True, error_model="numpy")
def _levels(req_demand):
    """Per dimension, the batch's smallest and median positive demand: the thresholds of
    the free-capacity levels (0: below the smallest; 1: at least that; 2: at least the
    median) that sort open resources into signature lists."""
    R, D = req_demand.shape
    min_pos = np.full(D, 1e300)
    for r in range(R):
        for d in range(D):
            if 0.0 < req_demand[r, d] < min_pos[d]:
                min_pos[d] = req_demand[r, d]
    mid = np.full(D, 1e300)
    for d in range(D):
        positive = req_demand[:, d][req_demand[:, d] > 0.0]
        if len(positive):
            mid[d] = np.median(positive)
    return min_pos, mid


@njit(cache=True, error_model="numpy")
def _signature_lists(res_open, res_free, min_pos, mid):
    """The open resources in lists by signature: per dimension a level of free capacity
    (see _levels) as base-3 digits. A replica scans only the lists whose levels reach its
    own in every dimension, so a GPU pod never walks CPU-only nodes, a large pod skips
    nearly full ones, and full resources drop out. Lists keep opening order (ties break on
    position); entries are invalidated lazily through the resource's move count (res_ep)."""
    S, D = res_free.shape
    n_sig = 3 ** D
    sig_list = np.empty((n_sig, S), dtype=np.int64)
    sig_ep = np.empty((n_sig, S), dtype=np.int64)   # the resource's move count when listed
    sig_n = np.zeros(n_sig, dtype=np.int64)
    sig_stale = np.zeros(n_sig, dtype=np.int64)
    res_sig = np.full(S, -1, dtype=np.int64)
    res_ep = np.zeros(S, dtype=np.int64)
    for s in range(S):
        if res_open[s]:
            _relist(s, res_free, min_pos, mid, sig_list, sig_ep, sig_n, sig_stale, res_sig, res_ep)
    return sig_list, sig_ep, sig_n, sig_stale, res_sig, res_ep


@njit(cache=True, error_model="numpy")
def _needs(req_demand, mid):
    """Per request: the dimensions it asks for (bits) and its levels (signature digits)."""
    R, D = req_demand.shape
    need_mask = np.zeros(R, dtype=np.int64)
    need_sig = np.zeros(R, dtype=np.int64)
    for r in range(R):
        for d in range(D):
            if req_demand[r, d] > 0.0:
                need_mask[r] |= 1 << d
                need_sig[r] += (2 if req_demand[r, d] >= mid[d] else 1) * 3 ** d
    return need_mask, need_sig


@njit(cache=True, error_model="numpy")
def _covers(D, need_sig):
    """covers[a, b]: list b's levels reach need a's in every dimension. Only the rows of the
    needs in ``need_sig`` are filled (the kernel reads no others): with four dimensions the
    whole table is 81 x 81, and filling it all cost more than packing a one-request batch."""
    n_sig = 3 ** D
    digits = np.empty((n_sig, D), dtype=np.int64)
    for a in range(n_sig):
        x = a
        for d in range(D):
            digits[a, d] = x % 3
            x //= 3
    covers = np.zeros((n_sig, n_sig), dtype=np.bool_)
    done = np.zeros(n_sig, dtype=np.bool_)
    for r in range(need_sig.shape[0]):
        a = need_sig[r]
        if done[a]:
            continue
        done[a] = True
        for b in range(n_sig):
            ok = True
            for d in range(D):
                if digits[b, d] < digits[a, d]:
                    ok = False
                    break
            covers[a, b] = ok
    return covers


@njit(cache=True, error_model="numpy")
def type_ids(free, cap, price, tags, region, provider, open_):
    """A type id per resource, equal for interchangeable ones (same free, capacity, price,
    tags, place, open), numbered in order of first appearance. Rows are hashed, sorted by
    hash (stably, so each group lists its rows in index order) and compared within a group:
    linear in the resources but for the sort, and no Python object per row."""
    S, D = free.shape
    h = np.empty(S, dtype=np.int64)
    for s in range(S):
        x = np.int64(1469598103934665603)
        for d in range(D):
            x = (x * np.int64(1099511628211)) ^ hash(free[s, d] + 0.0)     # -0.0 and 0.0 are one value
            x = (x * np.int64(1099511628211)) ^ hash(cap[s, d] + 0.0)
        x = (x * np.int64(1099511628211)) ^ price[s]
        x = (x * np.int64(1099511628211)) ^ tags[s]
        x = (x * np.int64(1099511628211)) ^ region[s]
        x = (x * np.int64(1099511628211)) ^ provider[s]
        x = (x * np.int64(1099511628211)) ^ np.int64(open_[s])
        h[s] = x
    order = np.argsort(h, kind="mergesort")
    rep = np.empty(S, dtype=np.int64)
    i = 0
    while i < S:
        j = i
        while j < S and h[order[j]] == h[order[i]]:
            j += 1
        for a in range(i, j):
            s = order[a]
            rep[s] = s
            for b in range(i, a):
                t = order[b]
                if rep[t] == t and _same_row(s, t, free, cap, price, tags, region, provider, open_):
                    rep[s] = t
                    break
        i = j
    ids = np.empty(S, dtype=np.int64)
    n = 0
    for s in range(S):
        if rep[s] == s:
            ids[s] = n
            n += 1
        else:
            ids[s] = ids[rep[s]]
    return ids


@njit(cache=True, error_model="numpy")
def _same_row(s, t, free, cap, price, tags, region, provider, open_):
    if price[s] != price[t] or tags[s] != tags[t] or region[s] != region[t] or provider[s] != provider[t]:
        return False
    if open_[s] != open_[t]:
        return False
    for d in range(free.shape[1]):
        if free[s, d] != free[t, d] or cap[s, d] != cap[t, d]:
            return False
    return True


# --------------------------------------------------------------------------- the kernel

@njit(cache=True, error_model="numpy")
def pack(reqs, req_order, res, improve, score_limit):
    """Place ``reqs`` (a ``Requests``) in ``req_order`` onto ``res`` (a ``Resources``); with
    ``improve``, consolidate and downsize after the greedy pass. Returns a ``Packing``."""
    req_demand, req_replicas, req_tags, req_regions, req_providers, req_spread = reqs
    res_free_in, res_cap, res_price, res_open_in, res_tags, res_region, res_provider, res_type = res
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

    # Identical closed resources (same type: capacity, price, tags, region, provider) are
    # interchangeable, so the search for one to open walks types, cheapest per unit first,
    # and takes each type's lowest-index closed member.
    type_count, type_rep, type_members = _type_index(res_type)
    n_types = len(type_rep)
    type_next = type_count[:n_types].copy()  # first member position that may still be closed
    # Which type to open: the lowest price per unit of the batch's demand mix (see _type_orders).
    w, type_order = _type_orders(req_demand, req_replicas, res_cap, res_price, type_rep)
    inv_cap2 = _inverse_square(res_cap)
    memo_req = np.empty(64, dtype=np.int64)
    n_memo = 0
    # Upper bound of free capacity per dimension over all resources, refreshed every 256
    # placements: a replica larger than it in any dimension cannot be placed anywhere.
    max_free = np.zeros(D)
    since_refresh = 1 << 30

    # Open resources live in lists by "signature" of free-capacity levels (see _levels): a
    # replica scans only the lists whose levels reach its own in every dimension.
    min_pos, mid = _levels(req_demand)
    n_sig = 3 ** D
    sig_list, sig_ep, sig_n, sig_stale, res_sig, res_ep = _signature_lists(res_open, res_free, min_pos, mid)
    need_mask, need_sig = _needs(req_demand, mid)
    covers = _covers(D, need_sig)

    # Demand not yet placed (this request's remaining replicas and all later requests).
    rem = w.copy()
    max_cap = _column_max(res_cap)
    used_providers = np.zeros(64, dtype=np.bool_)
    # The last request whose scan of open resources failed, and the resources whose free
    # capacity changed since (see the scan below).
    fail_ref = -1
    dirty = np.empty(DIRTY_MAX, dtype=np.int64)
    is_dirty = np.zeros(S, dtype=np.bool_)
    n_dirty = 0
    for oi in range(R):
        r = req_order[oi]
        left = req_replicas[r]
        start = n_pl
        spread = req_spread[r]
        for p in range(64):
            used_providers[p] = False
        n_prov = 0
        need = need_mask[r]
        # A request no smaller than one that already found room nowhere, with the same
        # constraints, fails too (free capacity only shrinks; see the memo below): skip the scans.
        failed = _dominated(r, req_demand, req_tags, req_regions, req_providers, req_spread, memo_req, n_memo)
        while left > 0 and not failed:
            # Until the spread is met, each new replica must go to a provider not used yet.
            need_new = n_prov < spread
            cap_now = 1 if need_new else left
            if since_refresh >= 256:
                for d in range(D):
                    max_free[d] = 0.0
                for s in range(S):
                    for d in range(D):
                        if res_free[s, d] > max_free[d]:
                            max_free[d] = res_free[s, d]
                since_refresh = 0
            too_big = False
            for d in range(D):
                if req_demand[r, d] > max_free[d] + EPS:
                    too_big = True
            if too_big:
                failed = True
                break
            since_refresh += 1
            best = -1
            best_score = -1.0
            scored = 0
            if fail_ref >= 0 and n_prov == 0 and _no_smaller(r, fail_ref, req_demand, req_tags, req_regions,
                                                              req_providers):
                # An earlier scan for a replica no larger, with the same constraints, found no
                # open resource it fits; only resources whose free capacity changed since can
                # hold this one (typically the one just opened). Saves a scan of every open
                # resource per opening.
                for i in range(n_dirty):
                    s = dirty[i]
                    if res_sig[s] < 0 or not covers[need_sig[r], res_sig[s]]:
                        continue
                    if not _compatible(r, s, req_tags, req_regions, req_providers, res_tags, res_region,
                                       res_provider):
                        continue
                    if not _fits_one(r, s, req_demand, res_free):
                        continue
                    sc = _alignment(r, s, req_demand, res_free, inv_cap2)
                    if sc > best_score:
                        best_score = sc
                        best = s
            else:
                for m in range(n_sig):
                    if not covers[need_sig[r], m]:
                        continue
                    for i in range(sig_n[m]):
                        if score_limit > 0 and scored >= score_limit:
                            break  # like kube-scheduler's percentageOfNodesToScore: enough feasible candidates
                        if not _live(m, i, sig_list, sig_ep, res_sig, res_ep):
                            continue
                        s = sig_list[m, i]
                        if need_new and used_providers[res_provider[s]]:
                            continue
                        # (the same three tests as the shortcut above, written out: a shared
                        # helper returning a sentinel measured ~50 % slower in this loop)
                        if not _compatible(r, s, req_tags, req_regions, req_providers, res_tags, res_region,
                                           res_provider):
                            continue
                        if not _fits_one(r, s, req_demand, res_free):
                            continue
                        scored += 1
                        sc = _alignment(r, s, req_demand, res_free, inv_cap2)
                        if sc > best_score:
                            best_score = sc
                            best = s
                if best < 0 and n_prov == 0:
                    fail_ref = r
                    n_dirty = _clear_dirty(dirty, n_dirty, is_dirty)
            if best < 0:
                # Cheapest per unit of the batch's mix, unless a type that is no dearer can hold
                # everything still to place ("last bin": near the end, cover what is left).
                cover = -1
                # Only near the end of the batch can one resource hold all that is left.
                can_cover = True
                for d in range(D):
                    if rem[d] > max_cap[d] + EPS:
                        can_cover = False
                        break
                for j in range(n_types):
                    t = type_order[need, j]
                    s = type_rep[t]
                    if need_new and used_providers[res_provider[s]]:
                        continue
                    if not _compatible(r, s, req_tags, req_regions, req_providers, res_tags, res_region, res_provider):
                        continue
                    s = _first_closed(t, type_next, type_count, type_members, res_open)
                    if s < 0:
                        continue
                    if not _fits_one(r, s, req_demand, res_free):
                        continue
                    holds_rest = True
                    for d in range(D):
                        if res_free[s, d] + EPS < rem[d]:
                            holds_rest = False
                            break
                    if holds_rest and (cover < 0 or res_price[s] < res_price[cover]):
                        cover = s
                    if best < 0:
                        best = s
                    if not can_cover:
                        break
                if cover >= 0 and res_price[cover] <= res_price[best]:
                    best = cover
                if best < 0:
                    # Remember a first-replica failure: free capacity only shrinks from here
                    # (rollbacks restore earlier states), so any request with the same
                    # constraints and no smaller demand will fail too.
                    if n_pl == start and req_spread[r] == 1 and n_memo < 64:
                        memo_req[n_memo] = r
                        n_memo += 1
                    failed = True
                    break
                res_open[best] = True
                opened_here[best] = True
            k = _fit_count(r, best, req_demand, res_free, cap_now)
            for d in range(D):
                res_free[best, d] -= k * req_demand[r, d]
                rem[d] -= k * req_demand[r, d]
            n_dirty, fail_ref = _mark_dirty(best, dirty, n_dirty, is_dirty, fail_ref)
            _relist(best, res_free, min_pos, mid, sig_list, sig_ep, sig_n, sig_stale, res_sig, res_ep)
            pl_req[n_pl] = r
            pl_res[n_pl] = best
            pl_count[n_pl] = k
            n_pl += 1
            left -= k
            if not used_providers[res_provider[best]]:
                used_providers[res_provider[best]] = True
                n_prov += 1
        if failed:
            # Whole or nothing: give back what this request took, in reverse; resources
            # opened only for it close again, the others return to their lists.
            for q in range(n_pl - 1, start - 1, -1):
                s = pl_res[q]
                for d in range(D):
                    res_free[s, d] += pl_count[q] * req_demand[r, d]
                n_dirty, fail_ref = _mark_dirty(s, dirty, n_dirty, is_dirty, fail_ref)
            for d in range(D):
                rem[d] -= left * req_demand[r, d]  # its unplaced replicas leave the remaining demand
            for q in range(n_pl - 1, start - 1, -1):
                s = pl_res[q]
                if opened_here[s] and _is_empty(s, res_free, res_cap):
                    if res_open[s]:
                        res_open[s] = False
                        opened_here[s] = False
                        _unlist(s, sig_list, sig_ep, sig_n, sig_stale, res_sig, res_ep)
                        type_next[res_type[s]] = type_count[res_type[s]]  # rescan this type from its start
                elif res_open[s]:
                    _relist(s, res_free, min_pos, mid, sig_list, sig_ep, sig_n, sig_stale, res_sig, res_ep)
            n_pl = start
        else:
            placed[r] = True

    # Flat list of open resources (signature order, then opening order) for the passes below.
    open_list = np.empty(S, dtype=np.int64)
    n_open = 0
    for m in range(n_sig):
        for i in range(sig_n[m]):
            if not _live(m, i, sig_list, sig_ep, res_sig, res_ep):
                continue
            open_list[n_open] = sig_list[m, i]
            n_open += 1

    if improve:
        # Items per resource as linked lists, so the passes touch only what they move.
        head = np.full(S, -1, dtype=np.int64)
        nxt = np.full(n_pl, -1, dtype=np.int64)
        for q in range(n_pl - 1, -1, -1):
            nxt[q] = head[pl_res[q]]
            head[pl_res[q]] = q
        _consolidate(req_demand, req_tags, req_regions, req_providers, req_spread, pl_req, pl_res, pl_count,
                     head, nxt, res_free, res_cap, res_price, res_open, opened_here, res_tags, res_region,
                     res_provider, open_list, n_open, inv_cap2, score_limit)
        _downsize(req_tags, req_regions, req_providers, req_spread, pl_req, pl_res,
                  head, nxt, res_free, res_cap, res_price, res_open, opened_here, res_tags, res_region,
                  res_provider, res_type, type_rep, type_members, type_count)

    cost = 0
    for s in range(S):
        if opened_here[s]:
            cost += res_price[s]
    return Packing(placed, pl_req[:n_pl].copy(), pl_res[:n_pl].copy(), pl_count[:n_pl].copy(), res_free,
                   res_open, cost)


@njit(cache=True, error_model="numpy")
def _first_closed(t, pointer, type_count, type_members, res_open):
    """Type t's first member still closed (-1 if none), advancing ``pointer[t]`` past open
    ones; whoever closes a member again must move the pointer back."""
    while pointer[t] < type_count[t + 1] and res_open[type_members[pointer[t]]]:
        pointer[t] += 1
    return type_members[pointer[t]] if pointer[t] < type_count[t + 1] else -1


#: Resources changed since the last failed scan, tracked at most; beyond, scan in full.
DIRTY_MAX = 64


@njit(cache=True, error_model="numpy")
def _no_smaller(r, f, req_demand, req_tags, req_regions, req_providers):
    """Request r has f's constraints and needs at least as much in every dimension."""
    if req_tags[r] != req_tags[f] or req_regions[r] != req_regions[f] or req_providers[r] != req_providers[f]:
        return False
    for d in range(req_demand.shape[1]):
        if req_demand[r, d] < req_demand[f, d]:
            return False
    return True


@njit(cache=True, error_model="numpy")
def _clear_dirty(dirty, n_dirty, is_dirty):
    for i in range(n_dirty):
        is_dirty[dirty[i]] = False
    return 0


@njit(cache=True, error_model="numpy")
def _mark_dirty(s, dirty, n_dirty, is_dirty, fail_ref):
    """Record that s's free capacity changed; returns (n_dirty, fail_ref)."""
    if fail_ref < 0 or is_dirty[s]:
        return n_dirty, fail_ref
    if n_dirty == len(dirty):                # too many changes: forget the failed scan
        return _clear_dirty(dirty, n_dirty, is_dirty), -1
    dirty[n_dirty] = s
    is_dirty[s] = True
    return n_dirty + 1, fail_ref


@njit(cache=True, error_model="numpy")
def _live(m, i, sig_list, sig_ep, res_sig, res_ep):
    """Entry i of list m is current (not left behind by a later move of its resource)."""
    s = sig_list[m, i]
    return res_sig[s] == m and sig_ep[m, i] == res_ep[s]


@njit(cache=True, error_model="numpy")
def _compact(m, sig_list, sig_ep, sig_n, sig_stale, res_sig, res_ep):
    keep = 0
    for i in range(sig_n[m]):
        if _live(m, i, sig_list, sig_ep, res_sig, res_ep):
            sig_list[m, keep] = sig_list[m, i]
            sig_ep[m, keep] = sig_ep[m, i]
            keep += 1
    sig_n[m] = keep
    sig_stale[m] = 0


@njit(cache=True, error_model="numpy")
def _unlist(s, sig_list, sig_ep, sig_n, sig_stale, res_sig, res_ep):
    """Take s out of its list. Lazily: its entry goes stale (scans skip it) and the list is
    compacted, order kept, once stale entries outnumber live ones. Removing in place would
    shift the whole list on every move; this keeps moves O(1) amortized."""
    m = res_sig[s]
    if m < 0:
        return
    res_sig[s] = -1
    res_ep[s] += 1
    sig_stale[m] += 1
    if sig_stale[m] > 32 and 2 * sig_stale[m] > sig_n[m]:
        _compact(m, sig_list, sig_ep, sig_n, sig_stale, res_sig, res_ep)


@njit(cache=True, error_model="numpy")
def _relist(s, res_free, min_pos, mid, sig_list, sig_ep, sig_n, sig_stale, res_sig, res_ep):
    """Put s at the end of the list of its current signature (none if it can host nothing more)."""
    sig = 0
    for d in range(res_free.shape[1]):
        if min_pos[d] < 1e300 and res_free[s, d] + EPS >= min_pos[d]:
            sig += (2 if res_free[s, d] + EPS >= mid[d] else 1) * 3 ** d
    if sig == res_sig[s] or (sig == 0 and res_sig[s] < 0):
        return
    _unlist(s, sig_list, sig_ep, sig_n, sig_stale, res_sig, res_ep)
    if sig == 0:
        return
    if sig_n[sig] == sig_list.shape[1]:
        _compact(sig, sig_list, sig_ep, sig_n, sig_stale, res_sig, res_ep)
    sig_list[sig, sig_n[sig]] = s
    sig_ep[sig, sig_n[sig]] = res_ep[s]
    sig_n[sig] += 1
    res_sig[s] = sig


@njit(cache=True, error_model="numpy")
def _is_empty(s, res_free, res_cap):
    for d in range(res_free.shape[1]):
        if res_free[s, d] < res_cap[s, d] - 1e-6:
            return False
    return True


@njit(cache=True, error_model="numpy")
def _consolidate(req_demand, req_tags, req_regions, req_providers, req_spread, pl_req, pl_res, pl_count,
                 head, nxt, res_free, res_cap, res_price, res_open, opened_here, res_tags, res_region,
                 res_provider, open_list, n_open, inv_cap2, score_limit):
    """Empty batch-opened resources (most expensive first) into other open resources."""
    S, D = res_free.shape
    # Candidates: opened in this batch and at most half used in every dimension (fuller
    # ones almost never empty into the rest, and trying costs a scan of the open list).
    cand = np.empty(S, dtype=np.int64)
    n_c = 0
    for s in range(S):
        if not opened_here[s]:
            continue
        light = True
        for d in range(D):
            if res_cap[s, d] > 0.0 and (res_cap[s, d] - res_free[s, d]) > 0.5 * res_cap[s, d]:
                light = False
                break
        if light:
            cand[n_c] = s
            n_c += 1
    prices = np.empty(n_c)
    for i in range(n_c):
        prices[i] = -res_price[cand[i]]
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
            scored = 0
            for i in range(n_open):
                if score_limit > 0 and scored >= score_limit:
                    break
                s = open_list[i]
                if s == src or not res_open[s]:
                    continue
                if not _compatible(r, s, req_tags, req_regions, req_providers, res_tags, res_region, res_provider):
                    continue
                if _fit_count(r, s, req_demand, res_free, pl_count[q]) < pl_count[q]:
                    continue
                scored += 1
                sc = _alignment(r, s, req_demand, res_free, inv_cap2)
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


@njit(cache=True, error_model="numpy")
def _downsize(req_tags, req_regions, req_providers, req_spread, pl_req, pl_res,
              head, nxt, res_free, res_cap, res_price, res_open, opened_here, res_tags, res_region, res_provider,
              res_type, type_rep, type_members, type_count):
    """Swap each batch-opened resource for the cheapest closed one that holds all it hosts."""
    S, D = res_free.shape
    n_types = len(type_rep)
    type_price = np.empty(n_types)
    for t in range(n_types):
        type_price[t] = res_price[type_rep[t]]
    by_price = np.argsort(type_price, kind="mergesort")
    # Per type, the first member position that may still be closed (members before it are
    # open); a member that closes again moves it back. Keeps the walk linear overall.
    first_closed = type_count[:n_types].copy()
    member_pos = np.empty(S, dtype=np.int64)
    for i in range(S):
        member_pos[type_members[i]] = i
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
        for j in range(n_types):
            t = by_price[j]
            s = type_rep[t]
            if res_price[s] >= res_price[src]:
                break
            if spread and res_provider[s] != res_provider[src]:
                continue
            # the type's first closed member (members of a type are interchangeable)
            s = _first_closed(t, first_closed, type_count, type_members, res_open)
            if s < 0:
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
        t = res_type[src]
        if member_pos[src] < first_closed[t]:
            first_closed[t] = member_pos[src]


@njit(cache=True, error_model="numpy")
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


# --------------------------------------------------------------------------- one request

@njit(cache=True, error_model="numpy")
def pack_one_on_open(req_demand, replicas, req_bits, res_free, inv_cap2, res_open, res_tags, res_region,
                     res_provider, score_limit):
    """``pack`` for a batch of one request (``req_demand`` of shape (1, D); ``req_bits`` its
    required tags, allowed regions and allowed providers, one array: each array argument
    costs the caller an allocation) with a provider spread of 1, when every replica finds
    room on resources already open; ``n == 0`` when one does not, and then the caller runs
    ``pack``. Most batches of a running fleet are one request that fits on open capacity;
    this answers them without ``pack``'s set-up (type index, signature lists, per-batch
    orders), which costs more than the placement.

    It is ``pack``'s greedy pass for that case, step for step and with its helpers: with one
    request the signature lists hold exactly the open resources it fits on, in index order
    (a resource leaves its list when it no longer fits, and none returns), the first
    replica is placed alone (the spread of 1 is met by it) and later ones as many as fit
    at once on the best-aligned resource, scoring at most ``score_limit`` feasible resources
    per scan; nothing is opened, so the improvement passes have nothing to move. The tests
    check it against ``pack`` on random tables. ``inv_cap2`` is ``_inverse_square`` of the
    capacities (the caller keeps it: capacity changes only with the fleet). Returns
    (resources, counts, n, free after)."""
    S = res_free.shape[0]
    req_tags, req_regions, req_providers = req_bits[0:1], req_bits[1:2], req_bits[2:3]
    free = res_free.copy()
    pl_res = np.empty(replicas, dtype=np.int64)
    pl_count = np.empty(replicas, dtype=np.int64)
    n = 0
    left = replicas
    cap_now = 1
    while left > 0:
        best = -1
        best_score = -1.0
        scored = 0
        for s in range(S):
            if score_limit > 0 and scored >= score_limit:
                break
            if not res_open[s]:
                continue
            if not _compatible(0, s, req_tags, req_regions, req_providers, res_tags, res_region, res_provider):
                continue
            if not _fits_one(0, s, req_demand, free):
                continue
            scored += 1
            sc = _alignment(0, s, req_demand, free, inv_cap2)
            if sc > best_score:
                best_score = sc
                best = s
        if best < 0:
            return pl_res, pl_count, 0, free
        k = _fit_count(0, best, req_demand, free, cap_now)
        for d in range(free.shape[1]):
            free[best, d] -= k * req_demand[0, d]
        pl_res[n] = best
        pl_count[n] = k
        n += 1
        left -= k
        cap_now = left
    return pl_res, pl_count, n, free
