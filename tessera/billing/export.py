"""Accounting exports: a JSON invoice per partner and period, FOCUS 1.2 cost rows, and
tenant chargeback.

FOCUS (FinOps Open Cost and Usage Specification) rows are written per invoice line, UTC
day, resource and tenant (``SubAccountId``). A line's amount is shared out exactly (largest
remainder), so the rows of a line add up to the line to the cent and all rows of an
invoice to its total. Graduated tiers are attributed in time order: the days whose usage
crossed into a cheaper band carry that band's rows. A VM billed whole is shared by the
tenants that ran on it in proportion to their use of it.

Chargeback answers what each tenant's work cost: the FOCUS rows grouped by tenant, with a
partner's rows that belong to nobody in particular (a commitment shortfall) shared by the
tenants in proportion to what they were billed by that partner, plus the own capacity
their work held at its placements' prices (the share of the own nodes' full cost).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import datetime, timezone
from decimal import Decimal

from babel.numbers import get_currency_precision

from tessera.pricing.agreements import MICRO, N_PER_UNIT_HOUR, Agreement
from tessera.pricing.periods import US_PER_HOUR

from .ledger import D, Invoice, Ledger, Line, apportion, money_text, round_half_up, unit_label
from .usage import DAY_US, US, period_bounds

FOCUS_COLUMNS = [
    "BillingAccountId", "BillingAccountName", "BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart",
    "ChargePeriodEnd", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargeFrequency", "BilledCost",
    "EffectiveCost", "ListCost", "ContractedCost", "ListUnitPrice", "ContractedUnitPrice", "BillingCurrency",
    "InvoiceId", "InvoiceIssuerName", "ProviderName", "PublisherName", "ResourceId", "ResourceName",
    "ResourceType", "RegionId", "RegionName", "AvailabilityZone", "ServiceName", "ServiceCategory",
    "ServiceSubcategory", "SkuId", "SkuPriceId", "SkuMeter", "PricingCategory", "PricingQuantity", "PricingUnit",
    "ConsumedQuantity", "ConsumedUnit", "SubAccountId", "SubAccountName", "CommitmentDiscountStatus", "Tags",
]
#: The FOCUS applicability criteria these rows meet (the validator checks the columns they imply).
FOCUS_CRITERIA = ("ACCOUNT_NAMING_SUPPORTED", "BILLING_BASED_ON_PROVISIONED_RESOURCES_SUPPORTED",
                  "NEGOTIATED_PRICING_SUPPORTED", "REGION_SUPPORTED", "RESOURCE_TYPE_ASSIGNMENT_SUPPORTED",
                  "SUB_ACCOUNT_SUPPORTED", "TAGGING_SUPPORTED", "USAGE_MEASUREMENT_SUPPORTED")
CATEGORY = {"usage": "Usage", "adjustment": "Usage", "commitment_shortfall": "Adjustment"}
#: FOCUS unit format: <unit>-<plural time unit>.
FOCUS_UNITS = {"vcpu_hour": "vCPU-Hours", "memory_gib_hour": "GiB-Hours", "gpu_hour": "GPU-Hours",
               "instance_hour": "Instance-Hours"}
_SLOT = {"vcpu_hour": 0, "memory_gib_hour": 1, "gpu_hour": 2, "instance_hour": 3}
_QTY = Decimal("0.000000001")


def iso_utc(us: int) -> str:
    return datetime.fromtimestamp(us // US, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro(m: int) -> str:
    return str(Decimal(m).scaleb(-6).normalize()) if m else "0"


def invoice_id(inv: Invoice) -> str:
    return f"{inv.partner}/{inv.period}"


def invoice_json(inv: Invoice) -> dict:
    lo, hi = period_bounds(inv.period)
    return {
        "invoice_id": invoice_id(inv),
        "partner": inv.partner, "period": inv.period, "period_start": iso_utc(lo), "period_end": iso_utc(hi),
        "currency": inv.currency,
        "lines": [{"line_id": l.line_id, "sku": l.sku, "unit": unit_label(l.unit) if l.n else l.unit,
                   "charge_category": l.charge_category, "quantity": str(l.quantity),
                   "rate": _micro(l.rate_micro), "amount": inv.money(l.amount_minor),
                   "amount_exact": str(Decimal(l.numerator) / Decimal(D)) if l.numerator else "0",
                   **({"adjusts_period": l.adjusts} if l.adjusts else {})}
                  for l in inv.lines],
        "total": inv.total,
        "total_exact": str(inv.exact_total),
    }


# A share of a line: (day start, resource, region, tenant, N).
Share = tuple[int, str, str, str, int]


def _weights(ledger: Ledger, partner: str, period: str, key: str, corrected: str,
             terms: int | None) -> dict[int, dict[tuple[str, str, str], int]]:
    """day -> {(resource, region, tenant): N of ``key``} for the usage a line rates."""
    if ledger.detail is None:
        raise ValueError("this ledger keeps no per-day detail (Ledger(detail=None)); FOCUS rows need it")
    unit, _, itype = key.partition(":")
    slot = _SLOT[unit]
    out: dict[int, dict[tuple[str, str, str], int]] = defaultdict(lambda: defaultdict(int))
    for (p, per, corr, rid, region, it, t), days in ledger.detail.items():
        if p == partner and per == period and corr == corrected and it == itype and (terms is None or t == terms):
            for (day, tenant), acc in days.items():
                if acc[slot]:
                    out[day][(rid, region, tenant)] += acc[slot]
    return out


def _in_time_order(lines: list[Line], by_day: dict[int, dict[tuple[str, str, str], int]]) -> list[list[Share]]:
    """Each line's usage per day, resource and tenant, attributing a unit's bands in time
    order (the first hours of the month fill the first band). Exact: each line's shares sum
    to its N."""
    days = sorted(by_day)
    total = sum(l.n for l in lines)
    day_n = apportion(total, [sum(by_day[d].values()) for d in days])
    out: list[list[Share]] = [[] for _ in lines]
    lo = 0
    bounds = []
    for l in lines:
        bounds.append((lo, lo + l.n))
        lo += l.n
    start = 0
    for d, n in zip(days, day_n):
        end = start + n
        parts = sorted(by_day[d].items())
        for i, (a, b) in enumerate(bounds):
            overlap = min(b, end) - max(a, start)
            if overlap > 0:
                for (rid, region, tenant), m in zip((k for k, _ in parts), apportion(overlap, [w for _, w in parts])):
                    if m:
                        out[i].append((d, rid, region, tenant, m))
        start = end
    return out


def line_shares(ledger: Ledger, inv: Invoice) -> list[list[Share]]:
    """For each line of ``inv``, its usage per day, resource and tenant (empty for a line
    that rates no usage: a commitment shortfall)."""
    out: list[list[Share]] = [[] for _ in inv.lines]
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, line in enumerate(inv.lines):
        if line.charge_category == "usage":
            groups[(line.key, line.terms)].append(i)
        elif line.charge_category == "adjustment":
            by_day = _weights(ledger, inv.partner, inv.period, line.key, line.adjusts, None)
            out[i] = _in_time_order([line], by_day)[0]
    for (key, terms), idx in groups.items():
        by_day = _weights(ledger, inv.partner, inv.period, key, "", terms)
        for i, shares in zip(idx, _in_time_order([inv.lines[i] for i in idx], by_day)):
            out[i] = shares
    return out


def _hours(n: int) -> str:
    return str((Decimal(n) / Decimal(N_PER_UNIT_HOUR)).quantize(_QTY))


def focus_rows(ledger: Ledger, inv: Invoice, agreement: Agreement) -> list[dict[str, str]]:
    lo, hi = period_bounds(inv.period)
    provider = agreement.provider_name or inv.partner
    common = {
        "BillingAccountId": inv.partner, "BillingAccountName": f"{provider} account",
        "BillingPeriodStart": iso_utc(lo), "BillingPeriodEnd": iso_utc(hi), "BillingCurrency": inv.currency,
        "InvoiceId": invoice_id(inv), "InvoiceIssuerName": provider, "ProviderName": provider,
        "PublisherName": provider, "ServiceName": "Tessera blended compute", "ServiceCategory": "Compute",
        "ServiceSubcategory": "Virtual Machines", "Tags": "{}",
    }
    rows = []
    for line, shares in zip(inv.lines, line_shares(ledger, inv)):
        if not shares:
            # A monthly commitment's shortfall: a true-up for the whole period, on no resource.
            rows.append({**common, "ChargePeriodStart": iso_utc(lo), "ChargePeriodEnd": iso_utc(hi),
                         "ChargeCategory": "Adjustment", "ChargeClass": "", "ChargeFrequency": "Recurring",
                         "ChargeDescription": "monthly commitment shortfall",
                         **dict.fromkeys(("BilledCost", "EffectiveCost", "ListCost", "ContractedCost"),
                                         inv.money(line.amount_minor)),
                         "SkuId": line.sku, "SkuPriceId": line.sku, "SkuMeter": "Commitment",
                         "PricingCategory": "Committed", "PricingQuantity": "", "PricingUnit": ""})
            continue
        list_rate = agreement.at(line.terms).rates.get(line.unit, line.rate_micro)
        unit = FOCUS_UNITS[line.unit]
        amounts = apportion(line.amount_minor, [s[4] for s in shares])
        for (day, rid, region, tenant, n), amount in zip(shares, amounts):
            cost = inv.money(amount)
            qty = _hours(n)
            rows.append({
                **common, "ChargePeriodStart": iso_utc(day), "ChargePeriodEnd": iso_utc(day + DAY_US),
                "ChargeCategory": CATEGORY[line.charge_category],
                "ChargeClass": "Correction" if line.adjusts else "", "ChargeFrequency": "Usage-Based",
                "ChargeDescription": f"{unit_label(line.unit)} at contracted rate"
                + (f" (late usage of {line.adjusts})" if line.adjusts else ""),
                "BilledCost": cost, "EffectiveCost": cost, "ContractedCost": cost,
                "ListCost": str((Decimal(list_rate) * Decimal(n) / Decimal(D)).quantize(Decimal(1).scaleb(-inv.minor))),
                "ListUnitPrice": _micro(list_rate), "ContractedUnitPrice": _micro(line.rate_micro),
                "ResourceId": rid, "ResourceName": rid, "ResourceType": "Virtual Machine",
                "RegionId": region, "RegionName": region, "SkuId": line.sku, "SkuPriceId": line.line_id,
                "SkuMeter": unit_label(line.unit), "PricingCategory": "Standard",
                "PricingQuantity": qty, "PricingUnit": unit, "ConsumedQuantity": qty, "ConsumedUnit": unit,
                "SubAccountId": tenant, "SubAccountName": tenant,
            })
    return rows


def focus_csv(rows: list[dict[str, str]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FOCUS_COLUMNS, lineterminator="\n", restval="")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def chargeback(invoices: list[Invoice], rows_by_invoice: list[list[dict[str, str]]], *,
               own: dict[str, int] | None = None, period: str = "", currency: str = "USD") -> list[dict]:
    """What each tenant's work cost per period and currency, from the FOCUS rows of the
    partners' invoices: a tenant's own rows, plus its share of each partner's rows that name
    no tenant (in proportion to what that partner billed it). Exact: the tenants' partner
    amounts add up to the invoices' totals to the minor unit; work with no tenant is billed
    to "(none)". ``own``: own capacity's cost per tenant in ``period`` (price micro-units x
    microseconds, ``BillingState.own_costs``), in the base ``currency``, shown as "own"."""
    out: dict[tuple[str, str, str], dict] = {}

    def doc_for(per: str, cur: str, tenant: str, minor: int) -> dict:
        doc = out.setdefault((per, cur, tenant), {"tenant": tenant, "period": per, "currency": cur,
                                                  "by_partner": {}, "total_minor": 0, "minor": minor})
        return doc

    for inv, rows in zip(invoices, rows_by_invoice):
        scale = Decimal(1).scaleb(-inv.minor)
        minor = [int(Decimal(r["BilledCost"]) / scale) for r in rows]
        by_tenant: dict[str, int] = defaultdict(int)
        shared = 0
        for r, m in zip(rows, minor):
            if r.get("ResourceId"):
                by_tenant[r.get("SubAccountId") or "(none)"] += m
            else:
                shared += m
        tenants = sorted(by_tenant) or ["(none)"]
        extra = apportion(shared, [by_tenant.get(t, 0) for t in tenants])
        for t, add in zip(tenants, extra):
            doc = doc_for(inv.period, inv.currency, t, inv.minor)
            amount = by_tenant.get(t, 0) + add
            doc["by_partner"][inv.partner] = money_text(amount, inv.minor)
            doc["total_minor"] += amount
    for tenant, n in sorted((own or {}).items()):
        minor = get_currency_precision(currency)
        amount = round_half_up(n, US_PER_HOUR * MICRO, minor)     # n: price micro-units x microseconds
        doc = doc_for(period, currency, tenant or "(none)", minor)
        doc["by_partner"]["own"] = money_text(amount, minor)
        doc["total_minor"] += amount
    docs = []
    for _, doc in sorted(out.items()):
        minor = doc.pop("minor")
        total = doc.pop("total_minor")
        doc["total"] = money_text(total, minor)
        docs.append(doc)
    return docs
