"""`tessera infra up | status | down` against a broker of its own (not the session's)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tessera.infra.kafka_broker import free_port

pytestmark = pytest.mark.kafka


def _tessera(env, *args):
    return subprocess.run([sys.executable, "-m", "tessera.app.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=180)


@pytest.mark.skipif(bool(os.environ.get("TESSERA_KAFKA_BOOTSTRAP")), reason="an external broker is configured")
def test_infra_up_status_down_tell_the_truth(tmp_path):
    port, cport = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    env.update(TESSERA_DATA_DIR=str(tmp_path), TESSERA_KAFKA_PORT=str(port), TESSERA_KAFKA_CONTROLLER_PORT=str(cport),
               TESSERA_KAFKA_HEAP="256m")

    st = _tessera(env, "infra", "status")
    assert st.returncode == 3 and "not running" in st.stdout

    up = _tessera(env, "infra", "up")
    try:
        assert up.returncode == 0, up.stderr
        assert f"Kafka listening on 127.0.0.1:{port}" in up.stdout
        pid = (tmp_path / "kafka" / "broker.pid").read_text()

        again = _tessera(env, "infra", "up")
        assert again.returncode == 0 and "reusing the broker" in again.stderr
        assert (tmp_path / "kafka" / "broker.pid").read_text() == pid  # idempotent: same process

        st = _tessera(env, "infra", "status")
        assert st.returncode == 0 and f"running (pid {pid})" in st.stdout
    finally:
        down = _tessera(env, "infra", "down")
    assert down.returncode == 0 and "Kafka stopped" in down.stdout

    st = _tessera(env, "infra", "status")
    assert st.returncode == 3 and "not running" in st.stdout
    assert _tessera(env, "infra", "down").stdout.startswith("Kafka was not running")
