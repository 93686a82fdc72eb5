"""Exact lexicographic packing of a small batch by integer programming (offline effort).

The greedy kernel and its searches are fast, but on a small batch that does not fit whole
they can place fewer replicas of a worse tier than some packing would: making room for
them needs several requests rearranged at once. For such batches ``tessera pack`` (the
``FULL`` effort) asks an exact solver: HiGHS through SciPy's ``milp`` (SciPy is already
here, River needs it), with the yardstick as its objective, stage by stage:

1. most replicas of platinum, then of gold, silver and bronze in turn, each stage's optimum
   kept as a constraint for the next (requests are placed whole or not at all);
2. then the least cost of the resources opened.

Variables: replicas of request r on compatible resource s (integer), r placed (binary),
closed resource s opened (binary). Constraints: a placed request has all its replicas
placed; each resource's load stays within its free capacity, and a closed one has none
unless opened. Requests with a provider spread are left to the greedy.

The answer is used only when every stage was solved to optimality within its budget, and
only after an exact check of the packing in floating point (the solver's tolerances could
otherwise let a resource be over-committed by a hair); otherwise the search's answer
stands. The budget is branch-and-bound nodes per stage, not seconds: the same batch gets
the same answer on a fast machine and a slow one (a time limit made ``tessera pack``'s
answer depend on the machine for batches that took close to it). A wall-clock guard far
beyond any solve seen (``guard_s``) only stops a pathological batch. The live scheduler
never runs this (its effort has no time for it), so its decisions stay bounded in time.
"""

from __future__ import annotations

import time

import numpy as np

from .batch import compatibility
from .kernel import Packing, Requests, Resources

#: Batches up to this many compatible (request, resource) pairs are tried.
MIP_MAX_PAIRS = 2_000
EPS = 1e-9


