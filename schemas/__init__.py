"""Tessera's event contracts: the public API of every topic.

>>> from tessera.schemas import WorkloadRequest, Capacity, encode, decode
>>> req = WorkloadRequest(request_id="r-1", tenant="acme", per_replica=Capacity(vcpu=2, memory_bytes=4 << 30))
>>> decode(encode(req)) == req
True
"""

from .base import GIB, MAX_MESSAGE_BYTES, UTC, Event, Money, UtcTime, new_event_id, utc_now
from .codec import EVENT_TYPES, SchemaError, decode, decode_obj, encode
from .events import *  # noqa: F401,F403
from .events import ALL_EVENTS, TIER_RANK, TIERS, TRANSIENT_REJECTIONS, RejectReason
from .topics import BY_NAME, TOPICS, TopicSpec, topic_spec

__all__ = [
    "GIB", "MAX_MESSAGE_BYTES", "TIERS", "TIER_RANK", "TRANSIENT_REJECTIONS", "RejectReason", "UTC", "Event", "Money", "UtcTime", "new_event_id", "utc_now",
    "EVENT_TYPES", "SchemaError", "decode", "decode_obj", "encode",
    "ALL_EVENTS", "BY_NAME", "TOPICS", "TopicSpec", "topic_spec",
] + [e.__name__ for e in ALL_EVENTS] + ["Capacity", "ResourceSpec", "Placement", "HorizonForecast",
                                         "SlaTier", "PricingModel", "HealthStatus", "SuggestedResource", "InputPosition"]
