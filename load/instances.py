"""Packing instances built from the real traces and catalogs in data/ (deterministic)."""

from __future__ import annotations

import csv
from decimal import Decimal

from tessera.app.datasets import DATA_DIR, OWN_COST, QOS_TIER
from tessera.scheduler.packing import PackRequest, PackResource


def _rows(rel: str) -> list[dict[str, str]]:
    with (DATA_DIR / rel).open(newline="") as f:
        return list(csv.DictReader(f))


def requests(n: int, dims: int = 4) -> list[PackRequest]:
    """Alibaba v2023 pods (cycled if n exceeds the trace): vCPU, memory GiB, GPUs, storage GiB.

    The trace has no storage column; each pod asks 10 GiB of storage per vCPU (4th dimension).
    """
    pods = _rows("alibaba_clusterdata_gpu_v2023/openb_pod_list_default.csv")
    out = []
    for i in range(n):
        p = pods[i % len(pods)]
        vcpu = int(p["cpu_milli"]) / 1000
        demand = (vcpu, int(p["memory_mib"]) / 1024, float(int(p["num_gpu"] or 0)), vcpu * 10)[:dims]
        out.append(PackRequest(f"{p['name']}#{i}", QOS_TIER.get(p["qos"], "silver").value, 1, demand, seq=i))
    return out


def resources(n: int, dims: int = 4) -> list[PackResource]:
    """Own nodes (Alibaba node list, priced at amortized capex + opex) then partner offers:
    GCP europe-west4 and DigitalOcean catalog rows, repeated as instances up to n."""
    out: list[PackResource] = []
    for r in _rows("alibaba_clusterdata_gpu_v2023/openb_node_list_all_node.csv"):
        vcpu, gpu = int(r["cpu_milli"]) / 1000, int(r["gpu"] or 0)
        cap = (vcpu, int(r["memory_mib"]) / 1024, float(gpu), 2000.0)[:dims]
        out.append(PackResource(f"own/{r['sn']}", "own", "own-dc-1", cap, cap, OWN_COST.per_hour(vcpu, gpu),
                                frozenset({"hipaa", "pci"})))
    offers = []
    for r in _rows("gcp_cyclenerd_pricing/gcp_compute_instance_prices.csv"):
        if r["region"] == "europe-west4" and r["price_hour_usd"]:
            vcpu = float(r["vcpus"])
            cap = (vcpu, float(r["memory_gib"]), float(r["accelerator_count"] or 0), max(vcpu * 20, 100.0))[:dims]
            offers.append(("gcp", r["instance_type"], "europe-west4", cap, Decimal(r["price_hour_usd"]),
                           frozenset({"hipaa"})))
    for r in _rows("digitalocean_skypilot_catalog/do_vms.csv"):
        vcpu = float(r["vCPUs"])
        cap = (vcpu, float(r["MemoryGiB"]), float(r["AcceleratorCount"] or 0), max(vcpu * 20, 100.0))[:dims]
        offers.append(("digitalocean", r["InstanceType"], r["Region"], cap, Decimal(r["Price"]), frozenset()))
    i = 0
    while len(out) < n:
        prov, itype, region, cap, price, tags = offers[i % len(offers)]
        out.append(PackResource(f"{prov}/{region}/{itype}/{i // len(offers)}", prov, region, cap, cap, price, tags))
        i += 1
    return out[:n]