def lexicographic_packing(reqs: Requests, res: Resources, tiers: np.ndarray, node_limit: int,
                          known: Packing | None = None, guard_s: float = 60.0) -> Packing | None:
    """The yardstick's optimum for this batch (``tiers``: rank per request, 0 = best), or
    None when a stage is not proven within ``node_limit`` branch-and-bound nodes (or the
    guard, ``guard_s`` for the whole batch) or the batch is out of scope.
    ``known``: a packing already found; a tier it places whole needs no stage of its own.
    (Bounding the cost by its cost as well made HiGHS slower, 4.2 s against 2.2 s on a
    benchmark instance.)"""
    # Imported here: SciPy's optimize takes ~0.3 s to import, and the live scheduler,
    # which imports this module, never runs it.
    from scipy.optimize import Bounds, LinearConstraint
    from scipy.sparse import coo_matrix

    R, D = reqs.demand.shape
    S = res.free.shape[0]
    if R == 0 or S == 0 or (reqs.spread > 1).any():
        return None
    compat = compatibility(reqs, res) & (res.free + EPS >= reqs.demand[:, None, :]).all(axis=2)
    pairs = np.argwhere(compat)
    if len(pairs) == 0 or len(pairs) > MIP_MAX_PAIRS:
        return None
    closed = np.nonzero(~res.open)[0]
    P, C = len(pairs), len(closed)
    n = P + R + C                        # x per pair, then z per request, then o per closed resource
    col_of_closed = {int(s): P + R + j for j, s in enumerate(closed)}
    rows, cols, vals = [], [], []
    lo, hi = [], []
    # Whole or nothing: sum_s x[r, s] - replicas_r * z_r == 0.
    for k, (r, _) in enumerate(pairs):
        rows.append(int(r))
        cols.append(k)
        vals.append(1.0)
    for r in range(R):
        rows.append(r)
        cols.append(P + r)
        vals.append(-float(reqs.replicas[r]))
    lo += [0.0] * R
    hi += [0.0] * R
    row = R
    # Capacity: sum_r demand[r, d] * x[r, s] - free[s, d] * o_s <= 0 (closed) or <= free[s, d] (open).
    by_res: dict[int, list[int]] = {}
    for k, (_, s) in enumerate(pairs):
        by_res.setdefault(int(s), []).append(k)
    for s, ks in sorted(by_res.items()):
        for d in range(D):
            load = [(k, float(reqs.demand[pairs[k][0], d])) for k in ks if reqs.demand[pairs[k][0], d] > 0]
            if not load:
                continue
            for k, v in load:
                rows.append(row)
                cols.append(k)
                vals.append(v)
            if s in col_of_closed:
                rows.append(row)
                cols.append(col_of_closed[s])
                vals.append(-float(res.free[s, d]))
                hi.append(0.0)
            else:
                hi.append(float(res.free[s, d]))
            lo.append(-np.inf)
            row += 1
    A = coo_matrix((vals, (rows, cols)), shape=(row, n)).tocsr()
    upper = np.concatenate([reqs.replicas[pairs[:, 0]].astype(np.float64), np.ones(R + C)])
    lower = np.zeros(n)
    whole = set()
    if known is not None:      # a tier placed whole: every request of it is placed, no solve
        whole = {int(k) for k in set(tiers.tolist()) if known.placed[tiers == k].all()}
        for r in range(R):
            if int(tiers[r]) in whole:
                lower[P + r] = 1.0
    bounds = Bounds(lower, upper)
    integrality = np.ones(n)
    constraints = [LinearConstraint(A, np.array(lo), np.array(hi))]
    deadline = time.monotonic() + guard_s
    for tier in sorted(set(tiers.tolist()) - whole):
        c = np.zeros(n)
        members = np.nonzero(tiers == tier)[0]
        c[P + members] = -reqs.replicas[members].astype(np.float64)     # maximise replicas of the tier
        x = _solve(c, constraints, bounds, integrality, node_limit, deadline)
        if x is None:
            return None
        best = float(np.round(-c @ x))
        constraints.append(LinearConstraint(-c.reshape(1, -1), best - 0.5, np.inf))
    c = np.zeros(n)
    c[P + R:] = res.price[closed].astype(np.float64) / 1e6           # micro-units -> units: better scaled
    x = _solve(c, constraints, bounds, integrality, node_limit, deadline)
    if x is None:
        return None
    return _packing(np.round(x).astype(np.int64), pairs, reqs, res, P, R)


def _solve(c, constraints, bounds, integrality, node_limit, deadline) -> np.ndarray | None:
    from scipy.optimize import milp

    left = deadline - time.monotonic()
    if left <= 0:
        return None
    out = milp(c, constraints=constraints, bounds=bounds, integrality=integrality,
               options={"node_limit": node_limit, "time_limit": left, "disp": False})
    return out.x if out.status == 0 and out.x is not None else None   # 0: proven optimal


def _packing(x: np.ndarray, pairs: np.ndarray, reqs: Requests, res: Resources, P: int, R: int) -> Packing | None:
    """The solver's answer as the kernel's Packing, checked exactly; None if it fails."""
    placed = x[P:P + R] > 0
    free = res.free.copy()
    open_ = res.open.copy()
    pl_req, pl_res, pl_count = [], [], []
    taken = np.zeros(R, dtype=np.int64)
    for k, (r, s) in enumerate(pairs):
        if x[k] <= 0:
            continue
        if not placed[r]:
            return None
        free[s] -= x[k] * reqs.demand[r]
        open_[s] = True
        taken[r] += x[k]
        pl_req.append(int(r))
        pl_res.append(int(s))
        pl_count.append(int(x[k]))
    if (free < -EPS).any() or (taken != np.where(placed, reqs.replicas, 0)).any():
        return None
    opened = np.nonzero(open_ & ~res.open)[0]
    cost = int(res.price[opened].sum())
    return Packing(placed=placed, pl_req=np.array(pl_req, dtype=np.int64), pl_res=np.array(pl_res, dtype=np.int64),
                   pl_count=np.array(pl_count, dtype=np.int64), free=np.maximum(free, 0.0), open=open_, cost=cost)
