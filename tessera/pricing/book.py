"""The one price truth: what opening a resource costs, and what replicas on it cost per hour.

The scheduler weighs ``opening_price`` when it chooses where to place (the packing kernel's
cost of opening a closed resource), puts ``replicas_price`` on every placement it emits,
and refuses a request whose ``max_price_per_hour`` no compatible resource meets. Billing
rates the same agreements (``tessera.pricing.agreements``) in its ledger. So the price a
placement carries is what the partner's bill charges for it, to the cent.

Per provider, one rule:

* **own capacity**: amortized capex is sunk once a node is in service, so the decision
  uses its marginal cost (opex, power: ``ResourceSpec.marginal_price_per_hour``); what
  replicas cost is their vCPU share of the full cost (capex + opex), so own capacity is
  never free in a report and never spuriously expensive in a decision;
* **a partner billed per instance-hour** (its agreement rates this instance type): the whole
  VM is paid from open to close; opening costs the VM's rate, and replicas' share is their
  vCPU share of it;
* **a partner billed per unit** (vCPU-, GiB-, GPU-hours): replicas cost size x rate at the
  partner's month-to-date position in its graduated tiers; opening a resource costs its
  full capacity at those rates, and nothing while the partner's monthly commitment is
  unmet (that usage is already paid for: the contract-aware placement);
* **no agreement**: the discovered list price (catalog or rate card).

Money is Decimal throughout; month-to-date positions are exact integers (``N``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from tessera.schemas import BillingLine

from .agreements import MICRO, N_PER_UNIT_HOUR, Agreement
from .periods import period_of
from .rates import FxTable, PricingError, q

OWN = "own"
UNIT_KEYS = ("vcpu_hour", "memory_gib_hour", "gpu_hour")
#: Bound on the remembered ``replicas_price`` answers (request shapes x resources x replica
#: counts; a fleet's few shapes stay far below it).
REPLICAS_PRICES_KEPT = 65_536


@dataclass(frozen=True)
class PricedResource:
    """A resource as pricing sees it (capacity in vCPU, GiB, GPU)."""

    provider: str
    instance_type: str
    vcpu: float
    memory_gib: float
    gpu: float
    list_price: Decimal                     # discovered whole-resource price per hour (own: full cost)
    marginal_price: Decimal | None = None   # own capacity in service: opex only


@dataclass
class Standing:
    """A partner's month to date: usage per unit (N) and usage spend (micro-units)."""

    period: str
    units: dict[str, int] = field(default_factory=dict)
    spend_micro: int = 0


