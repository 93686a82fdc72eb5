"""Every event Tessera publishes carries its CloudEvents attributes as Kafka headers (binary
content mode), with its body unchanged; each JSON Schema's $id is its own file name."""

from __future__ import annotations

import asyncio
import json

import pytest
from tests.conftest import run
from tests.samples import SAMPLES

import tessera.schemas as s
from tessera.agents.worker import running_worker
from tessera.schemas.jsonschema import JSON_DIR
from tessera.streams.produce import event_record, publish, send_batched, started_producer


def _check(record, event_type: str, topic: str) -> None:
    h = {k: v.decode() for k, v in record.headers}
    event = s.decode(record.value)
    assert h["ce_specversion"] == "1.0" and h["content-type"] == "application/json"
    assert h["ce_id"] == event.event_id and h["ce_type"] == event.event_type == event_type
    assert h["ce_source"] == f"/{topic}" and h["ce_time"].endswith("Z")
    assert (JSON_DIR / h["ce_dataschema"]).is_file()


@pytest.mark.kafka
def test_published_events_carry_cloudevents_headers(settings, consume):
    request, placed = SAMPLES["workload.request"], SAMPLES["allocation.placed"]
    requests = s.topic_spec("requests").full_name(settings.topic_prefix)
    allocations = s.topic_spec("allocations").full_name(settings.topic_prefix)
    dead = s.topic_spec("dead-letters").full_name(settings.topic_prefix)

    async def scenario():
        async with running_worker(settings, ["event-log"]):
            await publish(settings, "requests", [request])                              # send_events
            async with started_producer(settings) as p:
                for f in await send_batched(p, [event_record(allocations, placed)]):    # the batched path
                    await f
                await (await p.send(requests, b"not json", key=b"k"))                   # a Faust agent's dead letter
            await asyncio.sleep(1)
            return (await consume(settings, requests, 2), await consume(settings, allocations, 1),
                    await consume(settings, dead, 1))

    reqs, allocs, dls = run(scenario())
    _check(next(r for r in reqs if r.value != b"not json"), "workload.request", requests)
    assert s.decode(next(r for r in reqs if r.value != b"not json").value) == request, "the body is unchanged"
    _check(allocs[0], "allocation.placed", allocations)
    _check(dls[0], "dead_letter", dead)


def test_schema_ids_resolve_to_their_files():
    for path in JSON_DIR.glob("*.schema.json"):
        assert json.loads(path.read_text())["$id"] == path.name
