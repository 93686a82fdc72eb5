"""``tessera worker --loglevel warn`` keeps the root logger at WARNING: Faust's spinner
would set it to DEBUG for good, and every library's debug call would build a record."""

from __future__ import annotations

import asyncio
import logging

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
