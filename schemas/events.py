"""Event contracts for every Tessera topic (version 1).

One class per event type. Field names are the wire names. Units are fixed here, once:
vCPU in cores (float), memory / storage in bytes (int), network in Gbps, GPUs as a count,
durations in seconds, money as Decimal strings in ``currency`` per hour unless named
otherwise.
"""

from __future__ import annotations

from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Field, model_validator

from .base import (
    CONTRACT_CONFIG,
    INT64_MAX,
    MAX_ITEMS,
    MAX_TEXT,
    Event,
    Identifier,
    Integer,
    Money,
    NonEmptyStr,
    Number,
    Price,
    Quantity,
    UtcTime,
)

#: A tag, region or provider name as a request or resource lists it.
Tag = Annotated[str, Field(min_length=1, max_length=128)]
#: At most this many tags (regions, providers) in one list.
MAX_TAGS = 64
YEAR_S = 366 * 86400.0


class _Part(BaseModel):
    """A nested value object (not an event)."""

    model_config = CONTRACT_CONFIG


# ---------------------------------------------------------------------------
# Shared value objects
# ---------------------------------------------------------------------------
class SlaTier(str, Enum):
    """Service tiers, best first: the order is the scheduling priority."""

    platinum = "platinum"
    gold = "gold"
    silver = "silver"
    bronze = "bronze"


#: Tier names best first, and each name's rank (0 = platinum): the one definition.
TIERS = tuple(t.value for t in SlaTier)
TIER_RANK = {t: i for i, t in enumerate(TIERS)}


class PricingModel(str, Enum):
    on_demand = "on_demand"
    spot = "spot"
    committed = "committed"
    own = "own"  # the provider's own data center: amortized capex + opex


class Capacity(_Part):
    """A resource's size, or a replica's demand, in base units."""

    vcpu: float = Field(0.0, ge=0, le=1e6, description="cores")
    memory_bytes: Integer = Field(0, ge=0, le=1 << 60)
    storage_bytes: Integer = Field(0, ge=0, le=1 << 60)
    network_gbps: float = Field(0.0, ge=0, le=1e6)
    gpu: Integer = Field(0, ge=0, le=100_000, description="whole GPUs")


# ---------------------------------------------------------------------------
# Resource Abstraction Layer
# ---------------------------------------------------------------------------
class ResourceSpec(_Part):
    provider: Identifier = Field(description="'own' or the partner id that offers it")
    kind: Literal["node", "vm", "pool"] = "node"
    instance_type: str = ""
    region: str = ""
    zone: str = ""
    capacity: Capacity
    gpu_model: str = ""
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS,
                            description="compliance and placement tags, e.g. hipaa, pci")
    labels: dict[str, str] = Field(default_factory=dict, max_length=MAX_ITEMS)
    pricing_model: PricingModel = PricingModel.on_demand
    price_per_hour: Price = Field(description="whole-resource price per hour in `currency`")
    marginal_price_per_hour: Price | None = Field(
        None, description="own capacity in service: what running it costs per hour (opex, power); "
                          "amortized capex is sunk, so placement decisions weigh this, reports the full price")
    currency: str = Field("USD", min_length=3, max_length=3)


class ResourceDiscovered(Event):
    event_type: Literal["resource.discovered"] = "resource.discovered"
    KEY: ClassVar[str] = "resource_id"
    resource_id: Identifier
    spec: ResourceSpec
    source: str = Field("", description="adapter that discovered it, e.g. kubernetes://partner-a")


class ResourceUpdated(Event):
    event_type: Literal["resource.updated"] = "resource.updated"
    KEY: ClassVar[str] = "resource_id"
    resource_id: Identifier
    spec: ResourceSpec
    source: str = ""


class ResourceRemoved(Event):
    event_type: Literal["resource.removed"] = "resource.removed"
    KEY: ClassVar[str] = "resource_id"
    resource_id: Identifier
    provider: Identifier
    reason: str = ""


class HealthStatus(str, Enum):
    healthy = "healthy"
    unhealthy = "unhealthy"
    unknown = "unknown"


class HealthSample(Event):
    """A heartbeat from (or about) one resource, with what it has free."""

    event_type: Literal["health.sample"] = "health.sample"
    KEY: ClassVar[str] = "resource_id"
    resource_id: Identifier
    status: HealthStatus = HealthStatus.healthy
    ready: bool = True
    free: Capacity | None = None
    detail: str = ""


