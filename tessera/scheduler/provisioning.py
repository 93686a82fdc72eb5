"""Provisioning hints: capacity to bring into service before forecast demand arrives.

Tier series forecast the vCPU that *arrives* per interval. For each tier the protective
level is the newsvendor critical ratio (shortage cost vs idle cost, as for reservations);
the vCPU arriving up to horizon ``h`` is the sum over tiers and steps ``1..h`` of that
level's quantile. Summing quantiles over-states the quantile of the sum, which errs on the
safe side for a hint. Releases during the horizon are ignored for the same reason.

When that exceeds the free vCPU of resources already in service (open, healthy, not
blocked by a partner's hard limit), the shortfall is covered by the cheapest closed
resources per vCPU; the hint names them and what they cost per hour. A hint for the
same interval is repeated only when its shortfall moved by more than ``REPEAT_CHANGE``,
so a stream of forecasts does not become a stream of identical hints.

>>> from datetime import datetime, timezone
>>> from tessera.schemas import Forecast, HorizonForecast
>>> t = datetime(2026, 3, 1, tzinfo=timezone.utc)
>>> f = Forecast(series="pool=default/tier=gold/dim=vcpu", interval_seconds=300, event_time=t,
...              horizons=[HorizonForecast(step=1, interval_start=t, quantiles={"0.5": 8.0, "0.95": 12.0})])
>>> offers = [Offer("do/1", "do", 8.0, Decimal("0.10"), False), Offer("own/1", "own", 4.0, Decimal("0.01"), True)]
>>> h = plan_hint({"gold": f}, {"gold": 0.95}, offers, pool="default")
>>> h.shortfall_vcpu, [s.resource_id for s in h.suggested]
(8.0, ['do/1'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Iterable, Mapping

from tessera.schemas import Forecast, ProvisioningHint, SuggestedResource

from .reservation import quantile_at

#: Relative change in shortfall that makes a hint for the same interval worth repeating.
REPEAT_CHANGE = 0.10


@dataclass(frozen=True)
class Offer:
    """A resource as the planner sees it: its vCPU (free if in service, whole if closed)."""

    resource_id: str
    provider: str
    vcpu: float
    price_per_hour: Decimal
    in_service: bool


def forecast_arrivals(forecasts: Mapping[str, Forecast], levels: Mapping[str, float]) -> list[tuple[datetime, float]]:
    """vCPU forecast to arrive, summed over the protected tiers at their quantile levels and
    accumulated over the intervals ahead: (interval start, vCPU arrived by its end)."""
    tiers = [t for t in sorted(forecasts) if levels.get(t, 0.0) > 0.0]
    if not tiers:
        return []
    out, arriving = [], 0.0
    for k in range(min(len(forecasts[t].horizons) for t in tiers)):
        arriving += sum(quantile_at(forecasts[t].horizons[k].quantiles, levels[t]) for t in tiers)
        out.append((forecasts[tiers[0]].horizons[k].interval_start, arriving))
    return out


def plan_hint(forecasts: Mapping[str, Forecast], levels: Mapping[str, float], offers: Iterable[Offer],
              pool: str) -> ProvisioningHint | None:
    """The hint for the latest forecasts per tier, or None when capacity in service suffices."""
    arrivals = forecast_arrivals(forecasts, levels)
    if not arrivals:
        return None
    offers = list(offers)
    free = sum(o.vcpu for o in offers if o.in_service)
    first_short, peak = None, (0.0, None, 0.0)
    for start, arriving in arrivals:
        short = arriving - free
        if short > 1e-9 and first_short is None:
            first_short = start
        if short > peak[0]:
            peak = (short, start, arriving)
    if first_short is None:
        return None
    shortfall, peak_at, arrived = peak
    suggested, covered = [], 0.0
    closed = sorted((o for o in offers if not o.in_service and o.vcpu > 0),
                    key=lambda o: (o.price_per_hour / Decimal(repr(o.vcpu)), o.resource_id))
    for o in closed:
        if covered >= shortfall:
            break
        suggested.append(SuggestedResource(resource_id=o.resource_id, provider=o.provider, vcpu=o.vcpu,
                                           price_per_hour=o.price_per_hour))
        covered += o.vcpu
    cost = sum((s.price_per_hour for s in suggested), Decimal(0))
    shortfall = round(shortfall, 3)
    return ProvisioningHint(
        event_id=f"hint:{pool}:{first_short:%Y%m%dT%H%M%S}:{shortfall}", pool=pool, needed_by=first_short,
        peak_at=peak_at, arriving_vcpu=round(arrived, 3), free_in_service_vcpu=round(free, 3),
        shortfall_vcpu=shortfall, levels={t: levels[t] for t in sorted(forecasts) if levels.get(t, 0.0) > 0.0},
        suggested=suggested,
        suggested_cost_per_hour=cost)


@dataclass
class HintGate:
    """Lets a hint through when its interval is new or its shortfall moved enough."""

    last: dict[tuple[str, str], float] = field(default_factory=dict)

    def admit(self, hint: ProvisioningHint | None) -> bool:
        if hint is None:
            return False
        key = (hint.pool, hint.needed_by.isoformat())
        before = self.last.get(key)
        if before is not None and abs(hint.shortfall_vcpu - before) <= REPEAT_CHANGE * before:
            return False
        self.last[key] = hint.shortfall_vcpu
        if len(self.last) > 4096:                       # old intervals are never asked again
            for k in sorted(self.last, key=lambda k: k[1])[:2048]:
                del self.last[k]
        return True
