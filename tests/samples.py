"""One valid example of every event type (deterministic ids and times)."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from decimal import Decimal

import tessera.schemas as s

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
CAP = s.Capacity(vcpu=2.0, memory_bytes=8 << 30, storage_bytes=100 << 30, network_gbps=10.0, gpu=0)
SPEC = s.ResourceSpec(provider="gcp", instance_type="n2-standard-2", region="europe-west4", zone="europe-west4-a",
                      capacity=CAP, tags=["hipaa"], price_per_hour=Decimal("0.0971"))


def _mig(cls, **kw):
    return cls(event_id=f"m-{cls.__name__}", event_time=T0, migration_id="mig-1", allocation_id="alloc-1",
               source_resource_id="own/n1", target_resource_id="gcp/n2", target_provider="gcp", **kw)


_EVENTS = [
    s.ResourceDiscovered(event_id="e1", event_time=T0, resource_id="gcp/europe-west4/n2", spec=SPEC, source="catalog"),
    s.ResourceUpdated(event_id="e2", event_time=T0, resource_id="gcp/europe-west4/n2", spec=SPEC),
    s.ResourceRemoved(event_id="e3", event_time=T0, resource_id="gcp/europe-west4/n2", provider="gcp", reason="gone"),
    s.HealthSample(event_id="e4", event_time=T0, resource_id="own/n1", free=CAP),
    s.HealthChanged(event_id="e5", event_time=T0, resource_id="own/n1", status=s.HealthStatus.unhealthy,
                    reason="no heartbeat for 60s"),
    s.UsageSample(event_id="e6", event_time=T0, resource_id="own/n1", allocation_id="alloc-1", provider="own",
                  interval_seconds=300, used=CAP),
    s.WorkloadRequest(event_id="e7", event_time=T0, request_id="req-1", tenant="acme", sla_tier=s.SlaTier.gold,
                      replicas=3, per_replica=CAP, required_tags=["hipaa"], allowed_regions=["europe-west4"],
                      max_price_per_hour=Decimal("1.50"), spread_min=2, deadline=T0),
    s.ReleaseRequested(event_id="e7r", event_time=T0, request_id="req-1"),
    s.AllocationPlaced(event_id="e8", event_time=T0, request_id="req-1", allocation_id="alloc-1", per_replica=CAP,
                       placements=[s.Placement(resource_id="own/n1", provider="own", replicas=3,
                                               price_per_hour=Decimal("0.49"))]),
    s.AllocationQueued(event_id="e9", event_time=T0, request_id="req-1", position=4, reason="no capacity"),
    s.AllocationRejected(event_id="e10", event_time=T0, request_id="req-1", reason="deadline passed",
                         code=s.RejectReason.deadline_passed),
    s.AllocationReleased(event_id="e11", event_time=T0, request_id="req-1", allocation_id="alloc-1"),
    s.Forecast(event_id="e12", event_time=T0, series="pool=default/dim=vcpu", interval_seconds=300, model="hw",
               horizons=[s.HorizonForecast(step=1, interval_start=T0, quantiles={"0.05": 1.0, "0.5": 2.0, "0.95": 3.0})]),
    s.ExternalEvent(event_id="e13", event_time=T0, external_id="bf-2026", kind="sale", starts_at=T0, ends_at=T0),
    s.DemandSpike(event_id="e14", event_time=T0, series="pool=default/dim=vcpu", interval_start=T0, observed=9.0,
                  expected=3.0, score=4.2, external_ids=["bf-2026"]),
    s.AgreementUpdated(event_id="e14d", event_time=T0, partner_id="gcp",
                       agreement={"partner": "gcp", "currency": "USD", "rates": {"vcpu_hour": "0.031611"}}),
    s.DemandObservation(event_id="e14b", event_time=T0, group="tier=gold", observed_at=T0,
                        amounts={"vcpu": 6.0, "memory_gib": 24.0, "gpu": 0.0}, source_topic="tessera.requests.v1",
                        source_partition=2, source_offset=41),
    s.DemandInterval(event_id="e14c", event_time=T0, series="tier=gold/dim=vcpu", interval_start=T0,
                     interval_seconds=300, value=42.0),
    s.ProvisioningHint(event_id="e14e", event_time=T0, pool="default", needed_by=T0, peak_at=T0, arriving_vcpu=40.0,
                       free_in_service_vcpu=12.0, shortfall_vcpu=28.0, levels={"gold": 0.93},
                       suggested=[s.SuggestedResource(resource_id="gcp/europe-west4/n2", provider="gcp", vcpu=32.0,
                                                      price_per_hour=Decimal("1.55"))],
                       suggested_cost_per_hour=Decimal("1.55")),
    s.TuningDecision(event_id="e14f", event_time=T0, knob="headroom_quantile", context="hours=00-06", arm="0.95",
                     previous_arm="0.9", reward=-1.25, window_cost=Decimal("0.25"), window_misses=1,
                     window_seconds=300.0),
    _mig(s.MigrationPlanned, reason="consolidation", expected_saving_per_hour=Decimal("0.12")),
    _mig(s.MigrationProgress, step="sync"),
    _mig(s.MigrationDone, cut_over_at=T0),
    _mig(s.MigrationFailed, reason="target unhealthy"),
    s.BillingLine(event_id="e15", event_time=T0, line_id="gcp/2026-11/vcpu-hour", partner_id="gcp",
                  period_start=T0, period_end=T0, sku="n2-vcpu", unit="vcpu-hour", quantity=Decimal("10.5"),
                  rate=Decimal("0.031611"), amount=Decimal("0.3319155")),
    s.UsageLimitAlert(event_id="e16", event_time=T0, partner_id="gcp", period_start=T0, limit_name="monthly-spend",
                      threshold_pct=80, used=Decimal("800"), limit=Decimal("1000"), enforcement="hard"),
    s.DeadLetter(event_id="e17", event_time=T0, reason="not valid JSON", source_topic="tessera.requests.v1",
                 source_partition=0, source_offset=7, original_b64=base64.b64encode(b"not json").decode()),
    s.Checkpoint(event_id="e18", event_time=T0, owner="scheduler/global", checkpoint_id=3, chunk=0, chunks=1,
                 positions=[s.InputPosition(topic="tessera.allocations.v1", partition=0, offset=42)], payload_b64=base64.b64encode(b"state").decode()),
    s.FeedTick(event_id="e19", event_time=T0, shard=2),
]

SAMPLES: dict[str, s.Event] = {e.event_type: e for e in _EVENTS}
