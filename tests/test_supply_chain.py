"""The broker runs only from the jars recorded in the repository, on a Java it supports,
and the compose file exposes nothing beyond this machine."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tessera.infra import kafka_broker as kb


@pytest.fixture(scope="module")
def lib(tmp_path_factory) -> Path:
    """A copy of the resolved jar set (the session resolves it anyway for the broker)."""
    kb.ensure_jars()
    copy = tmp_path_factory.mktemp("lib")
    for jar in kb.LIB_DIR.glob("*.jar"):
        shutil.copy(jar, copy / jar.name)
    return copy


def test_the_resolved_jars_are_exactly_the_recorded_ones(lib):
    kb.verify_jars(lib)
    assert len(kb.CHECKSUMS.read_text().splitlines()) == len(list(lib.glob("*.jar")))


def test_a_changed_jar_an_extra_one_or_a_missing_one_is_refused(lib, tmp_path):
    victim = sorted(lib.glob("kafka-clients-*.jar"))[0]
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(kb.BrokerError, match="differs from the recorded"):
        kb.verify_jars(lib)
    (lib / "evil-1.0.jar").write_bytes(b"PK")
    with pytest.raises(kb.BrokerError, match="evil-1.0.jar: not in the recorded list"):
        kb.verify_jars(lib)
    victim.unlink()
    with pytest.raises(kb.BrokerError, match="missing"):
        kb.verify_jars(lib)


def test_java_17_or_newer_is_required(monkeypatch):
    assert kb.java_major_version() >= 17

    class Old:
        stdout, stderr = "", 'openjdk version "11.0.2" 2019-01-15\n'

    monkeypatch.setattr(kb.subprocess, "run", lambda *a, **k: Old())
    with pytest.raises(kb.BrokerError, match="Java 11 found; Kafka 4.x needs Java 17"):
        kb.ensure_jars()


def test_the_compose_file_binds_to_loopback_and_has_no_password():
    doc = yaml.safe_load((Path(kb.__file__).parent / "docker-compose.yml").read_text())
    ports = [p for svc in doc["services"].values() for p in svc.get("ports", [])]
    assert ports and all(p.startswith("127.0.0.1:") for p in ports)
    assert doc["services"]["clickhouse"]["environment"]["CLICKHOUSE_PASSWORD"].startswith("${CLICKHOUSE_PASSWORD:?")


def test_a_port_taken_by_another_process_is_not_used_silently(tmp_path):
    import socket

    with socket.socket() as other:            # something else already listens on the port
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        broker = kb.KafkaBroker(tmp_path / "kafka", port=port, controller_port=kb.free_port())
        assert broker.status().state == "external"
        assert "will not use it" in broker.status().describe()
        with pytest.raises(kb.BrokerError, match=f"port {port} is taken by a process this data directory"):
            broker.start(timeout=5)
