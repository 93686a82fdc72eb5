"""The engine's per-update arithmetic, compiled with Numba.

Each update touches a dozen tiny arrays (horizons x models x quantile levels). As NumPy
expressions that is ~40 calls of a few microseconds of overhead each, which alone would
spend the whole per-series budget; one compiled loop per step costs about a microsecond.
The functions mutate the engine's arrays in place and are pure otherwise.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True)
def score_interval(t, z, due_target, due_models, due_point, due_offsets, model_error, resid_scale,
                   tracked, scored, taus, blend_rate, scale_rate, level_rates):
    """Score every forecast issued for step ``t`` against its value ``z``.

    Updates per horizon: the models' EW absolute error, the blend's EW absolute residual
    and the residual quantile trackers (``q += eta * (tau - 1[r <= q_issued])``).
    Returns the one-step residual, or NaN when no one-step forecast was issued.
    """
    H, M = model_error.shape
    K = taus.shape[0]
    row = t % H
    r1 = np.nan
    for h in range(H):
        if due_target[row, h] != t:
            continue
        # Running means at first, then exponentially weighted: the starting values carry
        # no information and must not linger for a half-life.
        brate = max(blend_rate, 1.0 / (scored[h] + 1.0))
        for m in range(M):
            # Capped: one overflowing forecast must not make this model's error inf, and
            # the blend weights (error / best error) NaN for good.
            err = min(abs(z - due_models[row, h, m]), 1e12)
            model_error[h, m] += brate * (err - model_error[h, m])
        r = z - due_point[row, h]
        rate = max(scale_rate, 1.0 / (scored[h] + 1.0))
        resid_scale[h] += rate * (abs(r) - resid_scale[h])
        for k in range(K):
            below = 1.0 if r <= due_offsets[row, h, k] else 0.0
            tracked[h, k] += level_rates[k] * resid_scale[h] * (taus[k] - below)
        scored[h] += 1
        due_target[row, h] = -1
        if h == 0:
            r1 = r
    return r1


@njit(cache=True)
def blend_weights(model_error, sharpness):
    H, M = model_error.shape
    w = np.empty((H, M))
    for h in range(H):
        best = model_error[h, 0]
        for m in range(1, M):
            best = min(best, model_error[h, m])
        total = 0.0
        for m in range(M):
            w[h, m] = math.exp(-sharpness * (model_error[h, m] / (best + 1e-12) - 1.0))
            total += w[h, m]
        for m in range(M):
            w[h, m] /= total
    return w


@njit(cache=True)
def issue_forecast(step, preds, uplift, model_error, sharpness, tracked, scored, resid_scale, prior_z, warm_n,
                   due_target, due_models, due_point, due_offsets, scale, out, step_change):
    """Blend the models' forecasts, add the sorted tracked quantiles, file them for scoring.

    Until a horizon has ``warm_n`` scored residuals its offsets lean on a Gaussian prior
    (``prior_z`` x 1.25 x mean absolute residual, the normal's sigma), moving to the
    tracked quantiles as they accumulate evidence; a cold series gets a sensible band
    instead of a zero-width one.
    ``out`` (H, K) receives the quantiles in the series' units (never below zero).
    Returns the index of the model with the largest weight at horizon 1.
    """
    M, H = preds.shape
    K = tracked.shape[1]
    w = blend_weights(model_error, sharpness)
    offsets = np.empty(K)
    for h in range(H):
        point = uplift[h]
        for m in range(M):
            point += w[h, m] * preds[m, h]
        trust = min(scored[h] / warm_n, 1.0)
        # Before a horizon has its first residual, the prior's scale is the series' own
        # mean absolute change grown as a random walk's (a zero-width band misses surely).
        spread = resid_scale[h] if scored[h] > 0 else step_change * math.sqrt(h + 1.0)
        for k in range(K):
            offsets[k] = trust * tracked[h, k] + (1.0 - trust) * prior_z[k] * 1.2533 * spread
        offsets.sort()                      # monotone rearrangement: levels never cross
        target = step + h + 1
        row = target % H
        due_target[row, h] = target
        due_point[row, h] = point
        for m in range(M):
            due_models[row, h, m] = preds[m, h]
        for k in range(K):
            due_offsets[row, h, k] = offsets[k]
            out[h, k] = max(point + offsets[k], 0.0) * scale
    best = 0
    for m in range(1, M):
        if w[0, m] > w[0, best]:
            best = m
    return best


@njit(cache=True)
def arima_path(base, ar, ma, sar, lag, y_recent, e_recent, y_season, level, out):
    """The SNARIMAX (d=1) forecast recursion: differences from the AR, MA and seasonal AR
    terms, forecasts standing in for values not yet seen, summed onto the last level.
    ``y_recent[k]`` is the difference k+1 steps back, ``e_recent`` the errors likewise,
    ``y_season[t]`` the difference ``lag`` steps before forecast step t."""
    H = out.shape[0]
    p, q, ne = ar.shape[0], ma.shape[0], e_recent.shape[0]
    preds = np.empty(H)
    for t in range(H):
        acc = base
        for k in range(1, p + 1):
            acc += ar[k - 1] * (preds[t - k] if k <= t else y_recent[k - 1 - t])
        for k in range(1, q + 1):
            if k > t and k - 1 - t < ne:
                acc += ma[k - 1] * e_recent[k - 1 - t]
        if sar != 0.0:
            acc += sar * (preds[t - lag] if lag <= t else y_season[t])
        preds[t] = acc
        level += acc
        out[t] = level


@njit(cache=True)
def direct_learn(t, z, hist, levels, rates, W, P, lags, season, levels_at, lam, err_scale, huber, bias, cal,
                 bias_rate):
    """One interval of models.DirectAR: file ``z`` in the history, move the smoothed levels,
    fit every horizon whose origin is known (``rls_update``); in one call, because the
    Python around a handful of tiny NumPy steps cost more than the steps."""
    hist[t % hist.shape[0]] = z
    for k in range(levels.shape[0]):
        levels[k] = z if t == 0 else levels[k] + rates[k] * (z - levels[k])
    slot = time_of_day_slot(cal[0], cal[1], bias.shape[1]) if cal.shape[0] >= 2 else -1
    rls_update(t, z, W, P, hist, lags, season, levels_at, lam, err_scale, huber, bias, slot, bias_rate)


@njit(cache=True)
def direct_forecast(t, hist, lags, season, levels, levels_at, W, bias, cal_future, out):
    """models.DirectAR's forecasts from origin ``t`` into ``out`` (H): the last value plus
    each horizon's fitted change and time-of-day bias. Files the origin's levels, which
    ``rls_update`` reads back when the outcomes arrive."""
    H, F = W.shape
    X = np.empty((H, F))
    direct_features(t, hist, lags, season, levels, X)
    z = hist[t % hist.shape[0]]
    levels_at[t % H, :] = levels
    for h in range(H):
        acc = z
        for f in range(F):
            acc += W[h, f] * X[h, f]
        out[h] = acc
    add_time_of_day_bias(out, bias, cal_future)


@njit(cache=True)
def rls_update(t, z, W, P, hist, lags, season, levels_at, lam, err_scale, huber, bias, slot, bias_rate):
    """Recursive least squares with forgetting: one step per horizon ``h`` whose origin
    ``t - h`` is known. The origin's features are rebuilt from the history (cheaper to keep
    than the issued feature rows); ``levels_at`` holds the smoothed levels per origin.

    ``bias[h, slot]`` is the mean error left at horizon ``h`` for targets in this time-of-day
    slot (``slot`` < 0: none). It is fitted by backfitting: the regression learns the change
    net of the slot's bias, the bias learns the regression's residual."""
    H, F = W.shape
    L = hist.shape[0]
    Px = np.empty(F)
    X = np.empty((H, F))
    for h in range(H):
        o = t - h - 1
        if o < 0:
            continue
        direct_features(o, hist, lags, season, levels_at[o % H], X)
        x = X[h]
        y = z - hist[o % L]
        if slot >= 0:
            y -= bias[h, slot]
        err = y
        for i in range(F):
            err -= W[h, i] * x[i]
        # Huber weighting: an outcome far outside the recent error scale (a burst the
        # features could not know of) pulls the fit as if it were only huber x scale away.
        a = abs(err)
        s = err_scale[h]
        wgt = 1.0
        if huber > 0.0 and s > 0.0 and a > huber * s:
            wgt = huber * s / a
        err_scale[h] = a if s == 0.0 else s + 0.01 * (a - s)
        if slot >= 0:
            bias[h, slot] += bias_rate * wgt * err
        denom = lam / wgt
        for i in range(F):
            acc = 0.0
            for j in range(F):
                acc += P[h, i, j] * x[j]
            Px[i] = acc
            denom += x[i] * acc
        for i in range(F):
            W[h, i] += Px[i] / denom * err
        for i in range(F):
            ki = Px[i] / denom
            for j in range(F):
                P[h, i, j] = (P[h, i, j] - ki * Px[j]) / lam


@njit(cache=True)
def time_of_day_slot(sin1, cos1, slots):
    """The slot (of ``slots`` equal parts of the day) whose first daily harmonic is
    (``sin1``, ``cos1``); see models.time_of_day_slot."""
    phase = math.atan2(sin1, cos1) / (2.0 * math.pi)
    phase -= math.floor(phase)
    # An interval starting on a slot's first minute reads back a hair below it.
    return int(phase * slots + 1e-9) % slots


@njit(cache=True)
def add_time_of_day_bias(out, bias, cal_future):
    """``out[h] += bias[h, slot of target h]`` (nothing without daily calendar terms)."""
    if cal_future.shape[1] < 2:
        return
    n = min(out.shape[0], bias.shape[0], cal_future.shape[0])
    for h in range(n):
        out[h] += bias[h, time_of_day_slot(cal_future[h, 0], cal_future[h, 1], bias.shape[1])]


@njit(cache=True)
def direct_features(t, hist, lags, season, levels, X):
    """Features of the direct model at origin ``t`` for each horizon (see models.DirectAR):
    1, recent changes, distance from each smoothed level, and the same span's change one
    and two days earlier plus the distance to yesterday's value at the target time."""
    H, F = X.shape
    L = hist.shape[0]
    nl = levels.shape[0]
    z = hist[t % L]
    s0 = 1 + lags + nl
    for h in range(H):
        X[h, 0] = 1.0
        for k in range(lags):
            X[h, 1 + k] = (hist[(t - k - 1) % L] - z) if t > k else 0.0
        for k in range(nl):
            X[h, 1 + lags + k] = z - levels[k]
        if t >= 2 * season:
            d1 = hist[(t + h + 1 - season) % L]
            d2 = hist[(t + h + 1 - 2 * season) % L]
            X[h, s0] = d1 - hist[(t - season) % L]
            X[h, s0 + 1] = d2 - hist[(t - 2 * season) % L]
            X[h, s0 + 2] = d1 - z
        else:
            X[h, s0] = 0.0
            X[h, s0 + 1] = 0.0
            X[h, s0 + 2] = 0.0


