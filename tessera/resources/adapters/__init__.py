"""Discovery adapters: each turns one partner's listing into DiscoveredResource values.

Interface (``DiscoveryAdapter``): ``partner`` and ``async snapshot() -> list[DiscoveredResource]``,
the partner's complete current listing, or ``AdapterError``. Adapters that can stream
changes (Kubernetes) also offer ``async watch(...)``.
"""

from typing import Protocol

from ..model import DiscoveredResource


class DiscoveryAdapter(Protocol):
    partner: str

    async def snapshot(self) -> list[DiscoveredResource]: ...
