"""The fleet a simulation runs on: the FLEET.toml `tessera resources discover --partners`
reads, plus per partner ``lead_time_s`` (opening to usable) and ``idle_close_s``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from tessera.config import ConfigError, read_toml
from tessera.pricing.agreements import Agreement, parse_agreement
from tessera.pricing.rates import FxTable
from tessera.resources.model import DiscoveredResource
from tessera.resources.partners import load_partners

DEFAULT_LEAD_TIME_S = 90.0
DEFAULT_IDLE_CLOSE_S = 600.0


@dataclass(frozen=True)
class PartnerTiming:
    lead_time_s: float = DEFAULT_LEAD_TIME_S
    idle_close_s: float = DEFAULT_IDLE_CLOSE_S


@dataclass
class Fleet:
    own: list[DiscoveredResource]
    offers: list[DiscoveredResource]                  # partner VMs that can be opened
    timing: dict[str, PartnerTiming] = field(default_factory=dict)
    fx: FxTable = field(default_factory=FxTable)

    def timing_of(self, partner: str) -> PartnerTiming:
        return self.timing.get(partner, PartnerTiming())


def load_fleet(path: str | Path) -> Fleet:
    p = Path(path)
    doc = read_toml(p, "fleet file")
    adapters, _ = load_partners(p)
    timing: dict[str, PartnerTiming] = {}
    for part in doc.get("partner", []):
        try:
            timing[part["name"]] = PartnerTiming(float(part.get("lead_time_s", DEFAULT_LEAD_TIME_S)),
                                                 float(part.get("idle_close_s", DEFAULT_IDLE_CLOSE_S)))
        except (TypeError, ValueError):
            raise ConfigError(f"{p}: partner {part.get('name')!r}: lead_time_s and idle_close_s are seconds") from None
    own, offers = [], []

    async def list_all() -> None:
        for a in adapters:
            listing = await a.snapshot()
            (own if a.partner == "own" else offers).extend(listing)

    asyncio.run(list_all())
    fx = FxTable(doc.get("base_currency", "USD"), {k.upper(): Decimal(str(v)) for k, v in (doc.get("fx") or {}).items()})
    return Fleet(own, offers, timing, fx)


def instance_agreements(fleet: Fleet, agreements: dict[str, Agreement]) -> dict[str, Agreement]:
    """Agreements for billing the simulation: partners without one pay their VMs' list price
    per instance-hour (as a cloud bills on-demand VMs)."""
    out = dict(agreements)
    for partner in sorted({r.spec.provider for r in fleet.offers} - set(out)):
        rates = {r.spec.instance_type: format(r.spec.price_per_hour.quantize(Decimal("0.000001")), "f")
                 for r in fleet.offers if r.spec.provider == partner}
        out[partner] = parse_agreement({"partner": partner, "currency": fleet.fx.base,
                                        "rates": {"instance_hour": rates}})
    return out
