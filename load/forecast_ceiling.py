"""How much better than the last value can these series be forecast at all?

Issue 4 asks for a median MAE (over horizons 1..12) of at most 0.85 x the better naive
forecast. The online engine gets there on the Alibaba series but not on the Google ones.
This script asks whether that is the engine or the series: it fits models *offline*, with
hindsight the online engine never has, on the first half of each series and scores them on
the second half, next to the online engine scored on that same second half.

- ``offline linear``: the direct model's own features (recent changes, distance from
  smoothed levels, the same span one and two days earlier) plus one indicator per hour of
  the target's day, one Huber regression per horizon (iteratively reweighted least
  squares). This is the ceiling of the engine's model family.
- ``offline gradient boosting``: LightGBM with an L1 objective per horizon on 36 features
  (24 lags, seasonal lags around the target's time yesterday, 6/24/288-interval means,
  the time of day and the level): a flexible nonlinear learner that fits interactions
  (time of day x level) no linear model expresses.
- ``... + the trace's other columns``: the same LightGBM plus, for every other column of
  the series' file (memory next to CPU, assigned memory, cycles per instruction, network,
  disk), its standardised level and its changes over 1..24 intervals: does a co-recorded
  signal lead this one?
- ``... + weekly lags``: the same LightGBM plus the values around the target's time a week
  earlier (only where the series spans three weeks or more; it then trains from day 7).
- ``offline linear, coefficients per 4 hours``: the linear model fitted separately for
  each 4-hour part of the target's day (time of day x recent changes).
- ``online engine``: the engine's blend, prequential, scored on the second half only.

Every offline model is scored on the same targets (the second half's).

Every figure is MAE averaged over horizons 1..12 divided by the last value's MAE on the
same targets (on these series the last value is the better naive forecast everywhere).
Run:  python -m load.forecast_ceiling   (needs `pip install -e .[bench]`: LightGBM).
Writes load/results/forecast_ceiling.json.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
from load.bench_forecast import SEASON, SERIES, H
from load.machine import machine

from tessera.forecast import kernels
from tessera.forecast.engine import ForecastConfig
from tessera.forecast.evaluate import load_series, prequential
from tessera.forecast.models import DirectAR

RESULTS = Path(__file__).resolve().parent / "results"
P = SEASON
WEEK = 7 * P
#: Parts of the day with their own coefficients in the per-time-of-day linear model.
DAY_PARTS = 6
LINEAR, GBM = "offline linear (engine features + hour)", "offline gradient boosting"
GBM_COV, GBM_WEEK = GBM + " + the trace's other columns", GBM + " + weekly lags"
LINEAR_PARTS = "offline linear, coefficients per 4 hours"


def ewm(y: np.ndarray, halflife: float) -> np.ndarray:
    rate = 1.0 - 0.5 ** (1.0 / halflife)
    out = np.empty_like(y)
    out[0] = y[0]
    for i in range(1, len(y)):
        out[i] = out[i - 1] + rate * (y[i] - out[i - 1])
    return out


def direct_model_features(y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """(origins, H, F): the direct model's own features at each origin, from the engine's
    kernel (the whole series as its history; levels smoothed as DirectAR smooths them)."""
    halflives = [h or float(P) for h in DirectAR.HALFLIVES]
    levels = np.column_stack([ewm(y, hl) for hl in halflives])
    out = np.empty((len(idx), H, 1 + DirectAR.LAGS + len(halflives) + 3))
    for i, t in enumerate(idx):
        kernels.direct_features(int(t), y, DirectAR.LAGS, P, levels[t], out[i])
    return out


def linear_features(direct: np.ndarray, idx: np.ndarray, h: int) -> np.ndarray:
    """Horizon ``h``'s direct-model features plus indicators of the target's hour."""
    hour = ((idx + h) % P) * 24 // P
    return np.column_stack([direct[:len(idx), h - 1]] + [(hour == k).astype(float) for k in range(1, 24)])


def boosting_features(y: np.ndarray, idx: np.ndarray, h: int) -> np.ndarray:
    z = y[idx]
    cols = [y[idx - k] - z for k in range(1, 25)]
    cols += [y[idx + h - P + j] - z for j in (-2, -1, 0, 1, 2)] + [y[idx - P] - z]
    csum = np.concatenate([[0.0], np.cumsum(y)])
    for w in (6, 24, 288):
        cols.append((csum[idx + 1] - csum[idx + 1 - w]) / w - z)
    tod = 2 * np.pi * ((idx + h) % P) / P
    cols += [np.sin(tod), np.cos(tod), z]
    return np.column_stack(cols)


def other_columns(path: Path, col: str, mid: int) -> list[np.ndarray]:
    """The file's other numeric columns, standardised on the training half."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        names = [c for c in reader.fieldnames or [] if c != col]
        rows = [[float(r[c]) for c in names] for r in reader]
    data = np.asarray(rows)
    return [(x - x[:mid].mean()) / (x[:mid].std() or 1.0) for x in data.T]


def covariate_features(others: list[np.ndarray], idx: np.ndarray) -> list[np.ndarray]:
    return [c for x in others for c in [x[idx] - x[idx - k] for k in (1, 2, 3, 6, 12, 24)] + [x[idx]]]


