"""Session fixtures: a real Kafka broker and the real ClickHouse engine.

Broker, in order of preference:
1. ``TESSERA_KAFKA_BOOTSTRAP`` names an external broker: use it.
2. A Docker engine answers: a Kafka container through testcontainers.
3. Otherwise: the project's own broker (infra.kafka_broker) from Maven Central jars, in a
   temporary directory on free ports, stopped at the end of the session.

ClickHouse: embedded chdb in one session directory (chdb allows one path per process);
each test gets its own database, and its own topic prefix and consumer group.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, TypeVar

import pytest

from tessera.config import Settings, load_settings
from tessera.infra.kafka_broker import KafkaBroker, free_port
from tessera.schemas import base as contracts
from tessera.storage.store import exit_skipping_chdb_teardown

T = TypeVar("T")

# Every contract a core builds without validating it (``built``) is validated in the
# tests, here and in the services they start as processes.
os.environ["TESSERA_CHECK_BUILT"] = "1"
contracts.CHECK_BUILT = True


def run(coro: Awaitable[T], timeout: float = 120.0) -> T:
    """Run a coroutine to completion in a fresh event loop (tests stay plain functions)."""
    return asyncio.run(asyncio.wait_for(coro, timeout))  # type: ignore[arg-type]


async def until(predicate: Any, timeout: float) -> bool:
    """Whether the async ``predicate`` came true within ``timeout`` seconds (asked twice a second)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.5)
    return False


async def run_for(worker: Any, seconds: float) -> None:
    """Run a service's ``run(stop)`` for ``seconds``, then stop it cleanly."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait_for(task, 30)


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("TESSERA_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    if _docker_answers():
        from testcontainers.community.kafka import KafkaContainer

        with KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"), port=free_port(), controller_port=free_port(), heap="384m")
    broker.start(timeout=120)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def session_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tessera-data")


@pytest.fixture
def base_settings(session_data_dir: Path) -> Settings:
    """Settings for tests that need no broker: unique ClickHouse database, session chdb path."""
    uid = uuid.uuid4().hex[:10]
    return load_settings(
        env={},
        data_dir=str(session_data_dir),
        clickhouse_url=os.environ.get("TESSERA_CLICKHOUSE_URL", ""),
        clickhouse_database=f"test_{uid}",
        topic_prefix=f"test-{uid}",
        app_id=f"test-{uid}",
        metrics_port=0,
    )


@pytest.fixture
def settings(base_settings: Settings, kafka_bootstrap: str) -> Settings:
    """Settings pointing at the session broker, with unique topics and consumer group."""
    return base_settings.replace(kafka_bootstrap=kafka_bootstrap)


@pytest.fixture
def consume() -> Callable[..., Any]:
    """``consume(settings, topic, n)`` -> the first n records of a topic (all partitions)."""
    from aiokafka import AIOKafkaConsumer

    async def _consume(settings: Settings, topic: str, n: int, timeout: float = 30.0,
                       committed_only: bool = False) -> list[Any]:
        c = AIOKafkaConsumer(
            topic, bootstrap_servers=settings.bootstrap_servers, auto_offset_reset="earliest",
            enable_auto_commit=False, group_id=None,
            isolation_level="read_committed" if committed_only else "read_uncommitted",
        )
        await c.start()
        out: list[Any] = []
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while len(out) < n and loop.time() < deadline:
                batch = await c.getmany(timeout_ms=500)
                for records in batch.values():
                    out.extend(records)
        finally:
            await c.stop()
        return out

    return _consume


@pytest.fixture
def consume_events(consume: Callable[..., Any]) -> Callable[..., Any]:
    """``consume_events(settings, "billing-lines", n)`` -> the first n events of a logical
    topic (this test's prefix), decoded."""
    from tessera.schemas import decode, topic_spec

    async def _events(settings: Settings, topic: str, n: int, timeout: float = 30.0,
                      committed_only: bool = False) -> list[Any]:
        records = await consume(settings, topic_spec(topic).full_name(settings.topic_prefix), n, timeout=timeout,
                                committed_only=committed_only)
        return [decode(r.value) for r in records]

    return _events


def service_process(settings, *argv: str, data_dir: str | None = None, metrics_port: int = 0) -> subprocess.Popen:
    """``tessera <argv>`` as a process of its own on the test's broker, topics and data
    directory (checkpoints every second; /metrics and /readyz on ``metrics_port``, none by
    default); its output goes to a log file beside the data."""
    env = dict(os.environ, TESSERA_KAFKA_BOOTSTRAP=settings.kafka_bootstrap, TESSERA_TOPIC_PREFIX=settings.topic_prefix,
               TESSERA_APP_ID=settings.app_id, TESSERA_DATA_DIR=data_dir or settings.data_dir,
               TESSERA_METRICS_PORT=str(metrics_port),
               TESSERA_CHECKPOINT_INTERVAL_S="1", TESSERA_CLICKHOUSE_DATABASE="faults",
               PYTHONUNBUFFERED="1")     # the log is read while the service runs
    # Each process's log is kept beside the test's data (its path is printed on failure).
    log_path = os.path.join(data_dir or settings.data_dir, f"{argv[0]}-{time.monotonic_ns()}.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    print("service log:", log_path)
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "tessera.app.cli.main", *argv], env=env,
                                stdout=log_file, stderr=subprocess.STDOUT)
    proc.log_path = log_path  # type: ignore[attr-defined]
    return proc


