"""Turn successive listings of a partner into resource events, keeping the last good view.

``diff`` is pure: the previous view and a new complete listing in, events out
(discovered for new ids, updated for changed specs, removed for ids that vanished).
``Discoverer`` polls one adapter: on success it diffs and publishes; on failure it logs,
counts (``tessera_discovery_failures_total``) and keeps the last good view, so a flaky
partner API never removes resources nor crashes the loop.

Event ids are deterministic (resource id + spec fingerprint), so a re-published
listing after a restart produces the same ids and consumers drop the duplicates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Iterable, Mapping

from prometheus_client import Counter, Gauge

from tessera.schemas import Event, HealthSample, HealthStatus, ResourceDiscovered, ResourceRemoved, ResourceUpdated

from .compliance import screen
from .model import DiscoveredResource

log = logging.getLogger(__name__)

DISCOVERY_FAILURES = Counter("tessera_discovery_failures_total", "Failed partner listings", ["partner"])
DISCOVERY_SKIPPED = Counter("tessera_discovery_items_skipped_total", "Malformed partner items skipped",
                            ["partner"])
COMPLIANCE_DROPPED = Counter("tessera_discovery_compliance_tags_dropped_total",
                              "Compliance tags a partner reported outside its allow-list", ["partner"])
DISCOVERY_RESOURCES = Gauge("tessera_discovery_resources", "Resources in the partner's last good view", ["partner"])
DISCOVERY_LAST_SUCCESS = Gauge("tessera_discovery_last_success_timestamp", "Unix time of the last good listing",
                               ["partner"])


def diff(old: Mapping[str, DiscoveredResource], new: Iterable[DiscoveredResource], source: str = "",
         partial: bool = False) -> tuple[dict[str, DiscoveredResource], list[Event]]:
    """The new view and the events that turn ``old`` into it. A ``partial`` listing (some
    items could not be read) removes nothing: an unreadable item is not a vanished one."""
    view = {r.resource_id: r for r in new}
    if partial:
        view = {**old, **view}
    events: list[Event] = []
    for rid, r in view.items():
        before = old.get(rid)
        if before is None:
            events.append(ResourceDiscovered(event_id=f"disc:{rid}:{r.fingerprint()}", resource_id=rid,
                                             spec=r.spec, source=source))
        elif before.fingerprint() != r.fingerprint():
            events.append(ResourceUpdated(event_id=f"upd:{rid}:{r.fingerprint()}", resource_id=rid,
                                          spec=r.spec, source=source))
    for rid, r in old.items():
        if rid not in view:
            events.append(ResourceRemoved(event_id=f"rm:{rid}:{r.fingerprint()}", resource_id=rid,
                                          provider=r.spec.provider, reason=f"no longer listed by {source or 'partner'}"))
    return view, events


def readiness_samples(resources: Iterable[DiscoveredResource]) -> list[HealthSample]:
    """Health samples for resources whose partner reports readiness (e.g. Kubernetes Ready)."""
    return [
        HealthSample(resource_id=r.resource_id, ready=bool(r.ready),
                     status=HealthStatus.healthy if r.ready else HealthStatus.unhealthy,
                     detail="partner readiness")
        for r in resources if r.ready is not None
    ]


Publish = Callable[[list[Event]], Awaitable[None]]


@dataclass
class Discoverer:
    adapter: object  # a DiscoveryAdapter
    publish: Publish
    interval_s: float = 60.0
    source: str = ""
    view: dict[str, DiscoveredResource] = field(default_factory=dict)
    failures: int = 0
    healthy_listing: bool = False
    #: Compliance tags this partner's resources may carry (tessera.resources.compliance);
    #: None trusts the adapter (the operator's own inventory).
    compliance: frozenset[str] | None = None

    def _screen(self, listing: list[DiscoveredResource]) -> list[DiscoveredResource]:
        if self.compliance is None:
            return listing
        listing, dropped = screen(listing, self.compliance)
        if dropped:
            COMPLIANCE_DROPPED.labels(self.partner).inc(len(dropped))
            log.warning("partner %s reported compliance tags it is not allowed (dropped): %s", self.partner,
                        ", ".join(f"{rid}:{tag}" for rid, tag in dropped[:5]) + (" ..." if len(dropped) > 5 else ""))
        return listing

    @property
    def partner(self) -> str:
        return self.adapter.partner  # type: ignore[attr-defined]

    async def poll_once(self) -> list[Event]:
        try:
            listing = await self.adapter.snapshot()  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - whatever a partner sends, the other partners go on
            self.failures += 1
            DISCOVERY_FAILURES.labels(self.partner).inc()
            log.warning("discovery of partner %s failed (%s: %s); keeping its last good view of %d resources",
                        self.partner, type(exc).__name__, str(exc)[:300], len(self.view))
            return []
        listing = self._screen(list(listing))
        skipped = list(getattr(self.adapter, "last_skipped", ()))
        if skipped:
            DISCOVERY_SKIPPED.labels(self.partner).inc(len(skipped))
            log.warning("partner %s: %d malformed item(s) skipped, e.g. %s", self.partner, len(skipped), skipped[0])
        self.view, events = diff(self.view, listing, self.source or self.partner, partial=bool(skipped))
        DISCOVERY_RESOURCES.labels(self.partner).set(len(self.view))
        DISCOVERY_LAST_SUCCESS.labels(self.partner).set(time.time())
        events = [*events, *readiness_samples(listing)]
        if events:
            await self.publish(events)
        return events

    async def follow_watch(self, resource_version: str, timeout_s: int) -> int:
        """Apply a watch stream (Kubernetes informer pattern) to the view; returns events published."""
        sent = 0
        async for kind, r in self.adapter.watch(resource_version, timeout_s=timeout_s):  # type: ignore[attr-defined]
            r = self._screen([r])[0]
            new_view = dict(self.view)
            if kind == "DELETED":
                new_view.pop(r.resource_id, None)
            else:
                new_view[r.resource_id] = r
            self.view, events = diff(self.view, new_view.values(), self.source or self.partner)
            events = [*events, *readiness_samples([r] if kind != "DELETED" else [])]
            if events:
                await self.publish(events)
                sent += len(events)
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every ``interval_s``; adapters that can watch are followed between polls."""
        can_watch = hasattr(self.adapter, "watch") and hasattr(self.adapter, "list_nodes")
        while not stop.is_set():
            if can_watch:
                try:
                    listing, rv = await self.adapter.list_nodes()  # type: ignore[attr-defined]
                    listing = self._screen(list(listing))
                    self.view, events = diff(self.view, listing, self.source or self.partner)
                    events = [*events, *readiness_samples(listing)]
                    if events:
                        await self.publish(events)
                    await self.follow_watch(rv, timeout_s=int(self.interval_s))
                    continue  # the watch ended (server timeout): list again at once
                except Exception as exc:  # noqa: BLE001 - one partner's failure stops no other
                    self.failures += 1
                    DISCOVERY_FAILURES.labels(self.partner).inc()
                    log.warning("watching partner %s failed (%s: %s); keeping the last good view", self.partner,
                                type(exc).__name__, str(exc)[:300])
            else:
                await self.poll_once()
            try:
                await asyncio.wait_for(stop.wait(), self.interval_s)
            except asyncio.TimeoutError:
                pass