@dataclass
class PriceBook:
    agreements: dict[str, Agreement] = field(default_factory=dict)
    fx: FxTable = field(default_factory=FxTable)
    standings: dict[str, Standing] = field(default_factory=dict)
    #: (partner, period) -> {line_id: (revision, unit, N, micro)} of the latest billing lines
    _lines: dict[tuple[str, str], dict[str, tuple[int, str, int, int]]] = field(default_factory=dict, repr=False)
    #: ``replicas_price`` answers, asked for every placement: (id of the offer, replicas'
    #: size, replicas, id of the terms in force, month) -> (offer, price). Emptied whenever
    #: terms or standings change (so a terms' id names one version); the offer is kept so
    #: that its id cannot name another one.
    _replicas_prices: dict[tuple, tuple[PricedResource, Decimal]] = field(default_factory=dict, repr=False)

    # -- what changes prices ---------------------------------------------------
    def set_agreement(self, a: Agreement) -> None:
        self.agreements[a.partner] = a.superseding(self.agreements.get(a.partner))
        self._replicas_prices.clear()

    def set_standing(self, partner: str, standing: Standing) -> None:
        if self.standings.get(partner) != standing:
            self._replicas_prices.clear()
        self.standings[partner] = standing

    def observe_line(self, line: BillingLine) -> bool:
        """Follow billing's month to date from its published lines (the latest revision of
        each line counts). Returns whether the partner's standing changed."""
        period = f"{line.period_start.year:04d}-{line.period_start.month:02d}"
        lines = self._lines.setdefault((line.partner_id, period), {})
        held = lines.get(line.line_id)
        if held is not None and held[0] > line.revision:
            return False
        if line.charge_category == "commitment_shortfall":
            lines.pop(line.line_id, None)
            return False
        unit = line.unit if line.unit in UNIT_KEYS else ""
        n = int(Decimal(line.quantity) * N_PER_UNIT_HOUR)
        lines[line.line_id] = (line.revision, unit, n, int(Decimal(line.amount) * MICRO))
        before = self.standings.get(line.partner_id)
        standing = Standing(period)
        for _, u, n_, micro in lines.values():
            if u:
                standing.units[u] = standing.units.get(u, 0) + n_
            standing.spend_micro += micro
        if before is not None and before.period > period:
            return False                 # a revision of an older month
        self.set_standing(line.partner_id, standing)
        return before != standing

    # -- prices ------------------------------------------------------------------
    def terms(self, provider: str, t_us: int) -> Agreement | None:
        a = self.agreements.get(provider)
        return a.at(t_us) if a is not None else None

    def _standing(self, provider: str, t_us: int) -> Standing:
        s = self.standings.get(provider)
        period = period_of(t_us)
        return s if s is not None and s.period == period else Standing(period)

    def _base(self, amount: Decimal, a: Agreement) -> Decimal:
        return self.fx.to_base(amount, a.currency)

    def commitment_unmet(self, provider: str, t_us: int) -> bool:
        a = self.terms(provider, t_us)
        return bool(a and a.monthly_commit and self._standing(provider, t_us).spend_micro < a.monthly_commit)

    def unit_rates(self, provider: str, t_us: int) -> tuple[Decimal, Decimal, Decimal] | None:
        """The next unit-hour's rate per vCPU, GiB and GPU (base currency) at the partner's
        position this month, or None when its terms do not rate per unit."""
        a = self.terms(provider, t_us)
        if a is None or not (a.rates or a.tiers):
            return None
        standing = self._standing(provider, t_us)
        out = []
        for unit in UNIT_KEYS:
            rate = a.marginal_rate(unit, standing.units.get(unit, 0))
            out.append(self._base(Decimal(rate or 0) / MICRO, a))
        return out[0], out[1], out[2]

    def _instance_rate(self, offer: PricedResource, t_us: int) -> Decimal | None:
        a = self.terms(offer.provider, t_us)
        if a is None or offer.instance_type not in a.instance_rates:
            return None
        return self._base(Decimal(a.instance_rates[offer.instance_type]) / MICRO, a)

    def opening_price(self, offer: PricedResource, t_us: int) -> Decimal:
        """What opening (starting to use) this resource costs per hour, for decisions."""
        if offer.provider == OWN:
            return offer.marginal_price if offer.marginal_price is not None else offer.list_price
        try:
            whole = self._instance_rate(offer, t_us)
            if whole is not None:
                return whole
            rates = self.unit_rates(offer.provider, t_us)
        except PricingError:
            return offer.list_price       # no FX rate for the agreement's currency: the list price
        if rates is None:
            return offer.list_price
        if self.commitment_unmet(offer.provider, t_us):
            return Decimal(0)
        return _dot(rates, (offer.vcpu, offer.memory_gib, offer.gpu))

    def saved_by_emptying(self, offer: PricedResource, held: list[tuple[tuple[float, float, float], int]],
                          t_us: int) -> Decimal:
        """What moving all of ``held`` ((per-replica vCPU, GiB, GPU), replicas) off this resource
        saves per hour: a partner billed per unit stops billing those units (nothing while its
        commitment is unmet); a VM billed whole, or own capacity, its opening price."""
        try:
            per_unit = (offer.provider != OWN and self._instance_rate(offer, t_us) is None
                        and self.unit_rates(offer.provider, t_us) is not None)
        except PricingError:
            per_unit = False
        if not per_unit:
            return self.opening_price(offer, t_us)
        if self.commitment_unmet(offer.provider, t_us):
            return Decimal(0)
        return sum((self.replicas_price(offer, per, k, t_us) for per, k in held), Decimal(0))

    def replicas_price(self, offer: PricedResource, per_replica: tuple[float, float, float], replicas: int,
                       t_us: int) -> Decimal:
        """What ``replicas`` x ``per_replica`` (vCPU, GiB, GPU) on this resource cost per hour:
        the amount billing charges for them (own capacity: their share of the full cost)."""
        a = self.agreements.get(offer.provider)
        key = (id(offer), per_replica, replicas, id(a.at(t_us)) if a is not None else 0, period_of(t_us))
        held = self._replicas_prices.get(key)
        if held is not None and held[0] is offer:
            return held[1]
        if len(self._replicas_prices) >= REPLICAS_PRICES_KEPT:
            self._replicas_prices.clear()
        price = self._replicas_price(offer, per_replica, replicas, t_us)
        self._replicas_prices[key] = (offer, price)
        return price

    def _replicas_price(self, offer: PricedResource, per_replica: tuple[float, float, float], replicas: int,
                        t_us: int) -> Decimal:
        try:
            whole = None if offer.provider == OWN else self._instance_rate(offer, t_us)
            rates = None if offer.provider == OWN or whole is not None else self.unit_rates(offer.provider, t_us)
        except PricingError:
            whole = rates = None
        if rates is not None:
            return _dot(rates, tuple(x * replicas for x in per_replica))
        price = whole if whole is not None else offer.list_price
        if offer.vcpu <= 0:
            return price
        share = min(Decimal(repr(per_replica[0])) * replicas / Decimal(repr(offer.vcpu)), Decimal(1))
        return q(price * share)


def _dot(rates: tuple[Decimal, ...], amounts: tuple[float, ...]) -> Decimal:
    return q(sum((r * Decimal(repr(float(x))) for r, x in zip(rates, amounts) if x and r), Decimal(0)))