class HealthChanged(Event):
    """The health monitor's verdict changed (after hysteresis)."""

    event_type: Literal["health.changed"] = "health.changed"
    KEY: ClassVar[str] = "resource_id"
    resource_id: Identifier
    status: HealthStatus
    reason: str = ""


class UsageSample(Event):
    """Measured use of a resource (optionally by one allocation) over an interval."""

    event_type: Literal["usage.sample"] = "usage.sample"
    KEY: ClassVar[str] = "resource_id"
    resource_id: Identifier
    allocation_id: str = Field("", description="the allocation measured; empty = the whole resource")
    provider: str = Field("", description="who owns the resource; billing learns it from placements if empty")
    interval_seconds: float = Field(gt=0, le=YEAR_S, description="the interval measured ends at event_time")
    used: Capacity = Field(description="average use over the interval")


# ---------------------------------------------------------------------------
# Scheduling
# ---------------------------------------------------------------------------
class WorkloadRequest(Event):
    event_type: Literal["workload.request"] = "workload.request"
    KEY: ClassVar[str] = "request_id"
    request_id: Identifier
    tenant: Identifier
    sla_tier: SlaTier = SlaTier.silver
    replicas: Integer = Field(1, ge=1, le=10_000)
    per_replica: Capacity
    required_tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    allowed_regions: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS, description="empty = any")
    allowed_providers: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS, description="empty = any")
    max_price_per_hour: Price | None = Field(None, description="cap on the whole request's price per hour")
    spread_min: Integer = Field(1, ge=1, le=MAX_TAGS, description="replicas over at least this many providers/zones")
    deadline: UtcTime | None = Field(None, description="reject if not placed by then")
    expected_duration_seconds: float | None = Field(None, gt=0, le=10 * YEAR_S)
    pool: str = Field("default", description="demand series / placement pool")

    @model_validator(mode="after")
    def _demand_is_positive(self) -> "WorkloadRequest":
        c = self.per_replica
        if c.vcpu <= 0 and c.memory_bytes <= 0 and c.gpu <= 0:
            raise ValueError("per_replica must ask for some vcpu, memory_bytes or gpu")
        if self.spread_min > self.replicas:
            raise ValueError("spread_min cannot exceed replicas")
        return self


class Placement(_Part):
    resource_id: Identifier
    provider: Identifier
    replicas: Integer = Field(ge=1, le=10_000)
    price_per_hour: Price = Field(description="marginal price per hour charged for these replicas")
    instance_type: str = Field("", max_length=128,
                               description="the resource's instance type (billing: a partner that rates it "
                                           "per instance-hour bills the whole VM while it holds work)")
    region: str = Field("", max_length=128, description="the resource's region (billing exports name it)")


class _AllocationEvent(Event):
    KEY: ClassVar[str] = "request_id"
    request_id: Identifier
    tenant: str = ""
    sla_tier: SlaTier = SlaTier.silver


class AllocationPlaced(_AllocationEvent):
    event_type: Literal["allocation.placed"] = "allocation.placed"
    allocation_id: Identifier
    placements: list[Placement] = Field(min_length=1, max_length=MAX_ITEMS)
    per_replica: Capacity
    queued_seconds: Quantity = 0.0
    batch_id: str = ""
    expires_at: UtcTime | None = Field(None, description="when the scheduler releases it (placed + expected duration)")
    # The request's constraints travel with its placement: a migration must keep them.
    required_tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    allowed_regions: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS, description="empty = any")
    allowed_providers: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS, description="empty = any")


class AllocationQueued(_AllocationEvent):
    event_type: Literal["allocation.queued"] = "allocation.queued"
    position: Integer = Field(ge=0, le=INT64_MAX)
    reason: NonEmptyStr


class RejectReason(str, Enum):
    """Why a request was not placed, as a code to act on (``reason`` says it for people).

    ``insufficient_capacity`` and ``no_resources`` can change as capacity frees up or
    appears: the scheduler keeps such requests queued (``allocation.queued``) until their
    deadline. Every other code is final."""

    invalid_request = "invalid_request"                # the request itself is malformed
    no_matching_resource = "no_matching_resource"      # no resource meets its tags / regions / providers
    too_large = "too_large"                            # no compatible resource holds one replica
    spread_impossible = "spread_impossible"            # fewer compatible providers than its spread
    insufficient_capacity = "insufficient_capacity"    # would fit, not now (transient)
    no_resources = "no_resources"                      # no resource available at all (transient)
    deadline_passed = "deadline_passed"
    withdrawn = "withdrawn"                            # its producer released it before it was placed
    over_price_cap = "over_price_cap"                  # nothing it may use fits within max_price_per_hour
    no_domain = "no_domain"                            # no placement domain holds resources it may use