def latest_revisions(lines: list[Any]) -> dict[str, Any]:
    """Billing lines by line_id, keeping the highest revision (what a consumer keeps)."""
    latest: dict[str, Any] = {}
    for line in lines:
        if line.line_id not in latest or line.revision >= latest[line.line_id].revision:
            latest[line.line_id] = line
    return latest


def vcpu_hours_placed(events: list[Any], partner: str) -> Decimal:
    """vCPU-hours placed on ``partner``, from placed to released: what it must be billed, once."""
    from tessera.schemas import AllocationPlaced, AllocationReleased

    placed = {e.allocation_id: e for e in events if isinstance(e, AllocationPlaced)}
    total = Decimal(0)
    for e in events:
        if isinstance(e, AllocationReleased) and e.allocation_id in placed:
            p = placed[e.allocation_id]
            d = e.event_time - p.event_time
            hours = Decimal((d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds) / Decimal(3_600_000_000)
            total += sum((hours * pl.replicas * Decimal(str(p.per_replica.vcpu)) for pl in p.placements
                          if pl.provider == partner), Decimal(0))
    return total


def vcpu_hours_billed(lines: list[Any], partner: str) -> Decimal:
    """vCPU-hours billed to ``partner`` (the latest revision of each line)."""
    return sum((line.quantity for line in latest_revisions(lines).values()
                if line.partner_id == partner and line.charge_category == "usage" and "vcpu" in line.sku),
               Decimal(0))


@pytest.fixture(scope="session")
def sql_server(session_data_dir: Path) -> Iterator[Any]:
    """``tessera sql serve`` in this process, over the session's embedded store: the
    ClickHouse HTTP interface that clickhouse-connect (the server backend) talks to."""
    from tessera.app.sqlserver import SqlServer
    from tessera.storage.store import ChdbStore

    settings = load_settings(env={}, data_dir=str(session_data_dir), clickhouse_database="default")
    server = SqlServer(ChdbStore(settings.chdb_path, "default"), port=0, allow_writes=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["embedded", "http"])
def any_backend_settings(request: pytest.FixtureRequest, base_settings: Settings) -> Settings:
    """The same storage tests on both backends: embedded chdb, and clickhouse-connect over
    HTTP (against ``tessera sql serve``, or the real server in TESSERA_CLICKHOUSE_URL)."""
    if request.param == "embedded":
        return base_settings.replace(clickhouse_url="")
    if base_settings.clickhouse_url:
        return base_settings
    server = request.getfixturevalue("sql_server")
    return base_settings.replace(clickhouse_url=server.url)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that uses the session broker (directly or through a fixture) is marked
    ``kafka``, so ``-m "not kafka"`` (``make test-unit``) never starts one."""
    for item in items:
        if "kafka_bootstrap" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)


_EXIT_STATUS = {"code": 0}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS["code"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without chdb's C++ global teardown, which can crash after every test ran and
    reported (tessera.storage.store.exit_skipping_chdb_teardown says why)."""
    exit_skipping_chdb_teardown(_EXIT_STATUS["code"])
