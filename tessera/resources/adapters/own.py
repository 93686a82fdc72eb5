"""The provider's own data center: a node inventory CSV priced at amortized capex + opex.

Columns (the Alibaba cluster-trace node list format): ``sn, cpu_milli, memory_mib, gpu, model``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from tessera.pricing.rates import OwnCost
from tessera.schemas import Capacity, PricingModel, ResourceSpec

from ..model import AdapterError, DiscoveredResource
from ..quantities import parse_bytes, parse_cpu


@dataclass
class OwnInventoryAdapter:
    path: str
    cost: OwnCost
    partner: str = "own"
    region: str = "own-dc-1"
    tags: tuple[str, ...] = ("hipaa", "pci", "residency:own")
    limit: int | None = None
    currency: str = "USD"
    _cache: list[DiscoveredResource] | None = field(default=None, repr=False)

    async def snapshot(self) -> list[DiscoveredResource]:
        return self.listing()

    def listing(self) -> list[DiscoveredResource]:
        p = Path(self.path)
        if not p.is_file():
            raise AdapterError(f"own inventory {p} does not exist")
        out = []
        with p.open(newline="") as f:
            for i, row in enumerate(csv.DictReader(f)):
                if self.limit is not None and i >= self.limit:
                    break
                try:
                    vcpu = parse_cpu(f"{row['cpu_milli']}m")
                    mem = parse_bytes(f"{row['memory_mib']}Mi")
                    gpus = int(row.get("gpu") or 0)
                except (KeyError, ValueError) as exc:
                    raise AdapterError(f"{p}:{i + 2}: {exc}") from None
                spec = ResourceSpec(
                    provider=self.partner, kind="node", instance_type=row.get("model") or "cpu-node",
                    region=self.region, capacity=Capacity(vcpu=vcpu, memory_bytes=mem, gpu=gpus),
                    gpu_model=(row.get("model") or "") if gpus else "", tags=sorted(self.tags),
                    pricing_model=PricingModel.own, price_per_hour=self.cost.per_hour(vcpu, gpus),
                    marginal_price_per_hour=self.cost.marginal_per_hour(),
                    currency=self.currency,
                )
                out.append(DiscoveredResource(f"{self.partner}/{row['sn']}", spec))
        return out
