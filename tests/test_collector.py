"""The services' garbage-collector policy, and that embedded workers leave it alone."""

from __future__ import annotations

import gc

from tessera.simulate import engine
from tessera.streams import collector


def test_a_service_collects_rarely_and_an_embedded_worker_leaves_the_collector_alone(monkeypatch):
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    monkeypatch.setattr(collector, "_tuned", False)
    collector.settle_after_recovery()            # not a service: nothing frozen
    assert gc.get_freeze_count() == frozen and gc.get_threshold() == before
    try:
        collector.tune_for_service()
        assert gc.get_threshold() == collector.THRESHOLDS
    finally:
        gc.set_threshold(*before)


def test_a_simulation_collects_as_a_service_does_and_restores_the_collector_after():
    # The simulator's layer may not import the services' (tessera.streams), so it names
    # the thresholds again; they must stay the services' ones.
    assert engine.SIMULATION_GC == collector.THRESHOLDS
    before = gc.get_threshold()
    with engine._collect_rarely():
        assert gc.get_threshold() == collector.THRESHOLDS
    assert gc.get_threshold() == before
