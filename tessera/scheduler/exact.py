"""Exact search for small batches: which resources to open, proven by a packing.

The greedy kernel is fast but can waste the last bins. When a batch is small (a few dozen
replicas, a few dozen resource types) the cheapest set of resources to open can be searched
for directly, as variable-sized vector bin packing:

* a depth-first branch and bound over the closed resource *types* (interchangeable
  resources), cheapest per unit of the needed capacity first, choosing how many of each
  to open. A branch is cut when its cost plus a fractional bound on covering what is
  still missing reaches the best known cost (initially the greedy's);
* a set whose capacity covers the demand in every dimension is tested by an exact
  backtracking packing of the replicas into the open resources plus the set (replicas in
  decreasing size; identical replicas never try an earlier bin than their twin; identical
  bins with identical room are tried once; a branch is cut as soon as what remains
  cannot fit the remaining room in some dimension).

Both searches have node budgets (per packing, and in total), so the answer is "no worse than the greedy" always and
"optimal" when the budgets were not hit (reported). Constraints (tags, regions, providers)
are honored through a request x resource compatibility matrix; batches with a provider
spread are left to the greedy. Pure function over arrays, ``numba.njit(cache=True)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .kernel import _fits_one

EPS = 1e-9


@njit(cache=True, error_model="numpy")
def _room_left(resid, room, rest, least, i):
    """Can the items i.. still fit, counting only the room of bins that can take at least
    the smallest of them in every dimension (the rest is waste)?"""
    B, D = resid.shape
    for d in range(D):
        if rest[i, d] > room[d] + EPS:
            return False
    if i >= rest.shape[0] - 1:
        return True
    for d in range(D):
        if rest[i, d] <= EPS:
            continue
        useful = 0.0
        for b in range(B):
            ok = True
            for e in range(D):
                if resid[b, e] + EPS < least[i, e]:
                    ok = False
                    break
            if ok:
                useful += resid[b, d]
        if rest[i, d] > useful + EPS:
            return False
    return True


@njit(cache=True, error_model="numpy")
def _best_fit(dem, item_req, bins, free, compat, assign):
    """Best fit decreasing: each item to the compatible bin it leaves the least room in
    (sum over dimensions of the room left, each relative to the largest bin). Most feasible
    sets are proven feasible here at once; the backtracking is for the hard ones."""
    I, D = dem.shape
    B = len(bins)
    resid = np.empty((B, D))
    top = np.full(D, 1e-12)
    for b in range(B):
        for d in range(D):
            resid[b, d] = free[bins[b], d]
            top[d] = max(top[d], resid[b, d])
    for i in range(I):
        best = -1
        best_left = 1e300
        for b in range(B):
            if not compat[item_req[i], bins[b]] or not _fits_one(i, b, dem, resid):
                continue
            left = 0.0
            for d in range(D):
                left += (resid[b, d] - dem[i, d]) / top[d]
            if left < best_left:
                best_left = left
                best = b
        if best < 0:
            return False
        assign[i] = best
        for d in range(D):
            resid[best, d] -= dem[i, d]
    return True


@njit(cache=True, error_model="numpy")
def pack_items(dem, item_req, twin_prev, bins, bin_type, free, compat, node_limit, assign):
    """Place every item (rows of ``dem``, in the order given) into ``bins``: (1, nodes) if done
    (then ``assign[i]`` is item i's position in ``bins``), 0 if impossible, -1 if the node
    budget ran out first. ``twin_prev[i]``: item i is interchangeable with item i-1."""
    I, D = dem.shape
    B = len(bins)
    resid = np.empty((B, D))
    room = np.zeros(D)
    for b in range(B):
        for d in range(D):
            resid[b, d] = free[bins[b], d]
            room[d] += free[bins[b], d]
    rest = np.zeros((I + 1, D))           # demand of items i.. (suffix sums)
    least = np.full((I + 1, D), 1e300)    # smallest demand per dimension among items i..
    for i in range(I - 1, -1, -1):
        for d in range(D):
            rest[i, d] = rest[i + 1, d] + dem[i, d]
            least[i, d] = min(least[i + 1, d], dem[i, d])
    for d in range(D):
        if rest[0, d] > room[d] + EPS:
            return 0, 0
    if _best_fit(dem, item_req, bins, free, compat, assign):
        return 1, I
    nxt = np.zeros(I, dtype=np.int64)
    for i in range(I):
        assign[i] = -1
    i = 0
    nodes = 0
    while i >= 0:
        if i == I:
            return 1, nodes
        nodes += 1
        if nodes > node_limit:
            return -1, nodes
        if assign[i] >= 0:                 # coming back: take item i out of its bin
            b = assign[i]
            for d in range(D):
                resid[b, d] += dem[i, d]
                room[d] += dem[i, d]
            assign[i] = -1
        r = item_req[i]
        b = nxt[i]
        placed = False
        while b < B:
            if compat[r, bins[b]] and _fits_one(i, b, dem, resid):
                # a bin identical to an earlier one (same type, same room) was tried already
                dup = False
                for b2 in range(b):
                    if bin_type[b2] == bin_type[b]:
                        same = True
                        for d in range(D):
                            if abs(resid[b2, d] - resid[b, d]) > EPS:
                                same = False
                                break
                        if same and compat[r, bins[b2]]:
                            dup = True
                            break
                if not dup:
                    placed = True
                    break
            b += 1
        if not placed:
            nxt[i] = 0
            i -= 1
            continue
        assign[i] = b
        nxt[i] = b + 1
        for d in range(D):
            resid[b, d] -= dem[i, d]
            room[d] -= dem[i, d]
        if not _room_left(resid, room, rest, least, i + 1):
            continue                        # retry item i in its next bin
        i += 1
        if i < I:
            nxt[i] = assign[i - 1] if twin_prev[i] else 0
    return 0, nodes


@njit(cache=True, error_model="numpy")
def search(dem, item_req, twin_prev, open_bins, free, res_price, compat, type_rep, type_members, type_count,
           need, best_cost, node_limit, total_nodes):
    """Cheapest set of closed resources (by type counts) whose opening lets every item fit.

    Returns (cost, assign, bins, complete): ``cost`` < ``best_cost`` if a cheaper set was
    found (else ``best_cost``, and no bins), the item -> bin assignment and the bins of the
    best set, and whether the search finished within its budgets (then the cost is optimal)."""
    I, D = dem.shape
    T = len(type_rep)
    # Types by price per unit of the bottleneck dimension of what is needed.
    unit = np.empty(T)
    for t in range(T):
        s = type_rep[t]
        u = 1e300
        for d in range(D):
            if need[d] > EPS:
                c = free[s, d] / need[d]
                if c < u:
                    u = c
        unit[t] = res_price[s] / u if 0.0 < u < 1e300 else 1e300
    order = np.argsort(unit, kind="mergesort")
    n_open = len(open_bins)
    max_bins = n_open
    for t in range(T):
        max_bins += type_count[t + 1] - type_count[t]
    bins = np.empty(max_bins, dtype=np.int64)
    bin_type = np.full(max_bins, -1, dtype=np.int64)
    for b in range(n_open):
        bins[b] = open_bins[b]
        bin_type[b] = -2 - b                # open bins are never interchangeable
    best_bins = np.empty(max_bins, dtype=np.int64)
    best_n = 0                              # bins of the best set found (0: none)
    assign = np.empty(I, dtype=np.int64)
    best_assign = np.full(I, -1, dtype=np.int64)
    count = np.zeros(T, dtype=np.int64)     # chosen count per position in ``order``
    cover = np.zeros(D)
    spent = 0
    complete = True
    # Iterative DFS over positions j in ``order``: count[j] goes from the maximum down to 0.
    j = 0
    cost = 0
    count[0] = -1                           # -1: not started at this level
    while j >= 0:
        if j == T:
            j -= 1
            continue
        t = order[j]
        members = type_count[t + 1] - type_count[t]
        s0 = type_rep[t]
        if count[j] < 0:
            count[j] = members
        else:                               # undo the previous choice at this level
            for d in range(D):
                cover[d] -= count[j] * free[s0, d]
            cost -= count[j] * res_price[s0]
            count[j] -= 1
        if count[j] < 0:
            count[j] = -1
            j -= 1
            continue
        n = count[j]
        cost += n * res_price[s0]
        for d in range(D):
            cover[d] += n * free[s0, d]
        if cost >= best_cost:
            continue
        covered = True
        for d in range(D):
            if cover[d] + EPS < need[d]:
                covered = False
                break
        if covered:
            if spent >= total_nodes:
                complete = False
                break
            nb = n_open
            for jj in range(j + 1):
                tt = order[jj]
                for k in range(count[jj]):
                    bins[nb] = type_members[type_count[tt] + k]
                    bin_type[nb] = tt
                    nb += 1
            verdict, used = pack_items(dem, item_req, twin_prev, bins[:nb], bin_type[:nb], free, compat,
                                       node_limit, assign)
            spent += used
            if verdict < 0:
                complete = False    # unknown: a cheaper set may have been missed
            elif verdict == 1:
                best_cost = cost
                best_n = nb
                best_bins[:nb] = bins[:nb]
                best_assign[:] = assign
                continue                    # more resources here only cost more
        # Bound: what is still missing, covered fractionally by the types after j.
        lb = 0.0
        for d in range(D):
            miss = need[d] - cover[d]
            if miss <= EPS:
                continue
            # cheapest per unit of dimension d among the remaining types (fractional cover)
            cheapest = 1e300
            room = 0.0
            for jj in range(j + 1, T):
                tt = order[jj]
                s = type_rep[tt]
                if free[s, d] > 0.0:
                    room += (type_count[tt + 1] - type_count[tt]) * free[s, d]
                    r = res_price[s] / free[s, d]
                    if r < cheapest:
                        cheapest = r
            if room + EPS < miss:
                lb = 1e300
                break
            if miss * cheapest > lb:
                lb = miss * cheapest
        if cost + lb >= best_cost:
            continue
        j += 1
        if j < T:
            count[j] = -1
    return best_cost, best_assign, best_bins[:best_n].copy(), complete   # best_n = 0: none found
