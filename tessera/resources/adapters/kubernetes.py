"""A partner's Kubernetes cluster: its nodes as resources, through the official client.

List, then watch from the list's resourceVersion (the informer pattern). Capacity is
``status.allocatable`` (what pods can actually get), falling back to ``capacity``.
Region, zone and instance type come from the well-known topology labels; GPUs from
``nvidia.com/gpu``; compliance tags from ``tessera.io/compliance-<tag>=true`` labels and
data residency from ``tessera.io/residency``; NoSchedule/NoExecute taints become
``taint:<key>`` tags (the scheduler treats them as not placeable unless tolerated). The
Ready condition is reported as readiness for the health monitor.

Kubernetes does not price nodes, so a partner cluster needs a rate card (per
instance-type or per unit).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from tessera.pricing.rates import FxTable, PricingError, RateCard
from tessera.schemas import Capacity, PricingModel, ResourceSpec

from ..model import AdapterError, DiscoveredResource
from ..quantities import QuantityError, parse_bytes, parse_cpu

REGION = "topology.kubernetes.io/region"
ZONE = "topology.kubernetes.io/zone"
INSTANCE_TYPE = "node.kubernetes.io/instance-type"
GPU = "nvidia.com/gpu"
GPU_PRODUCT = "nvidia.com/gpu.product"
COMPLIANCE_PREFIX = "tessera.io/compliance-"
RESIDENCY = "tessera.io/residency"


def _get(obj: Any, *path: str) -> Any:
    """Walk attributes of client models (or keys of dicts) without caring which it is."""
    for p in path:
        if obj is None:
            return None
        obj = obj.get(p) if isinstance(obj, dict) else getattr(obj, p, None)
    return obj


def core_api(server: str, token: str = "", verify_tls: bool = True, ca_file: str = "",
             retries: int | None = None) -> Any:
    """The official client's CoreV1Api for a cluster, with a bearer token. The client is
    imported here, when a cluster is first used (it costs about a second of start-up); the
    same holds for the imports below."""
    from kubernetes import client

    cfg = client.Configuration()
    cfg.host = server.rstrip("/")
    cfg.verify_ssl = verify_tls
    if ca_file:
        cfg.ssl_ca_cert = ca_file
    if token:
        cfg.api_key = {"authorization": token}
        cfg.api_key_prefix = {"authorization": "Bearer"}
    if retries is not None:
        cfg.retries = retries
    return client.CoreV1Api(client.ApiClient(cfg))


@dataclass
class KubernetesAdapter:
    partner: str
    server: str
    token: str = field(default="", repr=False)   # a secret: never in repr or logs
    verify_tls: bool = True
    ca_file: str = ""
    timeout_s: float = 10.0
    currency: str = "USD"
    fx: FxTable = field(default_factory=FxTable)
    rate_card: RateCard = field(default_factory=RateCard)
    pricing_model: PricingModel = PricingModel.on_demand
    _api: Any = field(default=None, repr=False)

    def _core(self) -> Any:
        if self._api is None:
            # retries are the discovery loop's job, with backoff and metrics
            self._api = core_api(self.server, self.token, self.verify_tls, self.ca_file, retries=0)
        return self._api

    # -- normalization ---------------------------------------------------------
    def node_to_resource(self, node: Any) -> DiscoveredResource:
        name = _get(node, "metadata", "name")
        if not name:
            raise AdapterError("node without metadata.name")
        labels = _get(node, "metadata", "labels") or {}
        alloc = _get(node, "status", "allocatable") or _get(node, "status", "capacity") or {}
        try:
            vcpu = parse_cpu(alloc.get("cpu", 0))
            mem = parse_bytes(alloc.get("memory", 0))
            storage = parse_bytes(alloc.get("ephemeral-storage", 0))
            gpus = int(parse_cpu(alloc.get(GPU, 0)))
        except QuantityError as exc:
            raise AdapterError(f"node {name}: {exc}") from None
        itype = labels.get(INSTANCE_TYPE, "")
        tags = {k[len(COMPLIANCE_PREFIX):] for k, v in labels.items()
                if k.startswith(COMPLIANCE_PREFIX) and str(v).lower() in ("true", "1", "yes")}
        if labels.get(RESIDENCY):
            tags.add(f"residency:{labels[RESIDENCY]}")
        for taint in _get(node, "spec", "taints") or []:
            if _get(taint, "effect") in ("NoSchedule", "NoExecute"):
                tags.add(f"taint:{_get(taint, 'key')}")
        ready = None
        for cond in _get(node, "status", "conditions") or []:
            if _get(cond, "type") == "Ready":
                ready = _get(cond, "status") == "True"
        if _get(node, "spec", "unschedulable"):
            ready = False
        try:
            price = self.fx.to_base(self.rate_card.price(itype, vcpu, mem, gpus, None), self.currency)
        except PricingError as exc:
            raise AdapterError(f"node {name}: {exc}; add a rate card for partner {self.partner!r}") from None
        spec = ResourceSpec(
            provider=self.partner, kind="node", instance_type=itype, region=labels.get(REGION, ""),
            zone=labels.get(ZONE, ""), capacity=Capacity(vcpu=vcpu, memory_bytes=mem, storage_bytes=storage, gpu=gpus),
            gpu_model=labels.get(GPU_PRODUCT, "") if gpus else "", tags=sorted(tags),
            labels={k: str(v) for k, v in labels.items() if len(k) < 128}, pricing_model=self.pricing_model,
            price_per_hour=price, currency=self.fx.base,
        )
        return DiscoveredResource(f"{self.partner}/{name}", spec, ready)

    # -- listing and watching --------------------------------------------------
    def _list_blocking(self) -> tuple[list[DiscoveredResource], str]:
        from kubernetes.client.exceptions import ApiException

        try:
            nodes = self._core().list_node(_request_timeout=self.timeout_s)
        except ApiException as exc:
            raise AdapterError(f"Kubernetes API {self.server}: HTTP {exc.status} {exc.reason}") from None
        except Exception as exc:  # urllib3 timeouts, connection errors, bad JSON
            raise AdapterError(f"Kubernetes API {self.server}: {type(exc).__name__}: {exc}") from None
        return [self.node_to_resource(n) for n in nodes.items or []], _get(nodes, "metadata", "resource_version") or ""

    async def list_nodes(self) -> tuple[list[DiscoveredResource], str]:
        return await asyncio.to_thread(self._list_blocking)

    async def snapshot(self) -> list[DiscoveredResource]:
        return (await self.list_nodes())[0]

    async def watch(self, resource_version: str, timeout_s: int = 60) -> AsyncIterator[tuple[str, DiscoveredResource]]:
        """Yield (ADDED|MODIFIED|DELETED, resource) as the server sends them, until it ends the watch."""
        from kubernetes import watch

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any] | BaseException | None] = asyncio.Queue()

        def pump() -> None:
            # The client's watch is blocking: run it in a thread and hand events over.
            try:
                for ev in watch.Watch().stream(self._core().list_node, resource_version=resource_version,
                                               timeout_seconds=timeout_s,
                                               _request_timeout=timeout_s + self.timeout_s):
                    loop.call_soon_threadsafe(queue.put_nowait, (ev["type"], ev["object"]))
                loop.call_soon_threadsafe(queue.put_nowait, None)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        task = loop.run_in_executor(None, pump)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise AdapterError(f"Kubernetes watch {self.server}: {type(item).__name__}: {item}")
                kind, obj = item
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    yield kind, self.node_to_resource(obj)
        finally:
            # A consumer that stops early leaves the thread to end at the watch timeout.
            task.add_done_callback(lambda t: t.exception())
