"""Predictive reservation: hold back headroom for the higher tiers' forecast demand.

Newsvendor: for a tier whose shortage costs ``cu`` per unit-hour and whose idle capacity
costs ``co`` per unit-hour, the capacity to keep available is the forecast quantile at the
critical ratio ``cu / (cu + co)``. The headroom reserved for a tier is that quantile of
its demand over the next horizons, less what it already uses. Lower tiers are placed on
what is left. Without forecasts nothing is reserved (the scheduler is purely reactive).

>>> critical_ratio(Decimal("1.0"), Decimal("0.03"))
0.9709
>>> quantile_at({"0.05": 10.0, "0.5": 20.0, "0.95": 40.0}, 0.725)
30.0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Mapping

from tessera.schemas import TIERS, Forecast

#: Shortage cost per vCPU-hour by tier (what running short costs: SLA credits, lost work).
DEFAULT_SHORTAGE_COST = {"platinum": Decimal("1.00"), "gold": Decimal("0.40"), "silver": Decimal("0.05"),
                         "bronze": Decimal("0")}


def critical_ratio(shortage_cost: Decimal, idle_cost: Decimal) -> float:
    if shortage_cost <= 0:
        return 0.0
    return round(float(shortage_cost / (shortage_cost + idle_cost)), 4)


def implied_idle_cost(shortage_cost: Decimal, level: float) -> Decimal:
    """The idle cost at which ``level`` is the newsvendor's critical ratio for a tier whose
    shortage costs ``shortage_cost``: ``cu (1 - q) / q``. A tuned quantile for the most
    protected tier thereby sets every other tier's (``tier_level``)."""
    q = Decimal(repr(min(max(level, 1e-4), 1 - 1e-4)))
    return shortage_cost * (1 - q) / q


def tier_level(shortage_cost: Mapping[str, Decimal], idle_cost: Decimal, tier: str,
               top_level: float | None = None) -> float:
    """``tier``'s protected quantile: its critical ratio at ``idle_cost`` or, given
    ``top_level`` (a tuned quantile for the tier whose shortage costs most), at the idle cost
    that level implies. One knob then sets a quantile per tier, each where the newsvendor
    puts it: with the defaults, platinum at 0.9 puts gold at 0.78 and silver at 0.31.

    >>> costs = {"platinum": Decimal("1"), "gold": Decimal("0.4"), "bronze": Decimal("0")}
    >>> [tier_level(costs, Decimal("0.03"), t, 0.9) for t in ("platinum", "gold", "bronze")]
    [0.9, 0.7826, 0.0]
    """
    if top_level is not None:
        idle_cost = implied_idle_cost(max(shortage_cost.values(), default=Decimal(0)), top_level)
    return critical_ratio(shortage_cost.get(tier, Decimal(0)), idle_cost)


def quantile_at(quantiles: Mapping[str, float], level: float) -> float:
    """Linear interpolation between forecast quantile levels; clamped outside their range."""
    pts = sorted((float(k), v) for k, v in quantiles.items())
    if not pts or level <= 0:
        return 0.0
    if level <= pts[0][0]:
        return pts[0][1]
    for (l0, v0), (l1, v1) in zip(pts, pts[1:]):
        if level <= l1:
            return v0 + (v1 - v0) * (level - l0) / (l1 - l0)
    return pts[-1][1]


def parse_series(series: str) -> dict[str, str]:
    """``pool=default/tier=gold/dim=vcpu`` -> {"pool": "default", "tier": "gold", "dim": "vcpu"}."""
    return dict(part.split("=", 1) for part in series.split("/") if "=" in part)


@dataclass
class Reservations:
    idle_cost_per_vcpu_hour: Decimal = Decimal("0.03")
    shortage_cost: Mapping[str, Decimal] = field(default_factory=lambda: dict(DEFAULT_SHORTAGE_COST))
    horizons: int = 3
    #: A tuned quantile (tessera.scheduler.tuning) for the tier whose shortage costs most;
    #: the other protected tiers' levels follow by the newsvendor (``tier_level``). None:
    #: every tier at its critical ratio.
    level_override: float | None = None
    _forecasts: dict[str, Forecast] = field(default_factory=dict)  # tier -> latest vcpu forecast

    def observe(self, forecast: Forecast) -> None:
        labels = parse_series(forecast.series)
        if "tier" not in labels:
            return
        dim = labels.get("dim", "vcpu")
        if dim == "vcpu":
            self._forecasts[labels["tier"]] = forecast
        elif dim == "gpu":
            self._gpus[labels["tier"]] = forecast

    @property
    def forecasts(self) -> dict[str, Forecast]:
        """The latest vCPU forecast per tier."""
        return dict(self._forecasts)

    @property
    def gpu_forecasts(self) -> dict[str, Forecast]:
        """The latest GPU forecast per tier (the migration planner keeps GPU capacity the
        forecast needs; headroom and hints are in vCPU)."""
        return dict(self._gpus)

    @property
    def _gpus(self) -> dict[str, Forecast]:
        # Kept beside the vCPU forecasts without changing the checkpointed layout: a state
        # saved before GPU forecasts were kept has none.
        return self.__dict__.setdefault("_gpu_forecasts", {})

    def level(self, tier: str) -> float:
        """The quantile level protected for ``tier`` (0 = not protected: such a tier waits)."""
        return tier_level(self.shortage_cost, self.idle_cost_per_vcpu_hour, tier, self.level_override)

    def levels(self) -> dict[str, float]:
        """The protected level of every tier with a forecast."""
        return {t: self.level(t) for t in self._forecasts}

    def headroom(self, tier: str, in_use: float, dim: str = "vcpu") -> float:
        """vCPU (or GPUs, ``dim="gpu"``) to keep free for ``tier`` beyond what it already uses."""
        f = (self._forecasts if dim == "vcpu" else self._gpus).get(tier)
        if f is None:
            return 0.0
        level = self.level(tier)
        if level <= 0:
            return 0.0
        peak = max(quantile_at(h.quantiles, level) for h in f.horizons[: self.horizons])
        return max(peak - in_use, 0.0)

    def holds_any(self, in_use: Mapping[str, float]) -> bool:
        """Whether any tier has headroom held now (none without a forecast: most batches ask)."""
        return bool(self._forecasts) and any(self.headroom(t, in_use.get(t, 0.0)) for t in TIERS)

    def held_free(self, vcpu_in_use: Mapping[str, float], gpu_in_use: Mapping[str, float]
                  ) -> tuple[float, float | None]:
        """The vCPU and GPUs the scheduler keeps free ahead of forecast demand, over every
        tier: what a consolidation must leave free. GPUs are None when a protected tier's GPU
        demand is not forecast (a reader then keeps GPU capacity rather than guess)."""
        protected = [t for t in self._forecasts if self.level(t) > 0]
        vcpu = sum(self.headroom(t, vcpu_in_use.get(t, 0.0)) for t in protected)
        if any(t not in self._gpus for t in protected):
            return vcpu, None
        return vcpu, sum(self.headroom(t, gpu_in_use.get(t, 0.0), dim="gpu") for t in protected)

    def reserved_above(self, tier_rank: int, in_use_by_tier: Mapping[str, float]) -> float:
        """Total headroom held for tiers strictly above ``tier_rank`` (0 = platinum)."""
        tiers = TIERS
        return sum(self.headroom(t, in_use_by_tier.get(t, 0.0)) for t in tiers[:tier_rank])