#: Rejection codes a later capacity change can resolve (the request stays queued).
TRANSIENT_REJECTIONS = frozenset({RejectReason.insufficient_capacity, RejectReason.no_resources})


class AllocationRejected(_AllocationEvent):
    event_type: Literal["allocation.rejected"] = "allocation.rejected"
    reason: NonEmptyStr
    code: RejectReason = Field(description="why, as a code (reason is the text for people)")


class ReleaseRequested(Event):
    """A producer ends its work (for work with no expected duration): the scheduler releases
    the request's allocation, or withdraws the request if it still waits. On the requests
    topic, keyed by ``request_id`` like the request it ends, so it never overtakes it."""

    event_type: Literal["release.requested"] = "release.requested"
    KEY: ClassVar[str] = "request_id"
    request_id: Identifier
    reason: str = Field("released by its producer", max_length=256)


class AllocationReleased(_AllocationEvent):
    event_type: Literal["allocation.released"] = "allocation.released"
    allocation_id: Identifier
    reason: str = "completed"
    placements: list[Placement] = Field(default_factory=list, max_length=MAX_ITEMS, description="what is freed (as placed)")
    per_replica: Capacity | None = None


# ---------------------------------------------------------------------------
# Forecasting and correlation
# ---------------------------------------------------------------------------
class HorizonForecast(_Part):
    step: Integer = Field(ge=1, le=10_000)
    interval_start: UtcTime
    quantiles: dict[Annotated[str, Field(pattern=r"^0?\.[0-9]*[1-9][0-9]*$", max_length=12)], Number] = Field(
        max_length=32, description="quantile level ('0.05') -> demand")

    @model_validator(mode="after")
    def _levels_monotone(self) -> "HorizonForecast":
        try:
            levels = sorted((float(k), v) for k, v in self.quantiles.items())
        except ValueError:
            raise ValueError("quantile keys must be numbers between 0 and 1, e.g. '0.95'") from None
        if any(not 0.0 < q < 1.0 for q, _ in levels):
            raise ValueError("quantile levels must lie strictly between 0 and 1")
        if any(a[1] > b[1] for a, b in zip(levels, levels[1:])):
            raise ValueError("quantiles must not cross (higher level, lower value)")
        return self


class Forecast(Event):
    event_type: Literal["forecast"] = "forecast"
    KEY: ClassVar[str] = "series"
    series: NonEmptyStr = Field(description="e.g. pool=default/region=eu/dim=vcpu")
    interval_seconds: Integer = Field(gt=0, le=INT64_MAX)
    horizons: list[HorizonForecast] = Field(min_length=1, max_length=MAX_ITEMS)
    model: str = ""


class ExternalEvent(Event):
    """Something outside Tessera that moves demand: a campaign, release, sale, holiday."""

    event_type: Literal["external.event"] = "external.event"
    KEY: ClassVar[str] = "scope"
    external_id: Identifier
    kind: Literal["campaign", "release", "sale", "holiday", "incident", "other"]
    scope: NonEmptyStr = Field("global", description="pool, region or tenant it affects")
    starts_at: UtcTime
    ends_at: UtcTime
    magnitude: Number | None = None

    @model_validator(mode="after")
    def _span(self) -> "ExternalEvent":
        if self.ends_at < self.starts_at:
            raise ValueError("ends_at is before starts_at")
        return self


class DemandSpike(Event):
    event_type: Literal["demand.spike"] = "demand.spike"
    KEY: ClassVar[str] = "series"
    series: NonEmptyStr
    interval_start: UtcTime
    observed: Number
    expected: Number
    score: Number
    external_ids: list[Identifier] = Field(default_factory=list, max_length=MAX_ITEMS)


class DemandObservation(Event):
    """Internal: one input's demand, re-keyed by its series group so one worker owns the
    group's intervals. ``source_*`` name the input message, which makes replays idempotent."""

    event_type: Literal["demand.observation"] = "demand.observation"
    KEY: ClassVar[str] = "group"
    group: NonEmptyStr = Field(description="series group, e.g. tier=gold or source=usage")
    observed_at: UtcTime
    amounts: dict[Literal["vcpu", "memory_gib", "gpu"], Quantity] = Field(
        description="dimension -> demand, e.g. {'vcpu': 8.0}")
    source_topic: str
    source_partition: Integer = Field(ge=0, le=INT64_MAX)
    source_offset: Integer = Field(ge=0, le=INT64_MAX)



