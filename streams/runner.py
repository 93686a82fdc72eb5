"""Run a Faust app: inside a running event loop (tests, the demo) or as a process.

Generic plumbing: which agents an app carries is decided by the workers layer
(``tessera.agents.worker``), not here.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator

import faust

from tessera.config import Settings

from .admin import ensure_topics
from .supervise import exit_after


def app_settings(app: faust.App) -> Settings:
    return app.tessera_settings  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def running(app: faust.App, ready_timeout: float = 60.0) -> AsyncIterator[faust.App]:
    """Start the app's consumer, producer and agents in this loop; stop them on exit.

    Waits until the consumer group has its partitions assigned, so events produced after
    entering are seen.
    """
    await ensure_topics(app_settings(app))
    app.finalize()
    await app.start()
    try:
        deadline = asyncio.get_running_loop().time() + ready_timeout
        while not app.consumer.assignment():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the Faust consumer got no partitions assigned")
            await asyncio.sleep(0.1)
        yield app
    finally:
        await app.stop()


class QuietWorker(faust.Worker):
    """Faust's worker without its terminal progress spinner.

    The spinner spins on every log record, so for any log level of WARN or above Faust sets
    the root logger to DEBUG and leaves it there after start-up: every library's debug call
    (aiokafka logs a few per fetch) then builds a record and offers it to every handler.
    In the pipeline benchmark that was about a tenth of the sink worker's CPU, for nothing
    (the handler prints warnings only)."""

    def on_setup_root_logger(self, logger: Any, level: int) -> None:
        self.spinner = None


    #: Seconds from a stop signal to a hard exit (``TESSERA_SHUTDOWN_GRACE_S``).
    grace_s: float = 30.0

    def _schedule_shutdown(self, signal: Any) -> None:
        if not self._signal_stop_time:
            exit_after(self.grace_s)
        super()._schedule_shutdown(signal)


def serve_until_stopped(app: faust.App, loop: asyncio.AbstractEventLoop, loglevel: str = "info",
                        grace_s: float = 30.0) -> int:
    """Run ``app`` in this process until SIGINT/SIGTERM (then at most ``grace_s`` more);
    returns the exit status. Faust's worker ends by raising SystemExit: caught here, so
    that the command returns through the CLI's exit, which skips chdb's teardown (left to
    the interpreter's exit, that teardown once hung a stopped worker past its grace
    period, where the hard-exit timer's daemon thread can no longer run)."""
    worker = QuietWorker(app, loglevel=loglevel, loop=loop)
    worker.grace_s = grace_s
    try:
        worker.execute_from_commandline()
    except SystemExit as stopped:
        code = stopped.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0
