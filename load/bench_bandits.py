"""Which River bandit should tune the knobs? The learned policy with each bandit the tuner
offers (``tessera.scheduler.tuning.BANDITS``: epsilon-greedy, UCB, Thompson sampling) on
the six runs of the economics benchmark (the same traces and fleets,
``load/bench_economics.py``), cost and SLA misses side by side. The default is the one
that costs least in total.

    python -m load.bench_bandits          # ~5 min on one core
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from load.bench_economics import HERE, trace_runs
from load.machine import machine, pin_to_one_core, save_result

from tessera.pricing.agreements import load_agreements
from tessera.scheduler.tuning import BANDITS
from tessera.simulate.engine import SimConfig, simulate
from tessera.simulate.fleet import load_fleet
from tessera.simulate.trace import load_trace


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    core = pin_to_one_core()
    agreements = load_agreements(HERE / "agreements.json")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, fleet_file, req in trace_runs(Path(tmp), 7.0):
            fleet = load_fleet(fleet_file)
            start, trace = load_trace(req)
            row: dict = {"trace": name, "requests": len(trace)}
            for policy in BANDITS:
                r = simulate(fleet, agreements, trace, start, SimConfig(policy="learned", bandit=policy))
                row[policy] = {"cost_total": format(r.cost_total, "f"), "sla_miss_rate": round(r.sla_miss_rate, 6)}
                print(f"  {name}, {policy}: cost {row[policy]['cost_total']}, misses {r.sla_miss_rate:.4f}", flush=True)
            rows.append(row)
    save_result("bandits", {"benchmark": "bandits", "machine": machine(), "pinned_core": core,
                            "bandits": list(BANDITS), "runs": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
