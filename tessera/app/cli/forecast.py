"""``tessera forecast evaluate``: the forecast engine run prequentially over one CSV series."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

# River and the compiled kernels load when the command runs, not when the CLI lists its
# commands: every other command would pay their second of imports.
from tessera.forecast import MODEL_NAMES, check_models


def add_parser(sub: Any, fmt: type) -> None:
    fp = sub.add_parser("forecast", formatter_class=fmt, help="evaluate the demand forecaster on a CSV series",
                        description="Tools for the Predictive Demand Engine.")
    fsub = fp.add_subparsers(dest="forecast_command", metavar="ACTION", required=True)
    sp = fsub.add_parser(
        "evaluate", formatter_class=fmt, help="run the engine prequentially over one series and score it",
        description="""\
Run the same online engine the forecast agent runs over one series, prequentially: after
learning step i it issues forecasts for steps i+1..i+H, before it has seen them. Reports
per-horizon MAE, MASE, pinball loss and band coverage next to the naive forecasts
(last value, seasonal naive), plus CPU microseconds per update and the state size.""",
        epilog="""\
examples:
  tessera forecast evaluate --csv data/datacenter_traces_datasets/google2019_instance_usage_grouped_300_seconds_month.csv \\
      --value-col avg_cpu --horizon 12 --quantiles 0.05,0.5,0.95
  tessera forecast evaluate --csv s.csv --value-col y --time-col ts --emit f.jsonl --json""")
    sp.add_argument("--csv", required=True, metavar="FILE", help="CSV file with a header row")
    sp.add_argument("--value-col", required=True, metavar="COL", help="column holding the demand values")
    sp.add_argument("--time-col", metavar="COL",
                    help="column with epoch seconds or ISO-8601 times (default: rows are consecutive steps)")
    sp.add_argument("--interval-s", type=int, default=300, help="seconds per step (default 300)")
    sp.add_argument("--season", type=int, default=288, help="steps per season, e.g. a day (default 288)")
    sp.add_argument("--horizon", type=int, required=True, metavar="H", help="forecast steps ahead, 1..H")
    sp.add_argument("--quantiles", default="0.05,0.5,0.95", help="levels to forecast (default 0.05,0.5,0.95)")
    sp.add_argument("--models", default=",".join(MODEL_NAMES),
                    help=f"models to blend, comma-separated (default: all: {','.join(MODEL_NAMES)})")
    sp.add_argument("--skip", type=int, metavar="N", help="targets to leave out of the scores (default: one season)")
    sp.add_argument("--emit", metavar="OUT.jsonl",
                    help='write every issued forecast: {"i": target step, "h": horizon, "q": {level: value}}')
    sp.add_argument("--json", action="store_true", help="print the report as JSON")
    sp.set_defaults(fn=run_evaluate)


def run_evaluate(args: argparse.Namespace, _settings: object = None) -> int:
    from tessera.forecast.engine import ForecastConfig
    from tessera.forecast.evaluate import SeriesFileError, format_report, load_series, parse_quantiles, prequential

    try:
        quantiles = parse_quantiles(args.quantiles)
        config = ForecastConfig(horizon=args.horizon, quantiles=quantiles, interval_s=args.interval_s,
                                season=args.season, models=tuple(m.strip() for m in args.models.split(",") if m))
        check_models(config.models)   # before loading data
        ts, ys = load_series(args.csv, args.value_col, args.time_col, args.interval_s)
    except (ValueError, SeriesFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = open(args.emit, "wb") if args.emit else None

    def write_line(i: int, h: int, q: dict[str, float]) -> None:
        out.write(orjson.dumps({"i": i, "h": h, "q": q}) + b"\n")

    emit = write_line if out is not None else None

    tty = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if tty:
            print(f"\r  {done:,}/{total:,} steps", end="" if done < total else "\n", file=sys.stderr, flush=True)

    try:
        ev = prequential(ts, ys, config, skip=args.skip, emit=emit, progress=progress)
    except SeriesFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if out is not None:
            out.close()
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(ev.as_dict(), option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(format_report(ev, args.csv))
    return 0
