"""``tessera worker --loglevel warn`` keeps the root logger at WARNING: Faust's spinner
would set it to DEBUG for good, and every library's debug call would build a record. And a
worker whose stop hangs exits by itself after its grace period."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys

import pytest

from tessera.streams.app import create_app
from tessera.streams.runner import QuietWorker


@pytest.fixture
def saved_logging():
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


@pytest.mark.parametrize("loglevel, expected", [("warn", logging.WARNING), ("error", logging.ERROR),
                                                ("info", logging.INFO)])
def test_the_worker_leaves_the_root_logger_at_its_level(base_settings, saved_logging, loglevel, expected):
    loop = asyncio.new_event_loop()
    try:
        worker = QuietWorker(create_app(base_settings), loglevel=loglevel, loop=loop)
        worker._setup_logging()
        fetcher = logging.getLogger("aiokafka.consumer.fetcher")
        assert fetcher.getEffectiveLevel() == expected
        assert not fetcher.isEnabledFor(logging.DEBUG)
    finally:
        loop.close()


def test_a_worker_whose_stop_hangs_exits_by_itself_after_its_grace_period():
    """A stop signal starts the grace period: here the stop can never run (its loop is not
    running), so the process must exit on its own, with status 1 and a line saying why."""
    code = """
import asyncio, signal, time, faust
from tessera.streams.runner import QuietWorker
loop = asyncio.new_event_loop()
worker = QuietWorker(faust.App("grace", broker="kafka://127.0.0.1:1", loop=loop), loop=loop)
worker.grace_s = 0.5
worker._schedule_shutdown(signal.SIGTERM)
time.sleep(30)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=25)
    assert done.returncode == 1
    assert "did not stop within 0.5 s of the stop signal" in done.stderr
