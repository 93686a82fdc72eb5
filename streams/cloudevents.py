"""CloudEvents attributes as Kafka headers (the CloudEvents Kafka protocol binding, binary
content mode): every event Tessera publishes carries ``ce_specversion``, ``ce_id``,
``ce_source``, ``ce_type``, ``ce_time``, ``ce_dataschema`` and ``content-type`` headers,
so CloudEvents tooling can route and read it. The body stays the event's JSON, unchanged.

>>> from tessera.schemas import WorkloadRequest, Capacity
>>> e = WorkloadRequest(event_id="e1", request_id="r1", tenant="t", per_replica=Capacity(vcpu=1))
>>> dict(headers(e, "tessera.requests.v1"))["ce_type"]
b'workload.request'
"""

from __future__ import annotations

from tessera.schemas import Event

SPEC_VERSION = b"1.0"
CONTENT_TYPE = b"application/json"


def source(topic: str) -> bytes:
    """``ce_source`` of an event published on ``topic``."""
    return f"/{topic}".encode()


def headers(event: Event, topic: str) -> list[tuple[str, bytes]]:
    """The event's CloudEvents attributes; ``ce_source`` is the topic it is published on,
    ``ce_dataschema`` the name of its JSON Schema in ``schemas/json/`` (its ``$id``)."""
    return [
        ("ce_specversion", SPEC_VERSION),
        ("ce_id", event.event_id.encode()),
        ("ce_source", source(topic)),
        ("ce_type", event.event_type.encode()),
        ("ce_time", event.event_time.isoformat().replace("+00:00", "Z").encode()),
        ("ce_dataschema", f"{event.event_type}.v{event.SCHEMA_VERSION}.schema.json".encode()),
        ("content-type", CONTENT_TYPE),
    ]
