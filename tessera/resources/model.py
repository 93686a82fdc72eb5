"""What a discovery adapter reports: one normalized resource and whether it is ready."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from tessera.schemas import ResourceSpec


@dataclass(frozen=True)
class DiscoveredResource:
    resource_id: str
    spec: ResourceSpec
    #: The partner's own readiness signal (Kubernetes Ready condition); None if it has none.
    ready: bool | None = None

    def fingerprint(self) -> str:
        """Stable digest of the spec: equal digests mean nothing changed."""
        return hashlib.sha1(self.spec.model_dump_json().encode()).hexdigest()[:16]

    def as_json_line(self) -> dict:
        """The flat record `tessera resources discover --json` prints."""
        s = self.spec
        return {
            "id": self.resource_id,
            "provider": s.provider,
            "kind": s.kind,
            "instance_type": s.instance_type,
            "region": s.region,
            "zone": s.zone,
            "vcpu": s.capacity.vcpu,
            "memory_bytes": s.capacity.memory_bytes,
            "storage_bytes": s.capacity.storage_bytes,
            "network_gbps": s.capacity.network_gbps,
            "gpu": s.capacity.gpu,
            "gpu_model": s.gpu_model,
            "pricing_model": s.pricing_model.value,
            "price_per_hour": format(s.price_per_hour, "f"),
            "currency": s.currency,
            "tags": list(s.tags),
            "healthy": self.ready if self.ready is not None else True,
        }


class AdapterError(RuntimeError):
    """A partner listing failed (HTTP error, timeout, malformed data). The last good view stays."""
