"""Price catalogs as partner offers: SkyPilot-format CSVs and the GCP (Cyclenerd) format.

A partner offers up to ``max_per_type`` instances of each (instance type, region); each
becomes one resource ``<partner>/<region>/<type>/<n>``. Prices come from the chosen
pricing model (on-demand, spot, committed 1y/3y where the catalog has them), through
the partner's rate card, converted to the base currency per hour.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Iterable, Iterator

import aiohttp

from tessera.pricing.rates import FxTable, RateCard, to_hourly
from tessera.schemas import Capacity, PricingModel, ResourceSpec

from ..model import AdapterError, DiscoveredResource
from ..quantities import QuantityError, gib, parse_cpu
from .http import HttpFetcher

SKYPILOT_COLUMNS = {"InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB", "Price", "Region"}
GCP_COLUMNS = {"instance_type", "vcpus", "memory_gib", "accelerator", "accelerator_count", "region", "price_hour_usd"}
PRICING_MODELS = ("on_demand", "spot", "committed_1y", "committed_3y")


def _dec(text: str | None) -> Decimal | None:
    if text is None or str(text).strip() == "":
        return None
    try:
        return Decimal(str(text).strip())
    except InvalidOperation:
        raise AdapterError(f"price {text!r} is not a number") from None


@dataclass
class CatalogAdapter:
    partner: str
    source: str  # a file path or an http(s) URL
    format: str = "skypilot"  # or "gcp"
    regions: frozenset[str] = frozenset()  # empty = all
    instance_types: frozenset[str] = frozenset()  # empty = all
    max_per_type: int = 1
    pricing_model: str = "on_demand"
    currency: str = "USD"
    fx: FxTable = field(default_factory=FxTable)
    rate_card: RateCard = field(default_factory=RateCard)
    tags: tuple[str, ...] = ()
    fetcher: HttpFetcher = field(default_factory=HttpFetcher)

    def __post_init__(self) -> None:
        if self.format not in ("skypilot", "gcp"):
            raise ValueError(f"catalog format {self.format!r} unknown; use skypilot or gcp")
        if self.pricing_model not in PRICING_MODELS:
            raise ValueError(f"pricing model {self.pricing_model!r} unknown; use one of {', '.join(PRICING_MODELS)}")
        if self.max_per_type < 1:
            raise ValueError("max_per_type must be >= 1")

    async def _read(self) -> str:
        if self.source.startswith(("http://", "https://")):
            async with aiohttp.ClientSession() as session:
                return (await self.fetcher.get(session, self.source)).decode("utf-8", "replace")
        path = Path(self.source)
        if not path.is_file():
            raise AdapterError(f"catalog file {path} does not exist")
        return path.read_text()

    async def snapshot(self) -> list[DiscoveredResource]:
        return list(self.parse(await self._read()))

    def parse(self, text: str) -> Iterator[DiscoveredResource]:
        reader = csv.DictReader(io.StringIO(text))
        need = SKYPILOT_COLUMNS if self.format == "skypilot" else GCP_COLUMNS
        missing = need - set(reader.fieldnames or ())
        if missing:
            raise AdapterError(f"{self.source}: not a {self.format} catalog, missing columns {sorted(missing)}")
        seen: set[tuple[str, str]] = set()
        rows: Iterable[dict[str, str]] = reader
        for lineno, row in enumerate(rows, 2):
            try:
                offer = self._offer(row)
            except (QuantityError, AdapterError, ValueError) as exc:
                raise AdapterError(f"{self.source}:{lineno}: {exc}") from None
            if offer is None:
                continue
            itype, region, spec = offer
            # Catalogs list a type once per zone; the partner's offer is per region.
            if (itype, region) in seen:
                continue
            seen.add((itype, region))
            for n in range(self.max_per_type):
                yield DiscoveredResource(f"{self.partner}/{region}/{itype}/{n}", spec)

    def _offer(self, row: dict[str, str]) -> tuple[str, str, ResourceSpec] | None:
        if self.format == "skypilot":
            itype, region = row["InstanceType"], row["Region"]
            vcpu, mem = parse_cpu(row["vCPUs"] or 0), gib(row["MemoryGiB"] or 0)
            gpus = int(float(row.get("AcceleratorCount") or 0))
            gpu_model = row.get("AcceleratorName") or ""
            zone = row.get("AvailabilityZone") or ""
            prices = {"on_demand": _dec(row["Price"]), "spot": _dec(row.get("SpotPrice"))}
            storage = 0
        else:
            itype, region = row["instance_type"], row["region"]
            vcpu, mem = parse_cpu(row["vcpus"] or 0), gib(row["memory_gib"] or 0)
            gpus = int(float(row.get("accelerator_count") or 0))
            gpu_model = row.get("accelerator") or ""
            zone = ""
            storage = gib(row.get("local_ssd_gib") or 0)
            y1, y3 = _dec(row.get("month_1y_cud_usd")), _dec(row.get("month_3y_cud_usd"))
            prices = {
                "on_demand": _dec(row["price_hour_usd"]),
                "spot": _dec(row.get("spot_price_hour_usd")),
                "committed_1y": to_hourly(y1, "month") if y1 else None,
                "committed_3y": to_hourly(y3, "month") if y3 else None,
            }
        if self.regions and region not in self.regions:
            return None
        if self.instance_types and itype not in self.instance_types:
            return None
        catalog_price = prices.get(self.pricing_model)
        if catalog_price is None and itype not in self.rate_card.instance_hour:
            return None  # not offered under this pricing model
        price = self.fx.to_base(
            self.rate_card.price(itype, vcpu, mem, gpus, catalog_price), self.currency)
        model = {"on_demand": PricingModel.on_demand, "spot": PricingModel.spot}.get(
            self.pricing_model, PricingModel.committed)
        spec = ResourceSpec(
            provider=self.partner, kind="vm", instance_type=itype, region=region, zone=zone,
            capacity=Capacity(vcpu=vcpu, memory_bytes=mem, storage_bytes=storage, gpu=gpus),
            gpu_model=gpu_model if gpus else "", tags=sorted(set(self.tags)), pricing_model=model,
            price_per_hour=price, currency=self.fx.base,
        )
        return itype, region, spec
