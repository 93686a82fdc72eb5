"""Partner agreements: what each partner charges, loaded from JSON and validated.

Rates are decimal strings (or integers) with at most 6 decimal places (micro-units of the
currency); floats are refused because binary floats cannot hold prices exactly. Tiers are
graduated: each band's rate applies to the quantity inside the band of cumulative
unit-hours in the billing period. Limits carry alert thresholds (percent) and soft or hard
enforcement (hard: the scheduler stops placing on the partner for the rest of the period).

Terms change: a document with ``effective_from`` (ISO-8601 UTC) applies from that instant,
and the terms before it still rate the usage before it. Each version links to the one it
replaced (``earlier``), so ``at(t)`` answers which terms held at any time. Both billing (the
ledger) and placement (``tessera.pricing.book``) read rates through this one module.

>>> a = parse_agreement({"partner": "gcp", "currency": "EUR", "rates": {"vcpu_hour": "0.031"}})
>>> a.rates["vcpu_hour"], a.minor_unit
(31000, 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import orjson
from babel.numbers import get_currency_precision, is_currency

#: The units usage is rated in, and how one unit is named on an invoice.
UNITS = {"vcpu_hour": "vCPU-hour", "memory_gib_hour": "GiB-hour", "gpu_hour": "GPU-hour",
         "instance_hour": "instance-hour"}
MICRO = 1_000_000
#: Usage is counted in unit-microseconds x 1000 ("N"): one unit-hour is this many.
N_PER_UNIT_HOUR = 3_600_000_000 * 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: What usage a partner bills on: capacity held while placed, or measured use (usage samples).
BASES = ("allocated", "measured")


class AgreementError(ValueError):
    """An agreement field that cannot be used; the message names it."""


def to_micro(value: Any, where: str) -> int:
    """A decimal string / integer amount as integer micro-units; floats and >6 places refused."""
    if isinstance(value, bool) or isinstance(value, float):
        raise AgreementError(f"{where}: give money as a decimal string like \"0.031\", not the float {value!r}")
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise AgreementError(f"{where}: {value!r} is not a decimal number") from None
    if not d.is_finite() or d < 0:
        raise AgreementError(f"{where}: {value!r} must be a finite number >= 0")
    micro = d * MICRO
    if micro != micro.to_integral_value():
        raise AgreementError(f"{where}: {value!r} has more than 6 decimal places")
    return int(micro)


@dataclass(frozen=True)
class Tier:
    from_units: Decimal   # unit-hours in the period where this band starts
    rate: int             # micro-units per unit-hour


@dataclass(frozen=True)
class Limit:
    name: str             # "spend" or a unit such as "vcpu_hour"
    amount: Decimal       # currency for spend, unit-hours otherwise
    thresholds: tuple[int, ...] = (80, 100)
    enforcement: str = "soft"


@dataclass(frozen=True)
class Agreement:
    partner: str
    currency: str
    rates: dict[str, int]                                   # unit -> micro-units per unit-hour
    instance_rates: dict[str, int] = field(default_factory=dict)   # instance type -> micro per hour
    tiers: dict[str, tuple[Tier, ...]] = field(default_factory=dict)
    monthly_commit: int = 0                                 # micro-units
    limits: tuple[Limit, ...] = ()
    provider_name: str = ""
    basis: str = "allocated"     # or "measured": rated from usage samples, not reserved capacity
    #: When these terms start to apply (UTC microseconds; 0: from the beginning).
    effective_from_us: int = 0
    #: The terms these replaced, in force before ``effective_from_us``.
    earlier: "Agreement | None" = None

    @property
    def minor_unit(self) -> int:
        """Decimal places an amount in this currency is billed in (CLDR's currency data via
        Babel, maintained upstream: CLP, ISK, JPY, VND 0; BHD, KWD 3)."""
        return get_currency_precision(self.currency)

    def at(self, t_us: int) -> "Agreement":
        """The terms in force at ``t_us`` (the earliest version for times before all of them)."""
        a = self
        while a.earlier is not None and t_us < a.effective_from_us:
            a = a.earlier
        return a

    def versions(self) -> list["Agreement"]:
        """Every version, oldest first."""
        out, a = [], self
        while a is not None:
            out.append(a)
            a = a.earlier
        return out[::-1]

    def boundaries(self, start_us: int, end_us: int) -> list[int]:
        """Times strictly inside ``(start_us, end_us)`` where the terms change."""
        return sorted(v.effective_from_us for v in self.versions() if start_us < v.effective_from_us < end_us)

    def superseding(self, old: "Agreement | None") -> "Agreement":
        """These terms as the newest version after ``old``'s. Terms without a date, or dated
        at or before every older version, replace them all (as a corrected contract does)."""
        kept = old
        while kept is not None and kept.effective_from_us >= self.effective_from_us:
            kept = kept.earlier
        if self.effective_from_us == 0:
            kept = None
        return replace(self, earlier=kept)

    def bands(self, unit: str, before: int, n: int) -> list[tuple[int, int, int]]:
        """How ``n`` more units (N) after ``before`` already used this period are charged:
        ``(band index or -1 for a flat rate, N in the band, rate in micro-units)`` per band
        touched. Empty when these terms have no rate for the unit."""
        tiers = self.tiers.get(unit)
        if not tiers:
            rate = self.rates.get(unit)
            return [] if rate is None or not n else [(-1, n, rate)]
        out = []
        ends = [int(t.from_units * N_PER_UNIT_HOUR) for t in tiers[1:]] + [None]
        for i, t in enumerate(tiers):
            lo, hi = int(t.from_units * N_PER_UNIT_HOUR), ends[i]
            inside = max(0, (before + n if hi is None else min(before + n, hi)) - max(before, lo))
            if inside:
                out.append((i, inside, t.rate))
        return out

    def marginal_rate(self, unit: str, before: int) -> int | None:
        """Micro-units per unit-hour of the next unit after ``before`` (N) used this period."""
        b = self.bands(unit, before, 1)
        return b[0][2] if b else None


def parse_agreement(doc: Any, where: str = "agreement") -> Agreement:
    if not isinstance(doc, dict):
        raise AgreementError(f"{where}: must be a JSON object")
    partner = doc.get("partner")
    if not isinstance(partner, str) or not partner:
        raise AgreementError(f"{where}.partner: required, a non-empty string")
    where = f"agreement[{partner}]"
    currency = doc.get("currency")
    if (not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha() or not currency.isupper()
            or not is_currency(currency)):
        raise AgreementError(f"{where}.currency: {currency!r} is not an ISO 4217 currency code like \"USD\"")
    raw_rates = doc.get("rates")
    if not isinstance(raw_rates, dict) or not raw_rates:
        raise AgreementError(f"{where}.rates: required, e.g. {{\"vcpu_hour\": \"0.031\"}}")
    rates: dict[str, int] = {}
    instance_rates: dict[str, int] = {}
    for unit, value in raw_rates.items():
        if unit == "instance_hour":
            if not isinstance(value, dict):
                raise AgreementError(f"{where}.rates.instance_hour: map instance types to rates")
            instance_rates = {t: to_micro(v, f"{where}.rates.instance_hour.{t}") for t, v in value.items()}
        elif unit in UNITS:
            rates[unit] = to_micro(value, f"{where}.rates.{unit}")
        else:
            raise AgreementError(f"{where}.rates.{unit}: unknown unit; use {', '.join(UNITS)}")
    tiers: dict[str, tuple[Tier, ...]] = {}
    for unit, bands in (doc.get("tiers") or {}).items():
        w = f"{where}.tiers.{unit}"
        if unit not in UNITS or unit == "instance_hour":
            raise AgreementError(f"{w}: tiers apply to vcpu_hour, memory_gib_hour or gpu_hour")
        if not isinstance(bands, list) or not bands:
            raise AgreementError(f"{w}: a list of {{\"from\": unit-hours, \"rate\": \"...\"}}")
        parsed = []
        for i, b in enumerate(bands):
            if not isinstance(b, dict) or "from" not in b or "rate" not in b:
                raise AgreementError(f"{w}[{i}]: needs \"from\" and \"rate\"")
            start = Decimal(to_micro(b["from"], f"{w}[{i}].from")) / MICRO
            parsed.append(Tier(start, to_micro(b["rate"], f"{w}[{i}].rate")))
        if parsed[0].from_units != 0:
            raise AgreementError(f"{w}[0].from: the first band must start at 0")
        if any(a.from_units >= b.from_units for a, b in zip(parsed, parsed[1:])):
            raise AgreementError(f"{w}: bands must start at increasing \"from\" values")
        tiers[unit] = tuple(parsed)
    commit = to_micro(doc.get("monthly_commit", "0"), f"{where}.monthly_commit")
    limits = []
    for name, spec in (doc.get("limits") or {}).items():
        w = f"{where}.limits.{name}"
        if name != "spend" and name not in UNITS:
            raise AgreementError(f"{w}: limit 'spend' or a unit ({', '.join(UNITS)})")
        if not isinstance(spec, dict) or "amount" not in spec:
            raise AgreementError(f"{w}: needs \"amount\" (and optional \"thresholds\", \"enforcement\")")
        amount = Decimal(to_micro(spec["amount"], f"{w}.amount")) / MICRO
        thresholds = spec.get("thresholds", [80, 100])
        if (not isinstance(thresholds, list) or not thresholds
                or any(not isinstance(t, int) or isinstance(t, bool) or not 1 <= t <= 1000 for t in thresholds)):
            raise AgreementError(f"{w}.thresholds: percentages as integers 1..1000, e.g. [80, 100]")
        enforcement = spec.get("enforcement", "soft")
        if enforcement not in ("soft", "hard"):
            raise AgreementError(f"{w}.enforcement: 'soft' or 'hard', not {enforcement!r}")
        limits.append(Limit(name, amount, tuple(sorted(set(thresholds))), enforcement))
    basis = doc.get("basis", "allocated")
    if basis not in BASES:
        raise AgreementError(f"{where}.basis: {basis!r}; use 'allocated' (reserved capacity while placed) "
                             f"or 'measured' (usage samples)")
    return Agreement(partner, currency, rates, instance_rates, tiers, commit, tuple(limits),
                     str(doc.get("provider_name") or partner), basis,
                     _effective_from(doc.get("effective_from"), f"{where}.effective_from"))


def utc_us(value: Any) -> int:
    """An ISO-8601 time with a zone as integer microseconds since 1970 (UTC). The ValueError
    says what is wrong, for the caller to name the field."""
    if not isinstance(value, str):
        raise ValueError("an ISO-8601 UTC time like 2026-11-15T00:00:00Z")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO-8601 time") from None
    if dt.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone; give UTC (Z)")
    d = dt - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def _effective_from(value: Any, where: str) -> int:
    if value is None:
        return 0
    try:
        us = utc_us(value)
    except ValueError as exc:
        raise AgreementError(f"{where}: {exc}") from None
    if us <= 0:
        raise AgreementError(f"{where}: {value!r} is before 1970")
    return us


def parse_agreements(doc: Any) -> dict[str, Agreement]:
    if isinstance(doc, dict):
        doc = doc.get("agreements", [doc])
    if not isinstance(doc, list):
        raise AgreementError("agreements: a JSON list of agreement objects")
    parsed: dict[str, list[tuple[int, Agreement]]] = {}
    for i, item in enumerate(doc):
        a = parse_agreement(item, f"agreements[{i}]")
        if any(b.effective_from_us == a.effective_from_us for _, b in parsed.get(a.partner, [])):
            raise AgreementError(f"agreements[{i}].partner: {a.partner!r} appears twice with the same "
                                 f"effective_from; give each version of its terms its own effective_from")
        parsed.setdefault(a.partner, []).append((i, a))
    out: dict[str, Agreement] = {}
    for partner, versions in parsed.items():
        latest = None
        for _, a in sorted(versions, key=lambda x: x[1].effective_from_us):
            latest = a.superseding(latest)
        out[partner] = latest
    return out


def load_agreements(path: str) -> dict[str, Agreement]:
    """The agreements in a JSON file (a list of documents, see ``parse_agreement``)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"agreements file {path!r} not found (set TESSERA_BILLING_AGREEMENTS)")
    try:
        doc = orjson.loads(p.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise AgreementError(f"{path}: not JSON ({exc})") from None
    return parse_agreements(doc)
