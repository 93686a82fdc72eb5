"""The services' garbage-collector policy, and that embedded workers leave it alone."""

from __future__ import annotations

import gc

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
