"""The health monitor's hysteresis, without Kafka."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

import tessera.schemas as s
from tessera.resources import health

P = health.HealthPolicy(heartbeat_timeout_s=10, unhealthy_after=3, healthy_after=3)


def sample(good: bool) -> s.HealthSample:
    return s.HealthSample(resource_id="r", ready=good,
                          status=s.HealthStatus.healthy if good else s.HealthStatus.unhealthy)


def feed(pattern, state=None, t0=0.0):
    state = state or health.new_state()
    return state, [v for good in pattern if (v := health.observe(state, sample(good), P))]


def test_three_bad_then_three_good():
    state, verdicts = feed([False] * 5 + [True] * 5)
    assert [v.status.value for v in verdicts] == ["unhealthy", "healthy"]
    assert state["status"] == "healthy"


@given(st.integers(min_value=1, max_value=200))
def test_flapping_never_toggles(n):
    _, verdicts = feed([i % 2 == 0 for i in range(n)])
    assert verdicts == []


@given(st.lists(st.booleans(), max_size=200))
def test_verdicts_alternate_and_need_full_streaks(pattern):
    _, verdicts = feed(pattern)
    statuses = [v.status.value for v in verdicts]
    assert all(a != b for a, b in zip(statuses, statuses[1:]))
    assert not statuses or statuses[0] == "unhealthy"


def test_heartbeat_expiry_once_and_restart_grace():
    state, _ = feed([True])
    assert not health.expired(state, 0.0, 5.0, P)
    assert health.expired(state, 0.0, 11.0, P)
    assert not health.expired(state, None, 11.0, P, not_before=5.0)  # a worker started at t=5 waits until 15
    assert health.expired(state, None, 16.0, P, not_before=5.0)
    v = health.missing_heartbeat("r", s.utc_now(), P)
    health.apply_verdict(state, v)
    assert not health.expired(state, 0.0, 100.0, P), "already unhealthy: no second verdict"
    assert health.expired(health.new_state(), None, 1e9, P) is False, "never heartbeated: never expires"


def test_steady_heartbeats_leave_the_state_unchanged():
    state, _ = feed([True] * 5)
    before = dict(state)
    feed([True] * 50, state)
    assert state == before, "no changelog write needed for identical heartbeats"
