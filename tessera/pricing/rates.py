"""Prices to one base currency per hour, in Decimal; rate cards; the cost of owned capacity.

Catalogs quote per second, per hour or per month (GCP's committed-use prices are
monthly); partner agreements may override them with a rate card. Own data centers cost
amortized capex plus opex per hour: never zero, so that blending with partners compares
true costs.

>>> to_hourly(Decimal("73.0"), "month")
Decimal('0.1')
>>> OwnCost(capex=Decimal("12000"), amortization_months=48, opex_per_hour=Decimal("0.15")).per_hour()
Decimal('0.4924657534')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Mapping

from tessera.schemas import GIB

HOURS_PER_MONTH = Decimal(730)  # 8760 / 12: the convention cloud catalogs use
_PER_HOUR = {
    "second": Decimal(3600),
    "minute": Decimal(60),
    "hour": Decimal(1),
    "day": Decimal(1) / Decimal(24),
    "month": Decimal(1) / HOURS_PER_MONTH,
    "year": Decimal(1) / (HOURS_PER_MONTH * 12),
}
#: Prices are kept to 1e-10 of a currency unit: far below a cent over a year of hours.
PRICE_QUANTUM = Decimal("0.0000000001")


class PricingError(ValueError):
    pass


def q(amount: Decimal) -> Decimal:
    return amount.quantize(PRICE_QUANTUM, rounding=ROUND_HALF_EVEN).normalize() if amount else Decimal(0)


def to_hourly(amount: Decimal, per: str) -> Decimal:
    try:
        return q(Decimal(amount) * _PER_HOUR[per])
    except KeyError:
        raise PricingError(f"price period {per!r} unknown; use one of {', '.join(_PER_HOUR)}") from None


@dataclass(frozen=True)
class FxTable:
    """Converts amounts to ``base``: ``rates[c]`` is the price of one unit of ``c`` in ``base``."""

    base: str = "USD"
    rates: Mapping[str, Decimal] = field(default_factory=dict)

    def to_base(self, amount: Decimal, currency: str) -> Decimal:
        currency = currency.upper()
        if currency == self.base:
            return Decimal(amount)
        try:
            return q(Decimal(amount) * Decimal(self.rates[currency]))
        except KeyError:
            raise PricingError(
                f"no FX rate for {currency} -> {self.base}; add it to the fx table in the partner config"
            ) from None


@dataclass(frozen=True)
class RateCard:
    """A partner agreement's prices, overriding the catalog.

    ``instance_hour`` prices whole instances by type; otherwise, if any unit rate is set,
    the price is vCPU x vcpu_hour + GiB x gib_hour + GPU x gpu_hour; otherwise the
    catalog price less ``discount_pct``.
    """

    instance_hour: Mapping[str, Decimal] = field(default_factory=dict)
    vcpu_hour: Decimal | None = None
    gib_hour: Decimal | None = None
    gpu_hour: Decimal | None = None
    discount_pct: Decimal = Decimal(0)

    def price(self, instance_type: str, vcpu: float, memory_bytes: int, gpu: int, catalog_price: Decimal | None
              ) -> Decimal:
        if instance_type in self.instance_hour:
            return Decimal(self.instance_hour[instance_type])
        if any(r is not None for r in (self.vcpu_hour, self.gib_hour, self.gpu_hour)):
            gib_ = Decimal(memory_bytes) / Decimal(GIB)
            return q(Decimal(str(vcpu)) * (self.vcpu_hour or 0) + gib_ * (self.gib_hour or 0)
                     + Decimal(gpu) * (self.gpu_hour or 0))
        if catalog_price is None:
            raise PricingError(f"no catalog price and no rate card entry for {instance_type!r}")
        return q(Decimal(catalog_price) * (1 - Decimal(self.discount_pct) / 100))


@dataclass(frozen=True)
class OwnCost:
    """Hourly cost of an owned node: (capex + per-vCPU + per-GPU capex) amortized, plus opex."""

    capex: Decimal
    amortization_months: int = 48
    opex_per_hour: Decimal = Decimal(0)
    capex_per_vcpu: Decimal = Decimal(0)
    capex_per_gpu: Decimal = Decimal(0)

    def per_hour(self, vcpu: float = 0.0, gpu: int = 0) -> Decimal:
        capex = Decimal(self.capex) + Decimal(str(vcpu)) * self.capex_per_vcpu + Decimal(gpu) * self.capex_per_gpu
        hourly = q(capex / (HOURS_PER_MONTH * self.amortization_months) + Decimal(self.opex_per_hour))
        if hourly <= 0:
            raise PricingError("own capacity must cost something per hour (set capex and/or opex)")
        return hourly

    def marginal_per_hour(self) -> Decimal:
        """What running a node already in service costs per hour: opex only (capex is sunk)."""
        return q(Decimal(self.opex_per_hour))
