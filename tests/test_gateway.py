"""The request gateway: the tenant of a request is the tenant its bearer token belongs to,
whatever the body says; everything else a careless or hostile client sends is refused
with its reason, and valid requests reach the requests topic."""

from __future__ import annotations

import aiohttp
import pytest
from tests.conftest import run

import tessera.schemas as s
from tessera.app.gateway import Gateway, digest, new_token

pytestmark = pytest.mark.kafka


def test_the_tenant_is_the_tokens_and_bad_input_is_refused(settings, consume_events):
    acme, line = new_token("acme")
    assert digest(acme) in line and acme not in line, "the tokens file holds digests only"
    globex, _ = new_token("globex")
    gateway = Gateway(settings, {digest(acme): "acme", digest(globex): "globex"})
    request = {"request_id": "gw-1", "per_replica": {"vcpu": 2, "memory_bytes": 1 << 30}}

    async def scenario():
        async with gateway.running() as url:
            answers = {}
            async with aiohttp.ClientSession() as http:
                async def post(name, body, token=acme, **headers):
                    if token:
                        headers["Authorization"] = f"Bearer {token}"
                    async with http.post(url, data=body, headers=headers) as r:
                        answers[name] = (r.status, await r.json())

                import orjson
                await post("ok", orjson.dumps(request))
                await post("other tenant", orjson.dumps({**request, "request_id": "gw-2", "tenant": "globex"}))
                await post("same tenant named", orjson.dumps({**request, "request_id": "gw-3", "tenant": "acme"}))
                await post("no token", orjson.dumps(request), token=None)
                await post("unknown token", orjson.dumps(request), token="guess")
                await post("not json", b"{nope")
                await post("invalid", orjson.dumps({**request, "per_replica": {"vcpu": "2"}}))
                await post("too large", b"x" * (s.MAX_MESSAGE_BYTES + 1))
                await post("foreign page", orjson.dumps(request), Origin="http://evil.example")
                await post("globex", orjson.dumps({**request, "request_id": "gw-4"}), token=globex)
        events = await consume_events(settings, "requests", 3, timeout=20)
        return answers, events

    answers, events = run(scenario())
    assert answers["ok"][0] == 202 and answers["ok"][1]["request_id"] == "gw-1"
    assert answers["other tenant"] == (403, {"error": "this token submits for tenant 'acme' only", "field": "tenant"})
    assert answers["same tenant named"][0] == 202
    assert answers["no token"][0] == answers["unknown token"][0] == 401
    assert answers["not json"][0] == 400
    assert answers["invalid"][0] == 422 and answers["invalid"][1]["field"] == "per_replica.vcpu"
    assert answers["too large"][0] == 413
    assert answers["foreign page"][0] == 403
    assert {(e.request_id, e.tenant) for e in events} == {("gw-1", "acme"), ("gw-3", "acme"), ("gw-4", "globex")}


def test_a_request_the_broker_did_not_take_is_answered_503(settings, monkeypatch):
    from aiokafka.errors import KafkaConnectionError

    import tessera.app.gateway as gw

    async def refuse(*_args, **_kw):
        raise KafkaConnectionError("broker gone")

    monkeypatch.setattr(gw, "send_events", refuse)
    token, _ = new_token("acme")
    gateway = Gateway(settings, {digest(token): "acme"})

    async def scenario():
        async with gateway.running() as url:
            async with aiohttp.ClientSession() as http:
                body = b'{"request_id": "gw-503", "per_replica": {"vcpu": 1}}'
                async with http.post(url, data=body, headers={"Authorization": f"Bearer {token}"}) as r:
                    return r.status, await r.json()

    status, answer = run(scenario())
    assert status == 503 and "send it again" in answer["error"]


def test_the_hostile_corpus_gets_answers_not_failures(settings):
    """Every hostile input gets a 4xx with its reason (or, when all it lacked was what the
    gateway fills in, is accepted); none gets a 5xx, and the gateway goes on serving."""
    from tests.hostile import corpus

    token, _ = new_token("acme")
    gateway = Gateway(settings, {digest(token): "acme"})

    async def scenario():
        from tessera.streams.admin import ensure_topics

        await ensure_topics(settings)
        async with gateway.running() as url:
            statuses = {}
            async with aiohttp.ClientSession() as http:
                for name, body in [*corpus(), ("valid", b'{"request_id": "gw-after", "per_replica": {"vcpu": 1}}')]:
                    async with http.post(url, data=body, headers={"Authorization": f"Bearer {token}"}) as r:
                        statuses[name] = r.status
        return statuses

    statuses = run(scenario(), timeout=120)
    assert statuses.pop("valid") == 202, "still serving after the corpus"
    assert not {n: st for n, st in statuses.items() if st >= 500}
    accepted = {name for name, status in statuses.items() if status == 202}
    assert accepted <= {"missing event_time"}, accepted      # the gateway fills event_time in
