"""Load partner discovery settings from TOML into adapters (see docs/partners.example.toml)."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any

from tessera.config import ConfigError, read_toml
from tessera.pricing.rates import FxTable, OwnCost, RateCard

from .adapters.catalog import CatalogAdapter
from .adapters.kubernetes import KubernetesAdapter
from .adapters.own import OwnInventoryAdapter
from .adapters.rest import FieldMapping, RestAdapter
from .compliance import is_compliance_tag


def rate_card(doc: dict[str, Any] | None) -> RateCard:
    doc = doc or {}
    dec = lambda k: Decimal(str(doc[k])) if k in doc else None  # noqa: E731
    return RateCard(
        instance_hour={k: Decimal(str(v)) for k, v in (doc.get("instance_hour") or {}).items()},
        vcpu_hour=dec("vcpu_hour"), gib_hour=dec("gib_hour"), gpu_hour=dec("gpu_hour"),
        discount_pct=dec("discount_pct") or Decimal(0),
    )


def _relative(base: Path, p: str) -> str:
    if p.startswith(("http://", "https://")) or os.path.isabs(p):
        return p
    return str((base / p).resolve()) if (base / p).exists() else p


def load_partners(path: str | os.PathLike[str]) -> tuple[list[Any], dict[str, int]]:
    """Adapters for every partner (and the own inventory), and each one's poll interval (s)."""
    p = Path(path)
    doc = read_toml(p, "partners file")
    base = p.parent
    fx = FxTable(doc.get("base_currency", "USD"), {k.upper(): Decimal(str(v)) for k, v in (doc.get("fx") or {}).items()})
    adapters: list[Any] = []
    intervals: dict[str, int] = {}
    if "own" in doc:
        o = doc["own"]
        cost = OwnCost(capex=Decimal(str(o.get("capex", 0))), amortization_months=int(o.get("amortization_months", 48)),
                       opex_per_hour=Decimal(str(o.get("opex_per_hour", 0))),
                       capex_per_vcpu=Decimal(str(o.get("capex_per_vcpu", 0))),
                       capex_per_gpu=Decimal(str(o.get("capex_per_gpu", 0))))
        adapters.append(OwnInventoryAdapter(_relative(base, o["inventory"]), cost, region=o.get("region", "own-dc-1"),
                                            tags=tuple(o.get("tags", ("hipaa", "pci", "residency:own"))),
                                            limit=o.get("limit"), currency=fx.base))
        intervals["own"] = int(o.get("interval_s", 300))
    for part in doc.get("partner", []):
        name, kind = part.get("name"), part.get("adapter")
        if not name or kind not in ("catalog", "kubernetes", "rest"):
            raise ConfigError(f"{p}: each [[partner]] needs a name and adapter = catalog | kubernetes | rest")
        common = dict(currency=part.get("currency", "USD"), fx=fx, rate_card=rate_card(part.get("rate_card")))
        if kind == "catalog":
            adapters.append(CatalogAdapter(
                name, _relative(base, part["source"]), format=part.get("format", "skypilot"),
                regions=frozenset(part.get("regions", [])), instance_types=frozenset(part.get("instance_types", [])),
                max_per_type=int(part.get("max_per_type", 1)), pricing_model=part.get("pricing_model", "on_demand"),
                tags=tuple(part.get("tags", [])), **common))
        elif kind == "kubernetes":
            token = part.get("token") or os.environ.get(part.get("token_env", ""), "")
            adapters.append(KubernetesAdapter(name, part["server"], token=token,
                                              verify_tls=bool(part.get("verify_tls", True)),
                                              ca_file=part.get("ca_file", ""), **common))
        else:
            fields = FieldMapping(**{k: (tuple(v) if isinstance(v, list) else v)
                                     for k, v in (part.get("fields") or {}).items()})
            token = part.get("token") or os.environ.get(part.get("token_env", ""), "")
            adapters.append(RestAdapter(name, part["url"], items_path=part.get("items_path", "items"),
                                        next_path=part.get("next_path", "next"), fields=fields, token=token,
                                        tags=tuple(part.get("tags", [])), **common))
        intervals[name] = int(part.get("interval_s", 60))
    return adapters, intervals


def compliance_allow_lists(path: str | os.PathLike[str]) -> dict[str, frozenset[str]]:
    """Per partner, the compliance tags its resources may carry: its ``compliance`` list and
    the compliance tags the operator gives it in ``tags``. The own inventory is not listed
    (its tags are the operator's)."""
    doc = read_toml(Path(path), "partners file")
    out = {}
    for part in doc.get("partner", []):
        given = [t for t in part.get("tags", []) if is_compliance_tag(t)]
        out[part.get("name", "")] = frozenset([*part.get("compliance", []), *given])
    return out
