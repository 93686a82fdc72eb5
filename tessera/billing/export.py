"""Accounting exports: a JSON invoice per partner and period, and FOCUS 1.x cost rows.

FOCUS (FinOps Open Cost and Usage Specification) rows are written per invoice line and
resource: a line's amount is split over the resources that used it in proportion to their
exact usage (largest remainder), so the rows of a line add up to the line to the cent and
all rows of an invoice to its total.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from decimal import Decimal

from tessera.pricing.agreements import Agreement

from .ledger import D, Invoice, Ledger, apportion, unit_label
from .usage import US, period_bounds

FOCUS_COLUMNS = [
    "BillingAccountId", "BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd",
    "ChargeCategory", "ChargeClass", "ChargeDescription", "BilledCost", "EffectiveCost", "ListCost",
    "ContractedCost", "ListUnitPrice", "ContractedUnitPrice", "BillingCurrency", "ProviderName",
    "PublisherName", "InvoiceIssuerName", "ResourceId", "RegionId", "ServiceName", "ServiceCategory", "SkuId",
    "PricingQuantity", "PricingUnit", "ConsumedQuantity", "ConsumedUnit", "Tags",
]
CATEGORY = {"usage": "Usage", "adjustment": "Adjustment", "commitment_shortfall": "Purchase"}


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us // US, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro(m: int) -> str:
    return str(Decimal(m).scaleb(-6).normalize()) if m else "0"


def invoice_json(inv: Invoice) -> dict:
    lo, hi = period_bounds(inv.period)
    return {
        "partner": inv.partner, "period": inv.period, "period_start": _iso(lo), "period_end": _iso(hi),
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


def focus_rows(ledger: Ledger, inv: Invoice, agreement: Agreement) -> list[dict[str, str]]:
    lo, hi = period_bounds(inv.period)
    rows = []
    # This invoice's usage per unit and resource, gathered once (not per line).
    by_unit: dict[str, list[tuple[str, str, int]]] = {}
    for (p, per, k, rid, region), n in sorted(ledger.by_resource.items()):
        if p == inv.partner and per == inv.period:
            by_unit.setdefault(k, []).append((rid, region, n))
    for line in inv.lines:
        if line.charge_category == "commitment_shortfall":
            parts = [("", "", 0)]
            shares = [line.amount_minor]
        else:
            key = line.sku.split("/")[0]
            parts = by_unit.get(key, [])
            if not parts:
                parts = [("", "", line.n)]
            # Tiered lines share out the line's own quantity; by-resource usage sets the weights.
            shares = apportion(line.amount_minor, [n for _, _, n in parts])
        total_n = sum(n for _, _, n in parts) or 1
        for (rid, region, n), amount in zip(parts, shares):
            qty_n = line.n * n // total_n if line.n else 0
            qty = str((Decimal(qty_n) / Decimal(3_600_000_000_000)).quantize(Decimal("0.000000001")))
            list_rate = agreement.rates.get(line.unit, line.rate_micro)
            cost = inv.money(amount)
            rows.append({
                "BillingAccountId": inv.partner, "BillingPeriodStart": _iso(lo), "BillingPeriodEnd": _iso(hi),
                "ChargePeriodStart": _iso(lo), "ChargePeriodEnd": _iso(hi),
                "ChargeCategory": CATEGORY[line.charge_category], "ChargeClass": "Correction" if line.adjusts else "",
                "ChargeDescription": (f"{unit_label(line.unit)} at contracted rate" if line.n
                                      else "monthly commitment shortfall"),
                "BilledCost": cost, "EffectiveCost": cost,
                "ListCost": str((Decimal(list_rate) * Decimal(qty_n) / Decimal(D)).quantize(
                    Decimal(1).scaleb(-inv.minor))) if line.n else cost,
                "ContractedCost": cost,
                "ListUnitPrice": _micro(list_rate) if line.n else "", "ContractedUnitPrice": _micro(line.rate_micro)
                if line.n else "",
                "BillingCurrency": inv.currency, "ProviderName": agreement.provider_name,
                "PublisherName": agreement.provider_name, "InvoiceIssuerName": agreement.provider_name,
                "ResourceId": rid, "RegionId": region, "ServiceName": "Tessera blended compute",
                "ServiceCategory": "Compute", "SkuId": line.sku,
                "PricingQuantity": qty if line.n else "1", "PricingUnit": unit_label(line.unit) if line.n else "commitment",
                "ConsumedQuantity": qty if line.n else "", "ConsumedUnit": unit_label(line.unit) if line.n else "",
                "Tags": "{}",
            })
    return rows


def focus_csv(rows: list[dict[str, str]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FOCUS_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


