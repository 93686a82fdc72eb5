"""Readers for the real traces and catalogs shipped in ``data/`` (see data/SOURCES.md).

They turn rows into Tessera events with units normalized once, here: millicores to
cores, MiB / GiB to bytes, prices to Decimal.
"""

from __future__ import annotations

import csv
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Iterable, Iterator

from tessera.pricing.rates import OwnCost
from tessera.resources.adapters.catalog import CatalogAdapter
from tessera.resources.adapters.own import OwnInventoryAdapter
from tessera.resources.model import DiscoveredResource
from tessera.schemas import Capacity, ResourceDiscovered, SlaTier, WorkloadRequest

#: The demo's and benchmarks' own data-center cost per node: $12,000 capex (+$9,000 per GPU)
#: over 48 months, plus $0.15/h opex (power, space, staff).
OWN_COST = OwnCost(capex=Decimal("12000"), amortization_months=48, opex_per_hour=Decimal("0.15"),
                   capex_per_gpu=Decimal("9000"))

#: The traces and catalogs live in the repository's ``data/`` (3 MB, not in the wheel).
DATA_DIR = Path(__file__).resolve().parents[2] / "data"
MIB = 1 << 20

#: Alibaba v2023 QoS class -> SLA tier. Kubernetes' Guaranteed class (requests equal to
#: limits, the strictest) gets the top tier; LS, Koordinator's shared-pool class for
#: ordinary latency-sensitive services (below its reserved and exclusive LSR and LSE),
#: gold; best-effort pods the bottom one. One mapping for the demo and the benchmarks.
QOS_TIER = {"Guaranteed": SlaTier.platinum, "LS": SlaTier.gold, "Burstable": SlaTier.silver, "BE": SlaTier.bronze}


def _rows(relpath: str) -> Iterator[dict[str, str]]:
    path = DATA_DIR / relpath
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; it ships with Tessera's source tree (data/)")
    with path.open(newline="") as f:
        yield from csv.DictReader(f)


def _events(listing: Iterable[DiscoveredResource], source: str) -> Iterator[ResourceDiscovered]:
    for r in listing:
        yield ResourceDiscovered(resource_id=r.resource_id, spec=r.spec, source=source)


def own_nodes(limit: int | None = None, cost: OwnCost = OWN_COST, region: str = "own-dc-1"
              ) -> Iterator[ResourceDiscovered]:
    """Alibaba GPU-cluster nodes as the provider's own data center (amortized capex + opex)."""
    adapter = OwnInventoryAdapter(str(DATA_DIR / "alibaba_clusterdata_gpu_v2023/openb_node_list_all_node.csv"),
                                  cost, region=region, limit=limit)
    return _events(adapter.listing(), "catalog://alibaba-v2023")


def digitalocean_vms(limit: int | None = None) -> Iterator[ResourceDiscovered]:
    """SkyPilot-format DigitalOcean catalog rows as partner resources (one per type/region)."""
    path = DATA_DIR / "digitalocean_skypilot_catalog/do_vms.csv"
    listing = list(CatalogAdapter("digitalocean", str(path)).parse(path.read_text()))
    return _events(listing[:limit], "catalog://skypilot/do")


def gcp_instances(limit: int | None = None, region: str | None = None) -> Iterator[ResourceDiscovered]:
    """GCP catalog rows (Cyclenerd format) as partner resources, on-demand prices."""
    path = DATA_DIR / "gcp_cyclenerd_pricing/gcp_compute_instance_prices.csv"
    adapter = CatalogAdapter("gcp", str(path), format="gcp", regions=frozenset({region}) if region else frozenset(),
                             tags=("hipaa",))
    return _events(list(adapter.parse(path.read_text()))[:limit], "catalog://cyclenerd/gcp")


def alibaba_pod_requests(start: datetime, limit: int | None = None, time_scale: float = 1.0, id_prefix: str = ""
                         ) -> Iterator[WorkloadRequest]:
    """Alibaba v2023 pods as workload requests, arrival times and lifetimes compressed by ``time_scale``."""
    for i, r in enumerate(_rows("alibaba_clusterdata_gpu_v2023/openb_pod_list_default.csv")):
        if limit is not None and i >= limit:
            return
        created = float(r["creation_time"] or 0)
        deleted = float(r["deletion_time"] or 0)
        yield WorkloadRequest(
            event_id=f"{id_prefix}{r['name']}",
            event_time=start + timedelta(seconds=created / time_scale),
            request_id=f"{id_prefix}{r['name']}",
            tenant="alibaba-openb",
            sla_tier=QOS_TIER.get(r["qos"], SlaTier.silver),
            per_replica=Capacity(vcpu=int(r["cpu_milli"]) / 1000, memory_bytes=int(r["memory_mib"]) * MIB,
                                 gpu=int(r["num_gpu"] or 0)),
            expected_duration_seconds=max((deleted - created) / time_scale, 1.0) if deleted else None,
        )
