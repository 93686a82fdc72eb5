"""The metrics and probe endpoint every service opens: three read-only paths, nothing else."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from tessera.streams import metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, method: str = "GET") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_metrics_liveness_and_readiness_answer_and_everything_else_is_refused(monkeypatch):
    probe = metrics.Probe(stale_s=60)
    monkeypatch.setattr(metrics, "PROBE", probe)
    port = _free_port()
    server = metrics.serve(port)
    base = f"http://127.0.0.1:{port}"
    try:
        metrics.SCHEDULER_DECISIONS.labels("placed", "placed").inc()
        status, body = _get(f"{base}/metrics")
        assert status == 200 and "tessera_scheduler_decisions_total" in body
        assert _get(f"{base}/healthz")[0] == 200
        probe.wait("rebuilding state")
        assert _get(f"{base}/readyz") == (503, "rebuilding state\n")
        probe.ready()
        assert _get(f"{base}/readyz") == (200, "ready\n")
        probe.last_beat -= 120                      # the loop stopped beating: not alive, not ready
        assert _get(f"{base}/healthz")[0] == 503 and _get(f"{base}/readyz")[0] == 503
        assert _get(f"{base}/admin")[0] == 404
        assert _get(f"{base}/metrics", method="POST")[0] == 405
        with pytest.raises(OSError, match="give each service on a host its own port"):
            metrics.serve(port)                     # a second service on the same port says what to do
    finally:
        server.shutdown()
        server.server_close()
    assert metrics.serve(0) is None


def test_the_grafana_dashboard_charts_only_metrics_tessera_exports():
    import json
    import re
    from pathlib import Path

    from prometheus_client import REGISTRY

    dash = json.loads((Path(__file__).parents[1] / "infra" / "grafana" / "tessera-dashboard.json").read_text())
    exported = set(REGISTRY._names_to_collectors)     # every series name, with _total, _bucket ...
    used = {name for p in dash["panels"] for t in p["targets"] for name in re.findall(r"tessera_[a-z_]+", t["expr"])}
    assert used and used <= exported, used - exported
