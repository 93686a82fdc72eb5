"""The rating engine: usage in, exact invoice lines and limit alerts out.

Accounting is in integers. Usage accumulates as *unit-microseconds x 1000* (``N``) per
partner, period and unit; a line's exact amount is ``rate_micro x N / D`` currency, with
``D = 3.6e18`` (hour in microseconds x 1000 x micro-units). Numerators add exactly, so the
sum of any split of the usage (per allocation, per resource) equals the whole exactly.
Rounding happens once, on the invoice: the total is the exact amount rounded half-up to
the currency's minor unit, and line amounts are apportioned by largest remainder so that
they add up to that total to the cent.

Periods are calendar months (UTC). Usage spanning a month boundary is split there, and so
is usage spanning a change of terms (an agreement's ``effective_from``): each part is rated
at the terms in force while it ran, and graduated tiers count the period's usage across
versions in time order. Each
event id is rated once. A period can be *closed* (after its grace window, by the live
agent); usage that still arrives for it is rated into the next open period as an
adjustment line.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Iterable

from tessera.pricing.agreements import MICRO, N_PER_UNIT_HOUR, UNITS, Agreement, Limit
from tessera.schemas.identity import RecentIds

from .usage import DAY_US, EPOCH, UsageError, UsageRecord, month_segments, period_bounds, period_of

#: Exact amount (currency) = rate_micro * N / D, where N = unit-microseconds x 1000.
D = N_PER_UNIT_HOUR * MICRO


def _dec(num: int, den: int, places: int = 12) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 60
        return (Decimal(num) / Decimal(den)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def round_half_up(num: int, den: int, minor: int) -> int:
    """num/den currency rounded half-up to ``minor`` places, as an integer of minor units."""
    scale = 10 ** minor
    q, r = divmod(num * scale, den)
    return q + (1 if 2 * r >= den else 0)


def money_text(minor_units: int, minor: int) -> str:
    """An amount in minor units as a decimal string with ``minor`` places ("12.30")."""
    return str(Decimal(minor_units).scaleb(-minor)) if minor else str(minor_units)


def apportion(total: int, weights: list[int]) -> list[int]:
    """Split an integer total in proportion to non-negative integer weights, exactly
    (largest remainder); ties go to the earlier item."""
    s = sum(weights)
    if s == 0:
        return [total] + [0] * (len(weights) - 1) if weights else []
    base = [total * w // s for w in weights]
    rems = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % s), i))
    for i in rems[: total - sum(base)]:
        base[i] += 1
    return base


@dataclass
class Line:
    partner: str
    period: str
    sku: str
    unit: str                      # e.g. vcpu_hour
    charge_category: str           # usage | commitment_shortfall | adjustment
    n: int                         # unit-microseconds x 1000 (0 for a shortfall)
    rate_micro: int
    numerator: int                 # exact amount = numerator / D
    amount_minor: int = 0          # apportioned, minor units of the currency
    adjusts: str = ""              # period an adjustment line corrects
    key: str = ""                  # the usage it rates: unit, or instance_hour:<type>
    terms: int = 0                 # the agreement version's effective_from_us (usage lines)

    @property
    def line_id(self) -> str:
        suffix = f"/adj-{self.adjusts}" if self.adjusts else ""
        return f"{self.partner}/{self.period}/{self.sku}{suffix}"

    @property
    def quantity(self) -> Decimal:
        return _dec(self.n, N_PER_UNIT_HOUR, 9) if self.n else Decimal(0)


@dataclass
class Invoice:
    partner: str
    period: str
    currency: str
    minor: int
    lines: list[Line]
    exact_numerator: int           # sum of line numerators (including any shortfall)

    @property
    def total_minor(self) -> int:
        return sum(l.amount_minor for l in self.lines)

    def money(self, minor_units: int) -> str:
        return money_text(minor_units, self.minor)

    @property
    def total(self) -> str:
        return self.money(self.total_minor)

    @property
    def exact_total(self) -> Decimal:
        return _dec(self.exact_numerator, D, 12)


@dataclass(frozen=True)
class Alert:
    partner: str
    period: str
    limit_name: str
    threshold_pct: int
    used: Decimal
    limit: Decimal
    enforcement: str
    lifted: bool = False


@dataclass
class SeenOverlay:
    """Event ids a ledger has rated plus ids rated on top of it, without copying them.

    The billing agent rates still-running allocations month to date into a throwaway view
    of its ledger every batch; copying the ids the ledger has seen made each batch cost
    time in proportion to every record ever rated."""

    base: RecentIds
    added: set[str] = field(default_factory=set)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self.added or event_id in self.base

    def add(self, event_id: str) -> None:
        self.added.add(event_id)


@dataclass
class Ledger:
    agreements: dict[str, Agreement]
    seen: RecentIds | SeenOverlay = field(default_factory=RecentIds)
    cells: dict[tuple, list[int]] = field(default_factory=dict)
    closed: set[tuple[str, str]] = field(default_factory=set)
    alerted: set[tuple[str, str, str, int]] = field(default_factory=set)
    blocked: dict[str, str] = field(default_factory=dict)   # partner -> period its hard limit was hit
    #: The cells again per UTC day and tenant (None: not kept), for FOCUS rows with daily
    #: charge periods and tenant chargeback: cell key -> {(day start, tenant): [N x 4]}.
    #: Kept apart from ``cells`` because the live agent's month-to-date view copies
    #: ``cells`` every batch and has no use for these.
    detail: dict[tuple, dict[tuple[int, str], list[int]]] | None = field(default_factory=dict)

    def add(self, r: UsageRecord) -> bool:
        """Rate one record; False if its event id was already rated."""
        if r.event_id in self.seen:
            return False
        a = self.agreements.get(r.partner)
        if a is None:
            raise UsageError(f"usage[{r.event_id}].partner: no agreement for partner {r.partner!r}")
        if r.instance_type and r.instance_type not in a.instance_rates and not a.rates:
            raise UsageError(f"usage[{r.event_id}].instance_type: {r.instance_type!r} has no rate "
                             f"in the agreement with {r.partner!r}")
        self.seen.add(r.event_id)
        for period, s, e in month_segments(r.start_us, r.end_us):
            cuts = a.boundaries(s, e) if a.earlier is not None else ()
            for s, e in zip([s, *cuts], [*cuts, e]):
                self._accrue(r, a.at(s).effective_from_us, period, s, e)
        return True

    def _accrue(self, r: UsageRecord, terms: int, period: str, start: int, end: int) -> None:
        dur = end - start
        if not dur:
            return
        corrected = ""
        if self.closed and (r.partner, period) in self.closed:
            period, corrected = self._next_open(r.partner, period), period
        key = (r.partner, period, corrected, r.resource_id, r.region, r.instance_type, terms)
        acc = self.cells.get(key)
        if acc is None:
            acc = self.cells[key] = [0, 0, 0, 0]
        v, m, g, inst = r.vcpu_milli, r.memory_milli, r.gpu_milli, 1000 if r.instance_type else 0
        acc[0] += v * dur
        acc[1] += m * dur
        acc[2] += g * dur
        acc[3] += inst * dur
        if self.detail is None:
            return
        days = self.detail.get(key)
        if days is None:
            days = self.detail[key] = {}
        # A VM billed whole is shared by its tenants (floored: weights, never summed into an amount).
        total = sum(w for _, w in r.shares) if r.shares else 0
        # Split at UTC midnights (inlined: this runs for every record the live agent rates).
        s = start
        while s < end:
            day = s - s % DAY_US
            e = day + DAY_US if day + DAY_US < end else end
            d = e - s
            if r.shares:
                for tenant, w in r.shares:
                    cell = days.get(k := (day, tenant))
                    if cell is None:
                        cell = days[k] = [0, 0, 0, 0]
                    cell[3] += inst * d * w // total
            else:
                cell = days.get(k := (day, r.tenant))
                if cell is None:
                    cell = days[k] = [0, 0, 0, 0]
                cell[0] += v * d
                cell[1] += m * d
                cell[2] += g * d
                cell[3] += inst * d
            s = e

    # Usage cells: (partner, period rated into, period corrected or "", resource, region,
    # instance type, terms in force: their effective_from_us) -> [vcpu N, memory N, gpu N,
    # instance N]. One dict update per record; the per-unit views below are sums over cells.
    def _units(self, key: tuple, acc: list[int]) -> list[tuple[str, int]]:
        out = [(u, n) for u, n in zip(("vcpu_hour", "memory_gib_hour", "gpu_hour"), acc) if n]
        if acc[3]:
            out.append((f"instance_hour:{key[5]}", acc[3]))
        return out

    @property
    def usage(self) -> dict[tuple[str, str, str], int]:
        out: dict[tuple[str, str, str], int] = defaultdict(int)
        for key, acc in self.cells.items():
            if not key[2]:
                for unit, n in self._units(key, acc):
                    out[(key[0], key[1], unit)] += n
        return out

    @property
    def usage_by_terms(self) -> dict[tuple[str, str, str], dict[int, int]]:
        """(partner, period, unit) -> {terms' effective_from_us: N}, regular usage only."""
        out: dict[tuple[str, str, str], dict[int, int]] = defaultdict(dict)
        for key, acc in self.cells.items():
            if not key[2]:
                for unit, n in self._units(key, acc):
                    cell = out[(key[0], key[1], unit)]
                    cell[key[6]] = cell.get(key[6], 0) + n
        return out

    @property
    def adjustments(self) -> dict[tuple[str, str, str, str], int]:
        out: dict[tuple[str, str, str, str], int] = defaultdict(int)
        for key, acc in self.cells.items():
            if key[2]:
                for unit, n in self._units(key, acc):
                    out[(key[0], key[1], key[2], unit)] += n
        return out

    @property
    def by_resource(self) -> dict[tuple[str, str, str, str, str], int]:
        out: dict[tuple[str, str, str, str, str], int] = defaultdict(int)
        for key, acc in self.cells.items():
            for unit, n in self._units(key, acc):
                out[(key[0], key[1], unit, key[3], key[4])] += n
        return out

    def _next_open(self, partner: str, period: str) -> str:
        p = period
        while (partner, p) in self.closed:
            _, hi = period_bounds(p)
            p = period_of(hi)
        return p

    def close_period(self, partner: str, period: str) -> None:
        self.closed.add((partner, period))

    def add_all(self, records: Iterable[UsageRecord]) -> int:
        return sum(self.add(r) for r in records)

    # ------------------------------------------------------------------ rating
    def _rate_unit(self, a: Agreement, key: str, n: int, before: int = 0) -> list[tuple[str, int, int, int]]:
        """(sku, n in band, rate, numerator) per band for ``n`` more of one unit after
        ``before`` this period, at the terms ``a``."""
        if key.startswith("instance_hour:"):
            t = key.split(":", 1)[1]
            rate = a.instance_rates.get(t)
            return [] if rate is None else [(key, n, rate, rate * n)]
        return [(key if band < 0 else f"{key}/tier{band + 1}", inside, rate, rate * inside)
                for band, inside, rate in a.bands(key, before, n)]

    def _rate_terms(self, a: Agreement, key: str, by_terms: dict[int, int]) -> list[tuple[str, int, int, int, int]]:
        """A unit's period usage rated version by version in time order; tiers count on
        across versions. A version other than the first names its start in the sku."""
        out, before = [], 0
        for terms, n in sorted(by_terms.items()):
            version = a.at(terms)
            suffix = "" if version.earlier is None else "@" + _stamp(version.effective_from_us)
            out += [(sku + suffix, nb, rate, num, terms)
                    for sku, nb, rate, num in self._rate_unit(version, key, n, before)]
            before += n
        return out

    def invoice(self, partner: str, period: str) -> Invoice:
        a = self.agreements[partner]
        lines: list[Line] = []
        usage = self.usage          # derived from the cells: build it once per invoice
        for (p, per, key), by_terms in sorted(self.usage_by_terms.items()):
            if p == partner and per == period:
                for sku, nb, rate, num, terms in self._rate_terms(a, key, by_terms):
                    lines.append(Line(partner, period, sku, key.split(":")[0], "usage", nb, rate, num, key=key,
                                      terms=terms))
        for (p, per, corrected, key), n in sorted(self.adjustments.items()):
            if p == partner and per == period:
                # Late usage is rated at the corrected period's marginal rate, at the terms
                # in force at that period's end.
                full = usage.get((partner, corrected, key), 0)
                terms = a.at(period_bounds(corrected)[1] - 1)
                bands = self._rate_unit(terms, key, n, full)
                num = sum(x[3] for x in bands)
                rate = bands[-1][2] if bands else 0
                lines.append(Line(partner, period, key, key.split(":")[0], "adjustment", n, rate, num,
                                  adjusts=corrected, key=key))
        subtotal = sum(l.numerator for l in lines)
        # The commitment is the one in the terms in force at the period's end.
        commit_num = a.at(period_bounds(period)[1] - 1).monthly_commit * N_PER_UNIT_HOUR   # micro-units -> numerator units
        if commit_num and subtotal < commit_num:
            lines.append(Line(partner, period, "commitment-shortfall", "commitment", "commitment_shortfall", 0,
                              0, commit_num - subtotal))
        exact = sum(l.numerator for l in lines)
        total_minor = round_half_up(exact, D, a.minor_unit)
        for l, m in zip(lines, apportion(total_minor, [l.numerator for l in lines])):
            l.amount_minor = m
        return Invoice(partner, period, a.currency, a.minor_unit, lines, exact)

    def periods(self, partner: str | None = None) -> list[tuple[str, str]]:
        keys = {(key[0], key[1]) for key, acc in self.cells.items() if self._units(key, acc)}
        return sorted(k for k in keys if partner is None or k[0] == partner)

    # ------------------------------------------------------------------ limits
    def _usage_against(self, partner: str, period: str) -> list[tuple[Limit, Decimal]]:
        a = self.agreements[partner]
        out = []
        inv = None
        usage = None
        for lim in a.limits:
            if lim.name == "spend":
                inv = inv or self.invoice(partner, period)
                used = _dec(sum(l.numerator for l in inv.lines if l.charge_category != "commitment_shortfall"), D, 6)
            else:
                usage = usage if usage is not None else self.usage
                used = _dec(usage.get((partner, period, lim.name), 0), N_PER_UNIT_HOUR, 6)
            out.append((lim, used))
        return out

    def check_limits(self, partner: str, period: str) -> list[Alert]:
        """Alerts for thresholds newly crossed in this period (each at most once)."""
        if not self.agreements[partner].limits:
            return []
        out = []
        for lim, used in self._usage_against(partner, period):
            for t in lim.thresholds:
                key = (partner, period, lim.name, t)
                if key in self.alerted or used * 100 < lim.amount * t:
                    continue
                self.alerted.add(key)
                hard = lim.enforcement == "hard" and t >= 100
                if hard:
                    self.blocked[partner] = period
                out.append(Alert(partner, period, lim.name, t, used, lim.amount, "hard" if hard else "soft"))
        return out

    def lift_block(self, partner: str, period: str) -> list[Alert]:
        """A partner blocked by a hard limit in this period whose (raised) hard limits are all
        below 100 % again is unblocked: one ``lifted`` alert per hard limit, and thresholds
        above the new usage may alert again."""
        if self.blocked.get(partner) != period:
            return []
        hard = [(lim, used) for lim, used in self._usage_against(partner, period) if lim.enforcement == "hard"]
        if any(used >= lim.amount for lim, used in hard):
            return []
        del self.blocked[partner]
        out = []
        for lim, used in hard:
            pct = int(used * 100 / lim.amount) if lim.amount else 0
            for t in lim.thresholds:
                if t > pct:
                    self.alerted.discard((partner, period, lim.name, t))
            out.append(Alert(partner, period, lim.name, max(pct, 1), used, lim.amount, "soft", lifted=True))
        return out


def _stamp(us: int) -> str:
    """A terms version's start as it appears in a sku: 2026-11-15T00:00Z."""
    return (EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%MZ")


def unit_label(key: str) -> str:
    return UNITS.get(key.split(":")[0], key)


def merge_views(views: list[Ledger]) -> Ledger:
    """One ledger from ledgers of disjoint partners (the shards of the billing feed): for
    reports over every partner. The result is for reading; it rates nothing more."""
    if len(views) == 1:
        return views[0]
    merged = Ledger({}, seen=RecentIds(), detail={} if all(v.detail is not None for v in views) else None)
    for v in views:
        merged.agreements.update(v.agreements)
        merged.cells.update(v.cells)
        merged.closed |= v.closed
        merged.alerted |= v.alerted
        merged.blocked.update(v.blocked)
        if merged.detail is not None:
            merged.detail.update(v.detail)
    return merged
