"""A corpus of hostile and careless inputs, kept with the tests.

Each entry is a message value as a producer might send it to some input topic: inputs
that once stopped a worker (a 300-character event type, long keys in maps, an agreement
nested 300 deep, a request with 100 tags, prices like 1E+30 or 1e999999999, ``"inf"``
capacities, a message near Kafka's size limit), and more of the same kind (broken bytes,
JSON that is not an object, numbers JSON cannot hold, deep arrays, huge lists). Built in
code rather than stored, since some are megabytes; deterministic.

``VALID_HOSTILE`` are valid events at the edge of the limits: they must be accepted and
processed by every worker without harm.
"""

from __future__ import annotations

import orjson

T = "2026-11-30T12:00:00Z"


def _request(**over: object) -> dict:
    doc = {"schema_version": 1, "event_type": "workload.request", "event_id": "h-req", "event_time": T,
           "request_id": "h-req", "tenant": "acme", "sla_tier": "gold", "replicas": 1,
           "per_replica": {"vcpu": 1.0, "memory_bytes": 1 << 30}}
    doc.update(over)
    return doc


def _resource(**spec_over: object) -> dict:
    spec = {"provider": "gcp", "region": "eu", "capacity": {"vcpu": 8.0, "memory_bytes": 32 << 30},
            "price_per_hour": "0.40"}
    spec.update(spec_over)
    return {"schema_version": 1, "event_type": "resource.discovered", "event_id": "h-res", "event_time": T,
            "resource_id": "gcp/h1", "spec": spec}


def _nested(depth: int) -> dict:
    doc: dict = {"partner": "gcp", "currency": "USD", "rates": {"vcpu_hour": "0.03"}}
    node = doc
    for _ in range(depth):
        node["x"] = {}
        node = node["x"]
    return doc


def _j(doc: object) -> bytes:
    return orjson.dumps(doc)


def corpus() -> list[tuple[str, bytes]]:
    long = "e" * 300
    return [
        ("empty", b""),
        ("not utf-8", b"\xff\xfe\x00\x81"),
        ("not json", b"\x00\x01 not json at all"),
        ("json null", b"null"),
        ("json array", b"[1, 2, 3]"),
        ("json number", b"42"),
        ("json string", b'"workload.request"'),
        ("NaN literal", b'{"schema_version": 1, "event_type": "workload.request", "x": NaN}'),
        ("huge integer", b'{"schema_version": ' + b"9" * 400 + b', "event_type": "workload.request"}'),
        ("deep array", b"[" * 100_000 + b"]" * 100_000),
        ("unknown event type of 300 characters", _j({"schema_version": 1, "event_type": long})),
        ("event type not a string", _j({"schema_version": 1, "event_type": {"a": 1}})),
        ("schema version 2", _j(_request(schema_version=2))),
        ("schema version as string", _j(_request(schema_version="1"))),
        ("long key in quantiles", _j({"schema_version": 1, "event_type": "forecast", "event_id": "f", "event_time": T,
                                      "series": "s", "interval_seconds": 300,
                                      "horizons": [{"step": 1, "interval_start": T, "quantiles": {long: 1.0}}]})),
        ("long key in amounts", _j({"schema_version": 1, "event_type": "demand.observation", "event_id": "d",
                                    "event_time": T, "group": "g", "observed_at": T, "amounts": {long: 1.0},
                                    "source_topic": "t", "source_partition": 0, "source_offset": 0})),
        ("agreement nested 300 deep",   # written as text: orjson itself refuses to write it
         b'{"schema_version": 1, "event_type": "agreement.updated", "event_id": "a", "event_time": "' + T.encode()
         + b'", "partner_id": "gcp", "agreement": {"partner": "gcp", "currency": "USD", "rates": {}, '
         + b'"x": {' * 300 + b"}" * 300 + b"}}"),
        ("request with 100 distinct tags", _j(_request(required_tags=[f"t{i}" for i in range(100)]))),
        ("request with 100,000 tags", _j(_request(required_tags=["t"] * 100_000))),
        ("request with 100 regions", _j(_request(allowed_regions=[f"r{i}" for i in range(100)]))),
        ("vcpu as the string inf", _j(_request(per_replica={"vcpu": "inf", "memory_bytes": 1}))),
        ("vcpu 1e308", _j(_request(per_replica={"vcpu": 1e308, "memory_bytes": 1}))),
        ("vcpu as a string", _j(_request(per_replica={"vcpu": "2", "memory_bytes": 1}))),
        ("network inf as string", _j(_resource(capacity={"vcpu": 8.0, "network_gbps": "inf"}))),
        ("price 1E+30", _j(_resource(price_per_hour="1E+30"))),
        ("price 1e999999999", _j(_resource(price_per_hour="1e999999999"))),
        ("price with 40 decimals", _j(_resource(price_per_hour="0." + "1" * 40))),
        ("negative price", _j(_resource(price_per_hour="-0.40"))),
        ("price as a float", _j(_resource(price_per_hour=0.4))),
        ("10 MB string", _j(_request(tenant="x" * (10 << 20)))),
        ("a message of about 1 MB, under the broker's limit", _j(_request(pool="p" * 1_000_000))),
        ("time without zone", _j(_request(event_time="2026-11-30T12:00:00"))),
        ("time as unix seconds", _j(_request(event_time=1764504000))),
        ("replicas as fraction", _j(_request(replicas=2.5))),
        ("replicas too many", _j(_request(replicas=10**9))),
        ("spread beyond replicas", _j(_request(spread_min=5))),
        ("missing event_time", _j({k: v for k, v in _request().items() if k != "event_time"})),
        ("wrong type for nested object", _j(_request(per_replica=[1, 2]))),
        ("placement list of 10,000", _j({"schema_version": 1, "event_type": "allocation.released", "event_id": "r",
                                         "event_time": T, "request_id": "q", "allocation_id": "a",
                                         "placements": [{"resource_id": "r", "provider": "p", "replicas": 1,
                                                         "price_per_hour": "0.1"}] * 10_000})),
    ]


#: Valid events at the limits: accepted, and harmless to every worker.
VALID_HOSTILE: list[tuple[str, bytes]] = [
    ("request with 64 tags no resource has", _j(_request(event_id="v1", request_id="v1",
                                                         required_tags=[f"rare{i}" for i in range(64)]))),
    ("request with 64 regions", _j(_request(event_id="v2", request_id="v2",
                                            allowed_regions=[f"r{i}" for i in range(64)]))),
    ("largest request", _j(_request(event_id="v3", request_id="v3", replicas=10_000,
                                    per_replica={"vcpu": 1e6, "memory_bytes": 1 << 60, "gpu": 100_000}))),
    ("request priced at the cap", _j(_request(event_id="v4", request_id="v4", max_price_per_hour="999999.99"))),
    ("resource at the price limit", _j(_resource(price_per_hour="999999.999999999999"))),
    ("agreement nested 7 deep", _j({"schema_version": 1, "event_type": "agreement.updated", "event_id": "v5",
                                    "event_time": T, "partner_id": "gcp", "agreement": _nested(5)})),
]