@njit(cache=True)
def mlp_predict(X, w1, b1, w2, b2, out):
    n, F = X.shape
    Hd = b1.shape[0]
    for r in range(n):
        acc = b2
        for j in range(Hd):
            a = b1[j]
            for i in range(F):
                a += X[r, i] * w1[i, j]
            acc += math.tanh(a) * w2[j]
        out[r] = acc


@njit(cache=True)
def mlp_profile_path(z_last, cal_now, cal_future, w1, b1, w2, b2, out):
    """``z_last + f(cal_future[h]) - f(cal_now)`` for the net ``f``: a forecast that moves
    from the last value along the learned profile (models.CalendarMLP)."""
    now = np.empty(1)
    mlp_predict(cal_now.reshape(1, cal_now.shape[0]), w1, b1, w2, b2, now)
    mlp_predict(cal_future, w1, b1, w2, b2, out)
    for h in range(out.shape[0]):
        out[h] += z_last - now[0]


@njit(cache=True)
def mlp_learn(x, y, w1, b1, w2, b2, lr):
    """One SGD step of a one-hidden-layer tanh network on squared error; returns new b2."""
    F = x.shape[0]
    Hd = b1.shape[0]
    h = np.empty(Hd)
    pred = b2
    for j in range(Hd):
        a = b1[j]
        for i in range(F):
            a += x[i] * w1[i, j]
        h[j] = math.tanh(a)
        pred += h[j] * w2[j]
    err = pred - y
    for j in range(Hd):
        g = err * w2[j] * (1.0 - h[j] * h[j])
        w2[j] -= lr * err * h[j]
        for i in range(F):
            w1[i, j] -= lr * g * x[i]
        b1[j] -= lr * g
    return b2 - lr * err