class DemandInterval(Event):
    """The realised demand of one series in one closed interval (what forecasts are scored on)."""

    event_type: Literal["demand.interval"] = "demand.interval"
    KEY: ClassVar[str] = "series"
    series: NonEmptyStr
    interval_start: UtcTime
    interval_seconds: Integer = Field(gt=0, le=INT64_MAX)
    value: Quantity


class SuggestedResource(_Part):
    resource_id: Identifier
    provider: Identifier
    vcpu: Quantity
    price_per_hour: Price


class TuningDecision(Event):
    """The scheduler's online tuner chose a knob's value for the next window, and scored the
    previous choice (tessera.scheduler.tuning: a River bandit per context).

    The reward is what the previous choice earned over its window: minus the cost of the
    capacity placements held (their prices over the window) minus a penalty per SLA miss."""

    event_type: Literal["tuning.decision"] = "tuning.decision"
    KEY: ClassVar[str] = "knob"
    knob: Identifier = Field(description="e.g. headroom_quantile")
    context: str = Field(max_length=128, description="the context the choice was made for, e.g. hours=12-18")
    arm: str = Field(max_length=64, description="the value chosen for the next window")
    previous_arm: str = Field("", max_length=64)
    reward: float | None = Field(None, ge=-1e15, le=1e15, description="what the previous choice earned")
    window_cost: Money = Field(Decimal(0), description="cost of the capacity held over the previous window")
    window_misses: Integer = Field(0, ge=0, le=INT64_MAX, description="SLA misses in the previous window")
    window_seconds: float = Field(0.0, ge=0, le=1e9)


class ProvisioningHint(Event):
    """The forecast says more capacity will be needed than is in service: bring these up ahead.

    Published by the scheduler when a forecast arrives whose protective quantiles (per tier,
    newsvendor level) of the vCPU arriving over the next horizons exceed the free vCPU of
    resources already in service. Advisory: the scheduler still opens resources itself when
    work arrives; a provisioner (warm pool, partner API) can act on the hint earlier.
    """

    event_type: Literal["provisioning.hint"] = "provisioning.hint"
    KEY: ClassVar[str] = "pool"
    pool: NonEmptyStr
    needed_by: UtcTime = Field(description="start of the first interval the capacity in service runs short")
    peak_at: UtcTime = Field(description="start of the interval with the largest shortfall")
    arriving_vcpu: float = Field(ge=0, le=1e15, description="vCPU forecast to arrive up to peak_at (protective quantiles)")
    free_in_service_vcpu: Quantity
    shortfall_vcpu: float = Field(gt=0, le=1e15)
    levels: dict[Annotated[str, Field(max_length=32)], Number] = Field(
        max_length=16, description="tier -> quantile level used (shortage vs idle cost)")
    suggested: list[SuggestedResource] = Field(default_factory=list, max_length=MAX_ITEMS,
                                               description="cheapest per vCPU first")
    suggested_cost_per_hour: Money = Decimal(0)


# ---------------------------------------------------------------------------
# Migration
# ---------------------------------------------------------------------------
class _MigrationEvent(Event):
    """One step of moving an allocation's whole placement on the source resource to the target."""

    KEY: ClassVar[str] = "migration_id"
    migration_id: Identifier
    allocation_id: Identifier
    source_resource_id: Identifier
    target_resource_id: Identifier
    target_provider: str = Field("", description="provider of the target resource (billing needs it)")
    replicas: Integer = Field(0, ge=0, le=1_000_000,
                              description="replicas moved from the source; 0 = all it holds of the allocation")
    # What billing needs to bill the target without the allocation's placement event: the
    # billing feed is sharded by partner, and the target partner's shard may never have
    # seen the placement (it was on another partner).
    source_provider: str = Field("", max_length=256, description="provider of the source resource")
    tenant: str = Field("", max_length=256, description="the allocation's tenant")
    per_replica: Capacity | None = Field(None, description="the allocation's capacity per replica")
    target_instance_type: str = Field("", max_length=256, description="instance type of the target resource")
    target_price_per_hour: Money = Field(Decimal(0), description="what the moved replicas cost per hour on the target")


