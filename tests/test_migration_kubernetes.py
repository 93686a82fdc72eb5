"""The Kubernetes executor through the official client against a local server that plays
the API (real Pod, Eviction and Status objects): replacement bound to the target node and
Ready before the source is evicted; PodDisruptionBudgets hold; a replacement that never
becomes Ready rolls back; a resumed step creates nothing twice."""

from __future__ import annotations

import asyncio

import pytest
from tests.partner_servers import KubernetesAPI

import tessera.schemas as s
from tessera.migration.kubernetes import ALLOCATION, MIGRATION, ROLE, KubernetesExecutor, label_value
from tessera.migration.machine import STEPS, Migration, drive

TOKEN = "k8s-token"


@pytest.fixture
def api():
    with KubernetesAPI(token=TOKEN) as server:
        server.add_pod("app-1", "node-a", {"app": "web", ALLOCATION: label_value("alloc:req-1"), ROLE: "active"})
        server.add_pod("other", "node-a", {"app": "db"})
        yield server


def migrate(api, **kw):
    executor = KubernetesExecutor(api.url, token=TOKEN, poll_s=0.05, **kw)
    m = Migration("mig:alloc:req-1:1", "alloc:req-1", "k8s/node-a", "k8s/node-b", "k8s", 0, "evacuation")
    events = []

    async def publish(e):
        events.append(e)

    done = asyncio.run(drive(m, executor, publish, retry_delay_s=0.01))
    return done, events, executor


def test_the_replacement_is_bound_and_ready_before_the_source_is_evicted(api):
    done, events, _ = migrate(api)
    assert done.status == "done"
    assert [getattr(e, "step", e.event_type) for e in events] == [*STEPS, "migration.done"]
    pods = {name: pod for (_, name), pod in api.pods.items()}
    assert "app-1" not in pods and api.evictions == ["app-1"]         # through the Eviction API
    (new,) = [p for p in pods.values() if p["metadata"]["labels"].get(MIGRATION)]
    assert new["spec"]["nodeName"] == "node-b" and new["metadata"]["labels"][ROLE] == "active"
    assert new["metadata"]["labels"]["app"] == "web" and "ownerReferences" not in new["metadata"]
    assert new["spec"]["containers"][0]["image"] == "registry.example/app:1"
    assert "other" in pods                                            # other work untouched
    assert any(r.startswith("POST /api/v1/namespaces/default/pods/app-1/eviction") for r in api.requests)


def test_a_disruption_budget_that_forbids_the_eviction_keeps_the_source(api):
    api.pdbs = [{"selector": {"app": "web"}, "minAvailable": 2}]     # source + replacement: none may go
    done, events, _ = migrate(api)
    assert done.status == "failed" and isinstance(events[-1], s.MigrationFailed)
    assert not events[-1].rolled_back          # cut over already: the work runs on the target
    assert ("default", "app-1") in api.pods and not api.evictions
    assert "429" in done.failure
    api.pdbs = [{"selector": {"app": "web"}, "minAvailable": 1}]     # the replacement keeps the budget
    done, _, _ = migrate(api)
    assert api.evictions == ["app-1"]


def test_a_replacement_that_never_becomes_ready_rolls_back(api):
    executor = KubernetesExecutor(api.url, token=TOKEN, poll_s=0.05, ready_timeout_s=0.5)
    m = Migration("mig:alloc:req-1:1", "alloc:req-1", "k8s/node-a", "k8s/node-b", "k8s", 0, "evacuation")
    api.never_ready = {executor._replacement_name("app-1", m)}
    events = []

    async def publish(e):
        events.append(e)

    done = asyncio.run(drive(m, executor, publish))
    assert done.status == "rolled_back" and events[-1].rolled_back
    assert set(name for _, name in api.pods) == {"app-1", "other"}    # replacement deleted
    assert api.pods[("default", "app-1")]["metadata"]["labels"][ROLE] == "active"


def test_a_repeated_reservation_creates_nothing_twice(api):
    executor = KubernetesExecutor(api.url, token=TOKEN, poll_s=0.05)
    m = Migration("mig:alloc:req-1:1", "alloc:req-1", "k8s/node-a", "k8s/node-b", "k8s", 0, "evacuation")

    async def twice():
        await executor.reserve_target(m)
        await executor.reserve_target(m)       # a resumed migration after a crash before its event

    asyncio.run(twice())
    assert len(api.created) == 1 and len(api.pods) == 3


def test_a_wrong_token_fails_the_step_with_the_status():
    with KubernetesAPI(token=TOKEN) as server:
        server.add_pod("app-1", "node-a", {ALLOCATION: label_value("alloc:req-1")})
        executor = KubernetesExecutor(server.url, token="wrong", poll_s=0.05)
        m = Migration("m", "alloc:req-1", "k8s/node-a", "k8s/node-b", "k8s")
        out = []

        async def publish(e):
            out.append(e)

        done = asyncio.run(drive(m, executor, publish, retry_delay_s=0.01))
        assert done.status == "failed" and "401" in done.failure and not out[-1].rolled_back
        assert len(server.pods) == 1
