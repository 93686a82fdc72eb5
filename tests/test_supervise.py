"""The supervisor's rules without a broker: retry Kafka faults with backoff, say so on
/readyz, exit only when fenced twice in a row, let bugs through."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaConnectionError, ProducerFenced

from tessera.streams import metrics, runner
from tessera.streams.supervise import FencedError, supervise


def _scripted(*outcomes):
    calls = []

    async def attempt(stop):
        calls.append(metrics.PROBE.readiness())
        outcome = outcomes[len(calls) - 1]
        if outcome is not None:
            raise outcome

    return attempt, calls


def test_kafka_faults_are_retried_with_the_reason_on_readyz_until_an_attempt_ends_cleanly():
    attempt, calls = _scripted(KafkaConnectionError("Unable to bootstrap"), KafkaConnectionError("again"), None)
    asyncio.run(supervise("svc", attempt, asyncio.Event(), first_backoff_s=0.01))
    assert len(calls) == 3
    assert not calls[1][0] and "waiting for Kafka" in calls[1][1] and "Unable to bootstrap" in calls[1][1]


def test_fenced_twice_in_a_row_means_another_instance_runs_and_stops_with_what_to_do():
    attempt, calls = _scripted(ProducerFenced(), ProducerFenced(), None)
    with pytest.raises(FencedError, match="another instance with the same transactional id"):
        asyncio.run(supervise("scheduler", attempt, asyncio.Event(), first_backoff_s=0.01))
    assert len(calls) == 2


def test_a_bug_is_not_retried():
    attempt, calls = _scripted(ZeroDivisionError("bug"), None)
    with pytest.raises(ZeroDivisionError):
        asyncio.run(supervise("svc", attempt, asyncio.Event(), first_backoff_s=0.01))
    assert len(calls) == 1


@pytest.mark.parametrize("code, status", [(None, 0), (0, 0), (3, 3), ("stopped badly", 1)])
def test_a_stopped_faust_worker_returns_its_status_instead_of_raising(monkeypatch, code, status):
    """Faust's worker ends by raising SystemExit; the runner returns its status so that the
    CLI exits through its own exit (which skips chdb's teardown) rather than the interpreter's."""
    class Stops:
        def __init__(self, app, loglevel, loop):
            pass

        def execute_from_commandline(self):
            raise SystemExit(code)

    monkeypatch.setattr(runner, "QuietWorker", Stops)
    assert runner.serve_until_stopped(None, None) == status
