"""Readers for the real traces and catalogs shipped in ``data/`` (see data/SOURCES.md).

They turn rows into Tessera events with units normalized once, here: millicores to
cores, MiB / GiB to bytes, prices to Decimal.
"""

from __future__ import annotations

import csv
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Iterator

from schemas import Capacity, PricingModel, ResourceDiscovered, ResourceSpec, SlaTier, WorkloadRequest

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
MIB = 1 << 20
GIB = 1 << 30

#: Alibaba v2023 QoS class -> SLA tier. LS (latency-sensitive) pods get the top tier;
#: best-effort pods the bottom one.
QOS_TIER = {"LS": SlaTier.platinum, "Guaranteed": SlaTier.gold, "Burstable": SlaTier.silver, "BE": SlaTier.bronze}


def _rows(relpath: str) -> Iterator[dict[str, str]]:
    path = DATA_DIR / relpath
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; it ships with Tessera's source tree (data/)")
    with path.open(newline="") as f:
        yield from csv.DictReader(f)


def own_nodes(limit: int | None = None, cost_per_node_hour: Decimal = Decimal("0.49"), region: str = "own-dc-1"
              ) -> Iterator[ResourceDiscovered]:
    """Alibaba GPU-cluster nodes as the provider's own data center."""
    for i, r in enumerate(_rows("alibaba_clusterdata_gpu_v2023/openb_node_list_all_node.csv")):
        if limit is not None and i >= limit:
            return
        gpus = int(r["gpu"] or 0)
        yield ResourceDiscovered(
            resource_id=f"own/{r['sn']}",
            source="catalog://alibaba-v2023",
            spec=ResourceSpec(
                provider="own",
                kind="node",
                instance_type=r["model"] or "cpu-node",
                region=region,
                capacity=Capacity(vcpu=int(r["cpu_milli"]) / 1000, memory_bytes=int(r["memory_mib"]) * MIB, gpu=gpus),
                gpu_model=r["model"] if gpus else "",
                tags=["hipaa", "pci", "residency:own"],
                pricing_model=PricingModel.own,
                price_per_hour=cost_per_node_hour,
            ),
        )


def digitalocean_vms(limit: int | None = None) -> Iterator[ResourceDiscovered]:
    """SkyPilot-format DigitalOcean catalog rows as partner resources (one per type/region)."""
    for i, r in enumerate(_rows("digitalocean_skypilot_catalog/do_vms.csv")):
        if limit is not None and i >= limit:
            return
        yield ResourceDiscovered(
            resource_id=f"digitalocean/{r['Region']}/{r['InstanceType']}",
            source="catalog://skypilot/do",
            spec=ResourceSpec(
                provider="digitalocean",
                kind="vm",
                instance_type=r["InstanceType"],
                region=r["Region"],
                capacity=Capacity(vcpu=float(r["vCPUs"]), memory_bytes=int(float(r["MemoryGiB"]) * GIB),
                                  gpu=int(float(r["AcceleratorCount"] or 0))),
                gpu_model=r["AcceleratorName"],
                price_per_hour=Decimal(r["Price"]),
            ),
        )


def gcp_instances(limit: int | None = None, region: str | None = None) -> Iterator[ResourceDiscovered]:
    n = 0
    for r in _rows("gcp_cyclenerd_pricing/gcp_compute_instance_prices.csv"):
        if region and r["region"] != region:
            continue
        if limit is not None and n >= limit:
            return
        if not r["price_hour_usd"]:
            continue
        n += 1
        yield ResourceDiscovered(
            resource_id=f"gcp/{r['region']}/{r['instance_type']}",
            source="catalog://cyclenerd/gcp",
            spec=ResourceSpec(
                provider="gcp",
                kind="vm",
                instance_type=r["instance_type"],
                region=r["region"],
                capacity=Capacity(vcpu=float(r["vcpus"]), memory_bytes=int(float(r["memory_gib"]) * GIB),
                                  storage_bytes=int(float(r["local_ssd_gib"] or 0) * GIB),
                                  gpu=int(float(r["accelerator_count"] or 0))),
                gpu_model=r["accelerator"],
                tags=["hipaa"],
                price_per_hour=Decimal(r["price_hour_usd"]),
            ),
        )


def alibaba_pod_requests(start: datetime, limit: int | None = None, time_scale: float = 1.0, id_prefix: str = ""
                         ) -> Iterator[WorkloadRequest]:
    """Alibaba v2023 pods as workload requests, arrival times compressed by ``time_scale``."""
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
            expected_duration_seconds=max(deleted - created, 1.0) if deleted else None,
        )
