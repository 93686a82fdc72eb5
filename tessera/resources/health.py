"""Health verdicts with hysteresis.

A resource turns unhealthy after ``unhealthy_after`` consecutive bad samples (NotReady,
status unhealthy) or when a resource that has been heartbeating stays silent for
``heartbeat_timeout_s``; it turns healthy again after ``healthy_after`` consecutive good
samples. Alternating samples therefore never reach either streak: a flapping resource
does not toggle with every sample. Only transitions produce events, one each, with a
deterministic event id so a re-emitted verdict after a restart is recognizably the same.

Resources that never heartbeat (catalog offers not yet launched) are never expired.
The state is a small dict so it lives inside the resource table row and recovers with it.
It holds only what must survive a restart (status, capped streaks, whether the resource
heartbeats); the time of the last heartbeat is kept by the caller in memory, so a steady
stream of identical heartbeats leaves the row unchanged and costs no changelog write.
After a restart every heartbeating resource gets a full timeout (``not_before``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tessera.schemas import HealthChanged, HealthSample, HealthStatus


@dataclass(frozen=True)
class HealthPolicy:
    heartbeat_timeout_s: float = 60.0
    unhealthy_after: int = 3
    healthy_after: int = 3


def new_state() -> dict[str, Any]:
    return {"status": HealthStatus.healthy.value, "bad": 0, "good": 0, "heartbeats": False, "since": None}


def _good(sample: HealthSample) -> bool:
    return sample.ready and sample.status != HealthStatus.unhealthy


def _changed(resource_id: str, status: HealthStatus, reason: str, at: datetime) -> HealthChanged:
    return HealthChanged(event_id=f"health:{resource_id}:{status.value}:{at.isoformat()}",
                         event_time=at, resource_id=resource_id, status=status, reason=reason)


def observe(state: dict[str, Any], sample: HealthSample, policy: HealthPolicy) -> HealthChanged | None:
    """Apply one sample. Mutates ``state``; streaks are capped at their thresholds."""
    state["heartbeats"] = True
    if _good(sample):
        state["good"] = min(state["good"] + 1, policy.healthy_after)
        state["bad"] = 0
        if state["status"] != HealthStatus.healthy.value and state["good"] >= policy.healthy_after:
            state["status"] = HealthStatus.healthy.value
            state["since"] = sample.event_time.isoformat()
            return _changed(sample.resource_id, HealthStatus.healthy,
                            f"{state['good']} consecutive good samples", sample.event_time)
    else:
        state["bad"] = min(state["bad"] + 1, policy.unhealthy_after)
        state["good"] = 0
        if state["status"] == HealthStatus.healthy.value and state["bad"] >= policy.unhealthy_after:
            state["status"] = HealthStatus.unhealthy.value
            state["since"] = sample.event_time.isoformat()
            return _changed(sample.resource_id, HealthStatus.unhealthy,
                            f"{state['bad']} consecutive bad samples ({sample.detail or sample.status.value})",
                            sample.event_time)
    return None


def expired(state: dict[str, Any], last_heartbeat: float | None, now: float, policy: HealthPolicy,
            not_before: float = 0.0) -> bool:
    """True when a heartbeating, healthy resource has been silent past the timeout.

    ``last_heartbeat``: wall-clock time this worker last heard from it (None: not since
    it started). ``not_before``: when this worker started watching; a restarted worker
    gives every resource a full timeout before blaming it for heartbeats it could not see.
    """
    if not state.get("heartbeats") or state["status"] != HealthStatus.healthy.value:
        return False
    return now - max(last_heartbeat or 0.0, not_before) > policy.heartbeat_timeout_s


def missing_heartbeat(resource_id: str, at: datetime, policy: HealthPolicy) -> HealthChanged:
    """The verdict for a silent resource (applied to the row by ``apply_verdict``)."""
    return _changed(resource_id, HealthStatus.unhealthy,
                    f"no heartbeat for more than {policy.heartbeat_timeout_s:g}s", at)


def apply_verdict(state: dict[str, Any], verdict: HealthChanged) -> None:
    """Record a verdict decided elsewhere (the heartbeat timer) in the row's state."""
    state["status"] = verdict.status.value
    state["good"] = state["bad"] = 0
    state["since"] = verdict.event_time.isoformat()
