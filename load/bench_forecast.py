"""Benchmark: the Predictive Demand Engine on the real cluster traces in data/.

For each series (Google 2019 cell and Alibaba 2018 cluster means, 5-minute steps) it runs
the engine prequentially (``tessera.forecast.evaluate.prequential``: forecast, then learn)
with every model blended and with each model alone, next to:

- the naive forecasts: last value ``y[t-h]`` and seasonal naive ``y[t-288]``;
- statsforecast AutoETS and AutoARIMA refitted once per simulated day on the trailing three
  days and rolled forward at every step with the fitted parameters (``forward``).
  AutoETS is asked for a daily season (m=288); AutoARIMA is non-seasonal, because a
  seasonal ARIMA with m=288 does not fit in reasonable time here.

Reports per series and model: MAE averaged over horizons 1..H (and as a ratio to the
better naive forecast), 5-95 % coverage, CPU per update and state size; the blend's CPU
per update again as the best of ``--cost-repeats`` runs; how many series one core keeps up
with at a 5-minute interval (at that best figure), and a PNG of actual demand against the
forecast band. Run:  python -m load.bench_forecast   (needs `pip install -e .[bench]`).
"""

from __future__ import annotations

import os

# One BLAS thread, set before NumPy loads. Its helper thread starts before the benchmark
# pins itself (so it runs on the other core) and its CPU counts in this process's CPU time,
# which is the per-update cost figure; the engine's matrices are far too small to gain.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time
import warnings
from pathlib import Path

import numpy as np
from load.machine import machine, pin_to_one_core

from tessera.forecast import MODEL_NAMES
from tessera.forecast.engine import ForecastConfig
from tessera.forecast.evaluate import load_series, prequential

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
TRACES = ROOT / "data" / "datacenter_traces_datasets"
SERIES = [
    ("google2019/avg_cpu", TRACES / "google2019_instance_usage_grouped_300_seconds_month.csv", "avg_cpu"),
    ("google2019/avg_mem", TRACES / "google2019_instance_usage_grouped_300_seconds_month.csv", "avg_mem"),
    ("alibaba2018/cpu_util_percent", TRACES / "alibaba2018_machine_usage_days_1_to_8_grouped_300_seconds.csv",
     "cpu_util_percent"),
    ("alibaba2018/mem_util_percent", TRACES / "alibaba2018_machine_usage_days_1_to_8_grouped_300_seconds.csv",
     "mem_util_percent"),
]
H, SEASON = 12, 288


def statsforecast_mae(ys: np.ndarray, which: str, skip: int, window: int = 3 * SEASON) -> tuple[float, float]:
    """Mean over horizons of the MAE of a daily-refitted statsforecast model; and its fit time."""
    from statsforecast.models import AutoARIMA, AutoETS

    n = len(ys)
    preds = np.full((n, H), np.nan)
    model = None
    fit_s = 0.0
    for i in range(skip - 1, n - 1):
        if model is None or (i + 1) % SEASON == 0:
            make = {"AutoETS": lambda: AutoETS(season_length=SEASON), "AutoARIMA": lambda: AutoARIMA()}[which]
            model = make()
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(ys[max(0, i + 1 - window):i + 1])
            fit_s += time.perf_counter() - t0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f = model.forward(y=ys[max(0, i + 1 - window):i + 1], h=H)["mean"]
        for h in range(H):
            if i + h + 1 < n:
                preds[i + h + 1, h] = f[h]
    maes = []
    for h in range(H):
        idx = np.arange(max(skip, h + 1), n)
        maes.append(float(np.nanmean(np.abs(ys[idx] - preds[idx, h]))))
    return float(np.mean(maes)), fit_s


