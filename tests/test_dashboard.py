"""The dashboard's server and data, without a browser: every panel's numbers come from the
SQL views; four paths, GET only, a strict CSP; a password beyond loopback.
(tests/test_dashboard_browser.py drives the page in headless Chromium.)"""

from __future__ import annotations

import asyncio
import base64

import aiohttp
import pytest
from tests.test_views import _events

from tessera.app import live
from tessera.app.dashboard import Dashboard, DashboardError
from tessera.storage.ddl import apply_migrations
from tessera.storage.rows import event_row
from tessera.storage.store import open_store


@pytest.fixture
def store(base_settings):
    return _filled(base_settings)


def _filled(settings):
    st = open_store(settings)
    apply_migrations(st)
    st.insert(f"{st.database}.events", [event_row(e, topic="t", partition=0, offset=i, key=e.key())
                                        for i, e in enumerate(_events())], dedup_token="d-1")
    return st


def test_the_snapshot_answers_every_panel_from_the_views(any_backend_settings):
    # Embedded, and through the SQL interface (how a dashboard beside a running worker reads).
    store = _filled(any_backend_settings)
    doc = live.snapshot(store, store.database)
    assert [r["resource_id"] for r in doc["resources"]] == ["own/n1", "gcp/r1"]          # own first
    gcp = doc["resources"][1]
    assert (gcp["health"], float(gcp["vcpu_used"]), gcp["vcpu_free"]) == ("healthy", 2.0, 2.0)  # a3 still runs
    o = doc["outcomes"]
    assert (o["placed"], o["released"], o["rejected_total"]) == (3, 2, 0)
    assert doc["cost"]["total_usd_per_hour"] == "0.1000" and doc["cost"]["vcpu_in_use"] == 2.0
    assert doc["forecast"]["series"] == "tier=gold/dim=vcpu"
    assert doc["forecast"]["band"][0][1:] == [5.0, 10.0, 15.0] and len(doc["forecast"]["actual"]) == 2
    assert [a["threshold_pct"] for a in doc["alerts"]] == [80]
    assert doc["hints"][0]["shortfall_vcpu"] == 30.0
    assert set(doc["cost_timeline"]["series"]) == {"own", "gcp"}


def _serve(store, **kw):
    board = Dashboard(store, store.database, port=0, **kw)

    async def go(requests):
        await board.start()
        try:
            async with aiohttp.ClientSession() as http:
                out = []
                for method, path, headers in requests:
                    async with http.request(method, board.url + path, headers=headers or {}) as r:
                        out.append((r.status, dict(r.headers), await r.read()))
                return out
        finally:
            await board.stop()
    return go


def test_four_paths_get_only_with_a_strict_policy(store):
    got = asyncio.run(_serve(store)([("GET", "/", None), ("GET", "/app.js", None), ("GET", "/app.css", None),
                                     ("GET", "/api/snapshot", None), ("GET", "/etc/passwd", None),
                                     ("POST", "/api/snapshot", None), ("DELETE", "/", None)]))
    assert [g[0] for g in got] == [200, 200, 200, 200, 404, 405, 405]
    for status, headers, _ in got:
        assert "script-src 'self'" in headers["Content-Security-Policy"] and headers["X-Content-Type-Options"] == "nosniff"
    assert b'<script src="/app.js"' in got[0][2] and b'"placed":3' in got[3][2]


def test_a_password_is_required_beyond_loopback_and_checked(store):
    with pytest.raises(DashboardError, match="password"):
        Dashboard(store, store.database, host="0.0.0.0")
    good = "Basic " + base64.b64encode(b"tessera:s3cret").decode()
    bad = "Basic " + base64.b64encode(b"tessera:guess").decode()
    got = asyncio.run(_serve(store, password="s3cret")([("GET", "/", None), ("GET", "/", {"Authorization": bad}),
                                                         ("GET", "/api/snapshot", {"Authorization": good})]))
    assert [g[0] for g in got] == [401, 401, 200]
    assert got[0][1]["WWW-Authenticate"].startswith("Basic")


def test_a_demo_finding_the_embedded_store_held_writes_one_of_its_own(tmp_path):
    """Two runs sharing a data directory: the second gets a store directory of its own
    instead of failing on chdb's lock."""
    import subprocess
    import sys

    from tessera.config import load_settings

    settings = load_settings(env={}, data_dir=str(tmp_path))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from tessera.storage.store import ChdbStore; "
        f"ChdbStore({str(settings.chdb_path)!r}); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        # A fresh process, as a second demo is (one chdb path per process: this test's own
        # process may hold another already).
        second = subprocess.run([sys.executable, "-c", (
            "from tessera.app.demo import store_of_its_own; from tessera.config import load_settings; "
            "from tessera.storage.store import ChdbStore; "
            f"s = store_of_its_own(load_settings(env={{}}, data_dir={str(tmp_path)!r}), 'r1'); "
            "ChdbStore(s.chdb_path).command('SELECT 1'); print(s.chdb_path)")],
            capture_output=True, text=True, timeout=120)
        assert second.stdout.strip().splitlines()[-1] == str(tmp_path / "chdb-demo-r1"), second.stderr
        assert "another process holds the embedded store" in second.stderr
    finally:
        holder.kill()
        holder.wait()