class MigrationPlanned(_MigrationEvent):
    event_type: Literal["migration.planned"] = "migration.planned"
    reason: Literal["consolidation", "evacuation", "rebalance", "manual"]
    expected_saving_per_hour: Money = Decimal(0)


class MigrationProgress(_MigrationEvent):
    event_type: Literal["migration.progress"] = "migration.progress"
    step: NonEmptyStr = Field(description="the step just completed: reserve_target | sync | cut_over | release_source")
    detail: str = ""


class MigrationDone(_MigrationEvent):
    event_type: Literal["migration.done"] = "migration.done"
    cut_over_at: UtcTime


class MigrationFailed(_MigrationEvent):
    event_type: Literal["migration.failed"] = "migration.failed"
    reason: NonEmptyStr
    rolled_back: bool = True


# ---------------------------------------------------------------------------
# Billing
# ---------------------------------------------------------------------------
class BillingLine(Event):
    event_type: Literal["billing.line"] = "billing.line"
    KEY: ClassVar[str] = "partner_id"
    line_id: Identifier = Field(description="deterministic: partner/period/sku/unit[/tier]")
    partner_id: Identifier
    period_start: UtcTime
    period_end: UtcTime
    charge_category: Literal["usage", "commitment_shortfall", "adjustment", "credit"] = "usage"
    sku: NonEmptyStr
    unit: NonEmptyStr = Field(description="e.g. vcpu-hour, gib-hour, gpu-hour, instance-hour")
    quantity: Money
    rate: Money
    amount: Money
    currency: str = Field("USD", min_length=3, max_length=3)
    revision: Integer = Field(0, ge=0, le=INT64_MAX, description="higher revision of the same line_id supersedes")


class AgreementUpdated(Event):
    """A partner agreement, new or changed (the same document `tessera bill` reads; see
    tessera.pricing.agreements). It applies from its ``effective_from`` (undated: it replaces
    the partner's terms for all time); usage before that keeps the terms it ran under."""

    event_type: Literal["agreement.updated"] = "agreement.updated"
    KEY: ClassVar[str] = "partner_id"
    partner_id: Identifier
    agreement: dict[str, Any] = Field(max_length=MAX_ITEMS,
                                      description="the agreement document; its 'partner' must equal partner_id")

    @model_validator(mode="after")
    def _same_partner(self) -> "AgreementUpdated":
        if self.agreement.get("partner") != self.partner_id:
            raise ValueError("agreement.partner must equal partner_id")
        _bounded_document(self.agreement)
        return self


#: A free-form document (an agreement) nests at most this deep and holds at most this
#: many values: enough for any agreement, and no message can make a consumer recurse
#: or re-encode without end.
MAX_DOCUMENT_DEPTH = 8
MAX_DOCUMENT_VALUES = 4096


def _bounded_document(doc: Any) -> None:
    """Walk a JSON document iteratively (no recursion to exhaust) and refuse one that nests
    too deep or holds too much."""
    stack, values = [(doc, 1)], 0
    while stack:
        node, depth = stack.pop()
        values += 1
        if values > MAX_DOCUMENT_VALUES:
            raise ValueError(f"the document holds more than {MAX_DOCUMENT_VALUES} values")
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth >= MAX_DOCUMENT_DEPTH and children:
            raise ValueError(f"the document nests deeper than {MAX_DOCUMENT_DEPTH} levels")
        stack.extend((c, depth + 1) for c in children)


class UsageLimitAlert(Event):
    event_type: Literal["usage_limit.alert"] = "usage_limit.alert"
    KEY: ClassVar[str] = "partner_id"
    partner_id: Identifier
    period_start: UtcTime
    limit_name: NonEmptyStr
    threshold_pct: Integer = Field(ge=1, le=1000)
    used: Money
    limit: Money
    enforcement: Literal["soft", "hard"] = "soft"
    lifted: bool = Field(False, description="a hard block for this partner and period is lifted (limit raised)")