def plot(name: str, ts: np.ndarray, ys: np.ndarray, config: ForecastConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(ys)
    q = np.full((n, 3), np.nan)

    def keep(i: int, h: int, qs: dict[str, float]) -> None:
        if h == 1:
            q[i] = [qs["0.05"], qs["0.5"], qs["0.95"]]

    prequential(ts, ys, config, emit=keep)
    last = slice(n - 2 * SEASON, n)
    x = np.arange(n)[last] / 12.0
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.fill_between(x, q[last, 0], q[last, 2], alpha=0.3, label="5-95 % band (h=1)")
    ax.plot(x, q[last, 1], lw=1, label="median forecast (h=1)")
    ax.plot(x, ys[last], lw=0.8, color="k", label="actual")
    ax.set_xlabel("hour of the series")
    ax.set_title(f"{name}: last two days, one-step forecasts")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-statsforecast", action="store_true", help="skip the statsforecast baselines")
    ap.add_argument("--quick", action="store_true", help="first series only")
    ap.add_argument("--cost-repeats", type=int, default=5, help="extra timed runs of the blend and 'last' (default 5)")
    args = ap.parse_args(argv)
    core = pin_to_one_core()
    RESULTS.mkdir(exist_ok=True)
    rows = []
    series = SERIES[:1] if args.quick else SERIES
    for name, path, col in series:
        ts, ys = load_series(path, col)
        print(f"{name}: {len(ys)} points", file=sys.stderr)
        row: dict = {"series": name, "n": len(ys), "models": {}}
        for models in [MODEL_NAMES] + [(m,) for m in MODEL_NAMES]:
            config = ForecastConfig(horizon=H, season=SEASON, models=models)
            ev = prequential(ts, ys, config)
            label = "blend (all)" if len(models) > 1 else models[0]
            row["models"][label] = {
                "mae": float(np.mean(ev.mae)), "mae_vs_best_naive": ev.mae_vs_best_naive,
                "coverage": ev.overall_coverage, "us_per_update": ev.us_per_update,
                "state_bytes": ev.state_bytes}
            if len(models) > 1:
                row["naive_last_mae"] = float(np.mean(ev.naive_last_mae))
                row["naive_seasonal_mae"] = float(np.mean(ev.naive_seasonal_mae))
                row["per_horizon"] = ev.as_dict()["per_horizon"]
            print(f"  {label:<16} MAE/naive {ev.mae_vs_best_naive:.3f} cover {ev.overall_coverage:.3f} "
                  f"{ev.us_per_update:.0f} us {ev.state_bytes / 1024:.1f} KiB", file=sys.stderr)
        # CPU per update again, repeated: one run's figure swings by a third on this machine
        # (other tenants, clock drift), the least of several is the code's own cost, as
        # timeit reports it. The 'last' model times the engine's bookkeeping alone, a gauge
        # of how fast the machine ran.
        for label, models in (("blend (all)", MODEL_NAMES), ("last", ("last",))):
            runs = [prequential(ts, ys, ForecastConfig(horizon=H, season=SEASON, models=models)).us_per_update
                    for _ in range(args.cost_repeats)]
            row["models"][label]["us_per_update_runs"] = runs
            row["models"][label]["us_per_update_best"] = min(runs)
        print(f"  cost, best of {args.cost_repeats}: blend {row['models']['blend (all)']['us_per_update_best']:.0f} us,"
              f" last {row['models']['last']['us_per_update_best']:.0f} us", file=sys.stderr)
        if not args.no_statsforecast:
            best = min(row["naive_last_mae"], row["naive_seasonal_mae"])
            for which in ("AutoETS", "AutoARIMA"):
                mae, fit_s = statsforecast_mae(ys, which, skip=SEASON)
                row["models"][f"statsforecast {which} (daily refit)"] = {
                    "mae": mae, "mae_vs_best_naive": mae / best, "fit_seconds_total": fit_s}
                print(f"  {which:<16} MAE/naive {mae / best:.3f} (fits {fit_s:.0f} s)", file=sys.stderr)
        png = RESULTS / f"forecast_{name.replace('/', '_')}.png"
        plot(name, ts, ys, ForecastConfig(horizon=H, season=SEASON), png)
        row["plot"] = str(png.relative_to(ROOT))
        rows.append(row)
    blend_us = [r["models"]["blend (all)"]["us_per_update"] for r in rows]
    blend_best = [r["models"]["blend (all)"]["us_per_update_best"] for r in rows]
    out = {"machine": machine(), "pinned_to_core": core, "horizon": H, "season": SEASON, "interval_s": 300, "series": rows,
           "blend_us_per_update_median": float(np.median(blend_us)),
           "blend_us_per_update_best_median": float(np.median(blend_best)),
           "series_per_core_at_5min": int(300 / (np.median(blend_best) * 1e-6))}
    (RESULTS / "forecast.json").write_text(json.dumps(out, indent=2))
    print(json.dumps({k: out[k] for k in ("blend_us_per_update_median", "blend_us_per_update_best_median",
                                          "series_per_core_at_5min")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