def weekly_features(y: np.ndarray, idx: np.ndarray, h: int) -> list[np.ndarray]:
    z = y[idx]
    return [y[idx + h - WEEK + j] - z for j in (-2, -1, 0, 1, 2)] + [y[idx - WEEK] - z]


def huber_fit(X: np.ndarray, y: np.ndarray, k: float = 1.345, iters: int = 30) -> np.ndarray:
    """Huber regression by iteratively reweighted least squares (scale: MAD of residuals)."""
    sd = X.std(axis=0)
    sd[sd == 0] = 1.0
    Xs = X / sd
    w = np.ones(len(y))
    beta = np.zeros(X.shape[1])
    for _ in range(iters):
        sw = np.sqrt(w)
        A = Xs * sw[:, None]
        beta = np.linalg.solve(A.T @ A + 1e-6 * np.eye(X.shape[1]), A.T @ (y * sw))
        r = y - Xs @ beta
        s = 1.4826 * np.median(np.abs(r - np.median(r))) + 1e-12
        a = np.abs(r) / s
        w = np.where(a <= k, 1.0, k / np.maximum(a, 1e-12))
    return beta / sd


def ceiling(name: str, path: Path, col: str, ts: np.ndarray, ys: np.ndarray) -> dict:
    import lightgbm as lgb

    n = len(ys)
    start = 2 * P + 30
    mid = start + (n - start) // 2
    weekly = mid - (WEEK + 30) >= 7 * P   # at least a week to train on after the weekly lags exist
    direct = direct_model_features(ys, np.arange(start, n - 1))
    others = other_columns(path, col, mid)
    mae: dict[str, list[float]] = {LINEAR: [], LINEAR_PARTS: [], GBM: [], GBM_COV: []}
    if weekly:
        mae[GBM_WEEK] = []
    naive = []
    params = {"objective": "l1", "learning_rate": 0.03, "num_leaves": 15, "min_data_in_leaf": 40,
              "bagging_fraction": 0.8, "bagging_freq": 1, "feature_fraction": 0.8, "seed": 7,
              "num_threads": 1, "verbose": -1}

    def gbm_mae(X: np.ndarray, train: np.ndarray, test: np.ndarray, target: np.ndarray) -> float:
        gbm = lgb.train(params, lgb.Dataset(X[train], target[train]), num_boost_round=300)
        return float(np.abs(gbm.predict(X[test]) - target[test]).mean())

    for h in range(1, H + 1):
        idx = np.arange(start, n - h)
        target = ys[idx + h] - ys[idx]
        train, test = idx < mid, idx >= mid
        X = linear_features(direct, idx, h)
        beta = huber_fit(X[train], target[train])
        mae[LINEAR].append(np.abs(X[test] @ beta - target[test]).mean())
        part = ((idx + h) % P) * DAY_PARTS // P
        pred = np.empty(len(idx))
        for g in range(DAY_PARTS):
            rows = part == g
            pred[rows] = X[rows] @ huber_fit(X[train & rows], target[train & rows])
        mae[LINEAR_PARTS].append(np.abs(pred[test] - target[test]).mean())
        Xb = boosting_features(ys, idx, h)
        mae[GBM].append(gbm_mae(Xb, train, test, target))
        mae[GBM_COV].append(gbm_mae(np.column_stack([Xb] + covariate_features(others, idx)), train, test, target))
        if weekly:
            late = idx >= WEEK + 30
            Xw = np.column_stack([Xb[late]] + weekly_features(ys, idx[late], h))
            mae[GBM_WEEK].append(gbm_mae(Xw, train[late], test[late], target[late]))
        naive.append(np.abs(target[test]).mean())
    # The online engine, forecasting and learning over the whole series, scored on the
    # second half's targets only.
    median = np.full((n, H), np.nan)

    def keep(i: int, h: int, q: dict[str, float]) -> None:
        median[i, h - 1] = q["0.5"]

    ev = prequential(ts, ys, ForecastConfig(horizon=H, season=SEASON), emit=keep)
    online = [np.abs(median[np.arange(mid + h, n), h - 1] - ys[mid + h:]).mean() for h in range(1, H + 1)]
    naive_online = [np.abs(ys[mid:n - h] - ys[mid + h:]).mean() for h in range(1, H + 1)]
    row = {"series": name, "n": n, "train_until": int(mid),
           "online engine, whole series": ev.mae_vs_best_naive,
           "online engine, second half": float(np.mean(online) / np.mean(naive_online))}
    for k, v in mae.items():
        row[k] = float(np.mean(v) / np.mean(naive))
    return row


def main(argv: list[str] | None = None) -> int:
    rows = []
    for name, path, col in SERIES:
        ts, ys = load_series(path, col)
        row = ceiling(name, Path(path), col, ts, ys)
        rows.append(row)
        print("  ".join(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}" for k, v in row.items()),
              file=sys.stderr)
    RESULTS.mkdir(exist_ok=True)
    out = {"machine": machine(), "horizon": H, "season": SEASON,
           "metric": "MAE over horizons 1..12 / last value's MAE, second half of each series", "series": rows}
    (RESULTS / "forecast_ceiling.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
