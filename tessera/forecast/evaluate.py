"""Prequential evaluation: run the engine over one series exactly as it runs live.

At step ``i`` the engine first learns the value of step ``i``, then issues forecasts for
steps ``i+1 .. i+H``; so the forecast for step ``j`` at horizon ``h`` was issued after
learning steps ``0 .. j-h`` and nothing later (the same information the naive baseline
``y[j-h]`` has). Metrics skip the first ``skip`` targets (default: one season, while the
seasonal models warm up) and compare on the same targets:

- MAE per horizon, and against the better of two naive forecasts (last value ``y[j-h]``;
  seasonal naive ``y[j-season]``), averaged over horizons;
- MASE: MAE / in-sample MAE of the one-step naive forecast;
- pinball (quantile) loss averaged over the levels;
- coverage of the outermost band (e.g. 5-95 %);
- CPU microseconds per update (learn + forecast), measured with ``time.process_time``
  after the warm-up, and the state size (the pickled checkpoint).
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from tessera.forecast.engine import ForecastConfig, ForecastInputError, SeriesForecaster


class SeriesFileError(ValueError):
    pass


def parse_time(text: str) -> float:
    """Seconds since the epoch from a number or an ISO-8601 timestamp (naive means UTC)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SeriesFileError(f"time {text!r} is neither epoch seconds nor ISO-8601") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def load_series(path: str | Path, value_col: str, time_col: str | None = None,
                interval_s: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """(timestamps, values) from a CSV file; without ``time_col`` rows are consecutive steps."""
    p = Path(path)
    if not p.is_file():
        raise SeriesFileError(f"{path} does not exist")
    with p.open(newline="") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        for col in (value_col, time_col):
            if col and col not in cols:
                raise SeriesFileError(f"column {col!r} not in {path}; columns are: {', '.join(cols)}")
        ts, ys = [], []
        for n, row in enumerate(reader, start=2):
            try:
                y = float(row[value_col])
            except (TypeError, ValueError):
                raise SeriesFileError(f"{path}:{n}: {value_col}={row[value_col]!r} is not a number") from None
            ys.append(y)
            ts.append(parse_time(row[time_col]) if time_col else (n - 2) * float(interval_s))
    if not ys:
        raise SeriesFileError(f"{path} has no rows")
    t = np.asarray(ts)
    if np.any(np.diff(t) <= 0):
        bad = int(np.flatnonzero(np.diff(t) <= 0)[0]) + 3
        raise SeriesFileError(f"{path}:{bad}: time does not increase; sort the file by {time_col}")
    return t, np.asarray(ys, dtype=np.float64)


@dataclass
class Evaluation:
    config: ForecastConfig
    n: int
    skip: int
    mae: list[float]
    mase: list[float]
    pinball: list[float]
    coverage: list[float]
    naive_last_mae: list[float]
    naive_seasonal_mae: list[float]
    us_per_update: float
    state_bytes: int
    blend_weights: dict[str, list[float]]
    uplifts: dict[str, float]

    @property
    def mae_vs_best_naive(self) -> float:
        best = [min(a, b) for a, b in zip(self.naive_last_mae, self.naive_seasonal_mae)]
        return float(np.mean(self.mae) / np.mean(best))

    @property
    def overall_coverage(self) -> float:
        return float(np.mean(self.coverage))

    def as_dict(self) -> dict:
        c = self.config
        return {
            "n": self.n, "skip": self.skip, "horizon": c.horizon, "quantiles": list(c.quantiles),
            "interval_s": c.interval_s, "season": c.season, "models": list(c.models),
            "per_horizon": [
                {"h": h + 1, "mae": self.mae[h], "mase": self.mase[h], "pinball": self.pinball[h],
                 "coverage": self.coverage[h], "naive_last_mae": self.naive_last_mae[h],
                 "naive_seasonal_mae": self.naive_seasonal_mae[h]}
                for h in range(c.horizon)],
            "mae_mean": float(np.mean(self.mae)),
            "mae_vs_best_naive": self.mae_vs_best_naive,
            "coverage": self.overall_coverage,
            "band": [c.quantiles[0], c.quantiles[-1]],
            "us_per_update": self.us_per_update,
            "state_bytes": self.state_bytes,
            "blend_weights_h1": {k: v[0] for k, v in self.blend_weights.items()},
            "uplifts": self.uplifts,
        }


def prequential(ts: np.ndarray, ys: np.ndarray, config: ForecastConfig, skip: int | None = None,
                emit: Callable[[int, int, dict[str, float]], None] | None = None,
                progress: Callable[[int, int], None] | None = None) -> Evaluation:
    H, K, n = config.horizon, len(config.quantiles), len(ys)
    skip = config.season if skip is None else skip
    if n <= skip + H:
        raise SeriesFileError(f"series has {n} points; need more than skip ({skip}) + horizon ({H})")
    fc = SeriesForecaster(config)
    Q = np.full((n, H, K), np.nan)
    cpu = 0.0
    timed = 0
    warm = min(skip, n // 4)
    for i in range(n):
        t0 = time.process_time()
        try:
            fc.learn(float(ts[i]), float(ys[i]))
        except ForecastInputError as exc:
            raise SeriesFileError(f"row {i}: {exc}") from None
        f = fc.forecast()
        t1 = time.process_time()
        if i >= warm:
            cpu += t1 - t0
            timed += 1
        vals = f.values
        for h in range(H):
            j = i + h + 1
            if j < n:
                Q[j, h] = vals[h]
                if emit is not None:
                    emit(j, h + 1, {format(q, "g"): float(v) for q, v in zip(config.quantiles, vals[h])})
        if progress is not None and (i % 500 == 0 or i == n - 1):
            progress(i + 1, n)
    taus = np.asarray(config.quantiles)
    median_k = int(np.argmin(np.abs(taus - 0.5)))
    scale = float(np.mean(np.abs(np.diff(ys)))) or 1.0
    S = config.season
    mae, mase, pin, cov, nl, ns = [], [], [], [], [], []
    for h in range(H):
        idx = np.arange(max(skip, h + 1, S), n)
        y = ys[idx]
        q = Q[idx, h]
        err = np.abs(y - q[:, median_k])
        mae.append(float(err.mean()))
        mase.append(float(err.mean() / scale))
        diff = y[:, None] - q
        pin.append(float(np.mean(np.maximum(taus * diff, (taus - 1) * diff))))
        cov.append(float(np.mean((y >= q[:, 0]) & (y <= q[:, -1]))))
        nl.append(float(np.mean(np.abs(y - ys[idx - h - 1]))))
        ns.append(float(np.mean(np.abs(y - ys[idx - S]))))
    return Evaluation(config, n, skip, mae, mase, pin, cov, nl, ns,
                      us_per_update=cpu / max(timed, 1) * 1e6, state_bytes=len(fc.to_bytes()),
                      blend_weights=fc.blend_weights(), uplifts=fc.uplifts())


def format_report(ev: Evaluation, name: str = "") -> str:
    c = ev.config
    lo, hi = c.quantiles[0], c.quantiles[-1]
    lines = [f"{name or 'series'}: {ev.n} points, horizon {c.horizon}, season {c.season}, "
             f"scored from step {ev.skip}",
             f"{'h':>3} {'MAE':>11} {'MASE':>7} {'pinball':>10} {'cover':>6} {'naive last':>11} {'seasonal':>11}"]
    for h in range(c.horizon):
        lines.append(f"{h + 1:>3} {ev.mae[h]:>11.5g} {ev.mase[h]:>7.3f} {ev.pinball[h]:>10.4g} "
                     f"{ev.coverage[h]:>6.3f} {ev.naive_last_mae[h]:>11.5g} {ev.naive_seasonal_mae[h]:>11.5g}")
    lines += [
        f"MAE / best naive (mean over horizons): {ev.mae_vs_best_naive:.3f}",
        f"{format(lo, 'g')}-{format(hi, 'g')} band coverage: {ev.overall_coverage:.3f} "
        f"(nominal {hi - lo:.2f})",
        f"CPU per update: {ev.us_per_update:.0f} us   state: {ev.state_bytes / 1024:.1f} KiB   "
        f"series per core at {c.interval_s}s: {int(c.interval_s / max(ev.us_per_update, 1e-9) * 1e6):,}",
    ]
    return "\n".join(lines)


def parse_quantiles(text: str) -> tuple[float, ...]:
    try:
        qs = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--quantiles {text!r}: give levels like 0.05,0.5,0.95") from None
    if not qs or any(not 0 < q < 1 for q in qs):
        raise ValueError(f"--quantiles {text!r}: levels must lie strictly between 0 and 1")
    if 0.5 not in qs:
        qs = qs + (0.5,)   # the median is the point forecast MAE is measured on
    return tuple(sorted(set(qs)))