# ---------------------------------------------------------------------------
# Dead letters
# ---------------------------------------------------------------------------
#: A dead letter keeps its reason up to this many characters ...
MAX_REASON = 2000
#: ... and at most this many bytes of the original key and value (a larger value is kept
#: truncated, and says so), so that a dead letter always fits in a Kafka message.
MAX_KEPT_BYTES = 64 * 1024
MAX_KEPT_B64 = 4 * ((MAX_KEPT_BYTES + 2) // 3)


class DeadLetter(Event):
    """An input that failed validation, with why and where it came from."""

    event_type: Literal["dead_letter"] = "dead_letter"
    KEY: ClassVar[str] = "source_topic"
    reason: str = Field(min_length=1, max_length=MAX_REASON)
    field: str = Field("", max_length=MAX_TEXT, description="dotted path of the offending field, if one")
    source_topic: NonEmptyStr
    source_partition: Integer = Field(ge=0, le=INT64_MAX)
    source_offset: Integer = Field(ge=0, le=INT64_MAX)
    source_key_b64: str = Field("", max_length=MAX_KEPT_B64)
    original_b64: str = Field(max_length=MAX_KEPT_B64,
                              description="the message value as received, base64 (its first MAX_KEPT_BYTES bytes)")
    original_size: Integer = Field(0, ge=0, le=INT64_MAX, description="bytes of the message value as received")
    original_truncated: bool = Field(False, description="original_b64 holds only the first bytes of the value")
    consumer: str = Field("", max_length=128, description="agent that rejected it")


# ---------------------------------------------------------------------------
# Checkpoints (internal)
# ---------------------------------------------------------------------------
#: Bytes of base64 state in one checkpoint chunk: well inside the edge's message limit.
CHECKPOINT_CHUNK_B64 = 192 * 1024


class InputPosition(_Part):
    """Where a saved state stands in one input partition: the next offset to read."""

    topic: NonEmptyStr
    partition: Integer = Field(ge=0, le=1_000_000)
    offset: Integer = Field(ge=0, le=INT64_MAX)


class Checkpoint(Event):
    """One chunk of a worker's saved state, and where in its input topics that state stands.

    A worker writes a checkpoint as ``chunks`` events sharing ``checkpoint_id``, all in one
    Kafka transaction with the decisions they include; the topic is compacted on
    ``owner#chunk`` so the newest checkpoint of each owner outlives any retention. To
    restore, a worker loads the newest complete checkpoint and reads its inputs on from
    ``positions`` (the next offset per topic and partition), never from their beginning."""

    event_type: Literal["checkpoint"] = "checkpoint"
    KEY: ClassVar[str] = "owner"
    owner: Identifier = Field(description="the worker and its domain, e.g. scheduler/global")
    checkpoint_id: Integer = Field(ge=0, le=INT64_MAX, description="grows with every checkpoint of the owner")
    chunk: Integer = Field(ge=0, le=100_000)
    chunks: Integer = Field(ge=1, le=100_001)
    state_version: Integer = Field(1, ge=1, le=1_000_000, description="the layout of the saved state")
    positions: list[InputPosition] = Field(default_factory=list, max_length=4096,
                                           description="next offset to read per input topic and partition")
    payload_b64: str = Field(max_length=CHECKPOINT_CHUNK_B64, description="this chunk of the zlib-compressed state")

    @model_validator(mode="after")
    def _chunk_in_range(self) -> "Checkpoint":
        if self.chunk >= self.chunks:
            raise ValueError(f"chunk {self.chunk} is not below chunks {self.chunks}")
        return self

    def key(self) -> bytes:
        return f"{self.owner}#{self.chunk}".encode()


class FeedTick(Event):
    """The billing feed's clock (internal): the latest allocation event time a scheduler
    wrote, sent to every feed partition (at most every 0.5 s, and once when it goes idle),
    so that each billing shard's month to date runs to the same time (a shard's own
    partners may have no event for a while)."""

    event_type: Literal["feed.tick"] = "feed.tick"
    KEY: ClassVar[str] = "shard"
    shard: Integer = Field(ge=0, le=1_000_000, description="the feed partition it is meant for")


ALL_EVENTS: tuple[type[Event], ...] = (
    FeedTick,
    TuningDecision,
    ResourceDiscovered,
    ResourceUpdated,
    ResourceRemoved,
    HealthSample,
    HealthChanged,
    UsageSample,
    WorkloadRequest,
    ReleaseRequested,
    AllocationPlaced,
    AllocationQueued,
    AllocationRejected,
    AllocationReleased,
    Forecast,
    ExternalEvent,
    DemandSpike,
    DemandObservation,
    DemandInterval,
    ProvisioningHint,
    MigrationPlanned,
    MigrationProgress,
    MigrationDone,
    MigrationFailed,
    BillingLine,
    AgreementUpdated,
    UsageLimitAlert,
    DeadLetter,
    Checkpoint,
)
