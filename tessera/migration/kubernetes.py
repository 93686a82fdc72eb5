"""The Kubernetes executor: moves an allocation's pods between nodes of a partner cluster
with the official client.

An allocation's pods carry the label ``tessera.io/allocation`` (its id, made label-safe);
resource ids are ``<partner>/<node name>`` (as discovery names them). For each pod of
the allocation on the source node:

* reserve_target: create a replacement pod, the source's spec bound to the target node
  (``spec.nodeName``: placed without the cluster's scheduler, as Tessera decided), named
  from the source pod and the migration id, labelled ``tessera.io/role=standby``;
* sync: wait until every replacement is Ready (the application's own readiness probe
  says its state has arrived);
* cut_over: label the replacements ``tessera.io/role=active`` and the sources
  ``draining``: a Service selecting ``role=active`` sends traffic to the new pods;
* release_source: remove the source pods through the **Eviction API**, so the cluster's
  PodDisruptionBudgets hold: an eviction they forbid (HTTP 429) fails the step, which the
  state machine retries; a pod already gone is fine;
* rollback: delete the replacements and label the sources ``active`` again.

Idempotent per migration: a replacement that exists (409) is kept, labels are set not
toggled, an evicted pod (404) counts as released. The replacement drops the source's
``ownerReferences`` (its controller would otherwise count it against its replicas and
delete one); whoever manages the workload adopts it by the allocation label.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from dataclasses import dataclass, field
from typing import Any

from tessera.resources.adapters.kubernetes import core_api

from .machine import Migration, StepFailed

ALLOCATION = "tessera.io/allocation"
ROLE = "tessera.io/role"
MIGRATION = "tessera.io/migration"


def label_value(text: str) -> str:
    """A Kubernetes label value for an id: at most 63 of [A-Za-z0-9-_.], alphanumeric at
    both ends (a long id keeps a hash of itself)."""
    v = re.sub(r"[^A-Za-z0-9_.-]", "-", text).strip("-_.")
    if len(v) > 63:
        v = v[:54].rstrip("-_.") + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return v or "x"


def node_of(resource_id: str) -> str:
    return resource_id.split("/", 1)[1] if "/" in resource_id else resource_id


@dataclass
class KubernetesExecutor:
    server: str
    namespace: str = "default"
    token: str = field(default="", repr=False)   # a secret: never in repr or logs
    verify_tls: bool = True
    ca_file: str = ""
    ready_timeout_s: float = 120.0
    poll_s: float = 0.5
    _api: Any = field(default=None, repr=False)

    def _core(self) -> Any:
        if self._api is None:
            self._api = core_api(self.server, self.token, self.verify_tls, self.ca_file)
        return self._api

    async def _call(self, fn: str, *args: Any, ok: tuple[int, ...] = (), **kw: Any) -> Any:
        """One API call off the event loop; HTTP statuses in ``ok`` return None."""
        from kubernetes.client.exceptions import ApiException

        api = self._core()
        try:
            return await asyncio.to_thread(getattr(api, fn), *args, **kw)
        except ApiException as exc:
            if exc.status in ok:
                return None
            reason = exc.reason or ""
            raise StepFailed(f"Kubernetes {fn}: HTTP {exc.status} {reason}".strip()) from None
        except OSError as exc:     # urllib3 connection errors derive from OSError
            raise StepFailed(f"Kubernetes {fn}: {exc}") from None

    async def _pods(self, m: Migration, node: str) -> list[Any]:
        pods = await self._call("list_namespaced_pod", self.namespace,
                                label_selector=f"{ALLOCATION}={label_value(m.allocation_id)}")
        return sorted((p for p in pods.items if p.spec.node_name == node and not p.metadata.deletion_timestamp),
                      key=lambda p: p.metadata.name)

    def _replacement_name(self, source_pod: str, m: Migration) -> str:
        suffix = hashlib.sha1(f"{m.migration_id}/{source_pod}".encode()).hexdigest()[:8]
        return f"{source_pod[:53].rstrip('-.')}-{suffix}"

    async def _sources(self, m: Migration) -> list[Any]:
        pods = [p for p in await self._pods(m, node_of(m.source))
                if (p.metadata.labels or {}).get(MIGRATION) != label_value(m.migration_id)]
        return pods[:m.replicas] if m.replicas else pods

    async def reserve_target(self, m: Migration) -> None:
        sources = await self._sources(m)
        if not sources:
            existing = await self._pods(m, node_of(m.target))
            if any((p.metadata.labels or {}).get(MIGRATION) == label_value(m.migration_id) for p in existing):
                return     # sources already gone (a resumed migration past release): nothing to create
            raise StepFailed(f"no pod of allocation {m.allocation_id} on node {node_of(m.source)}")
        ser = self._core().api_client.sanitize_for_serialization
        for pod in sources:
            doc = ser(pod)
            meta = doc.get("metadata", {})
            labels = dict(meta.get("labels") or {})
            labels.update({ROLE: "standby", MIGRATION: label_value(m.migration_id)})
            spec = dict(doc.get("spec") or {})
            spec["nodeName"] = node_of(m.target)
            body = {"apiVersion": "v1", "kind": "Pod", "spec": spec,
                    "metadata": {"name": self._replacement_name(meta["name"], m), "namespace": self.namespace,
                                 "labels": labels, "annotations": dict(meta.get("annotations") or {})}}
            await self._call("create_namespaced_pod", self.namespace, body, ok=(409,))   # 409: created before

    async def _replacements(self, m: Migration) -> list[Any]:
        return [p for p in await self._pods(m, node_of(m.target))
                if (p.metadata.labels or {}).get(MIGRATION) == label_value(m.migration_id)]

    async def sync(self, m: Migration) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            pods = await self._replacements(m)
            if not pods:
                raise StepFailed("the replacement pods are gone")
            if any((p.status.phase or "") in ("Failed", "Succeeded") for p in pods):
                raise StepFailed("a replacement pod stopped before it was Ready")
            if all(any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
                   for p in pods):
                return
            if time.monotonic() > deadline:
                raise StepFailed(f"the replacement pods were not Ready within {self.ready_timeout_s:g} s")
            await asyncio.sleep(self.poll_s)

    async def _label(self, pods: list[Any], role: str) -> None:
        for p in pods:
            await self._call("patch_namespaced_pod", p.metadata.name, self.namespace,
                             {"metadata": {"labels": {ROLE: role}}}, ok=(404,))

    async def cut_over(self, m: Migration) -> None:
        await self._label(await self._replacements(m), "active")
        await self._label(await self._sources(m), "draining")

    async def release_source(self, m: Migration) -> None:
        from kubernetes import client

        for p in await self._sources(m):
            body = client.V1Eviction(metadata=client.V1ObjectMeta(name=p.metadata.name, namespace=self.namespace))
            # 404: already evicted. 429: a PodDisruptionBudget forbids it now (the step is retried).
            await self._call("create_namespaced_pod_eviction", p.metadata.name, self.namespace, body, ok=(404,))

    async def rollback(self, m: Migration) -> None:
        for p in await self._replacements(m):
            await self._call("delete_namespaced_pod", p.metadata.name, self.namespace, ok=(404,))
        await self._label(await self._sources(m), "active")
