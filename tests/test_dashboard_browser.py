"""The live dashboard in a real browser: headless Chromium (Debian's chromium and
chromium-driver packages, driven by Selenium) opens the page while the whole pipeline runs
on the broker, and the numbers on screen must equal what SQL says about the same store.
The screenshot it takes (1400x900) is the one the README shows: docs/img/dashboard.png."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from tests.conftest import run

from tessera.app import datasets
from tessera.app.dashboard import Dashboard
from tessera.app.pipeline import DEMO_AGREEMENTS, blended_fleet, pipeline, register
from tessera.pricing.agreements import parse_agreements
from tessera.streams.produce import producer_for, send_events

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "img" / "dashboard.png"
HAVE_BROWSER = Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()

pytestmark = [
    pytest.mark.slow, pytest.mark.browser,
    pytest.mark.skipif(not HAVE_BROWSER and os.environ.get("TESSERA_REQUIRE_BROWSER") != "1",
                       reason="headless Chromium is not installed (apt-get install chromium chromium-driver)"),
]
N = 160


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900",
                "--hide-scrollbars", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    return webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))


#: Reads the rendered page in one go: the page redraws every refresh, and a script runs
#: between redraws, so the values all come from the same render (what the user sees).
READ_PAGE = """
const cells = (sel, key) => Object.fromEntries([...document.querySelectorAll(sel)].map(
    r => [r.getAttribute("data-id"), r.querySelector(`td[data-k=${key}]`).textContent]));
return {
  as_of: document.body.getAttribute("data-as-of"),
  kpi: Object.fromEntries(["placed", "rejected", "cost", "vcpu"].map(
      k => [k, document.getElementById(`kpi-${k}`).textContent])),
  resources: cells("#resources tbody tr[data-id]", "vcpu_free"),
  bills: cells("#bills tbody tr[data-id]", "amount"),
  rejected: cells("#rejections tbody tr[data-id]", "n"),
  axes: [...document.querySelectorAll("svg .axis-label")].map(t => t.textContent),
};
"""


def _on_screen(driver) -> dict:
    """What the page shows, once it has rendered a snapshot."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-as-of"))
    return driver.execute_script(READ_PAGE)


def _by_sql(store) -> dict:
    """The same numbers, straight from SQL over the event log (not through the dashboard's code)."""
    db = store.database

    def one(sql: str):
        return store.query(sql)[0]["v"]

    placed = int(one(f"SELECT uniqExact(JSONExtractString(payload, 'request_id')) AS v FROM {db}.events FINAL "
                     f"WHERE event_type = 'allocation.placed'"))
    rejected = {r["c"]: int(r["n"]) for r in store.query(
        f"SELECT JSONExtractString(payload, 'code') AS c, uniqExact(JSONExtractString(payload, 'request_id')) AS n "
        f"FROM {db}.events FINAL WHERE event_type = 'allocation.rejected' GROUP BY c")}
    live = store.query(f"SELECT toString(sum(price_per_hour)) AS usd, sum(vcpu_per_replica * replicas) AS vcpu "
                       f"FROM {db}.v_allocation_usage WHERE released_at IS NULL")[0]
    free = {r["id"]: float(r["cap"]) - float(r["used"]) for r in store.query(f"""
        SELECT r.resource_id AS id, r.vcpu AS cap, ifNull(u.used, 0) AS used FROM {db}.v_resources AS r
        LEFT JOIN (SELECT resource_id, sum(vcpu_per_replica * replicas) AS used FROM {db}.v_allocation_usage
                   WHERE released_at IS NULL GROUP BY resource_id) AS u USING (resource_id)
        WHERE NOT r.removed SETTINGS join_use_nulls = 1""")}
    bills = {f"{r['p']}/{r['m']}": Decimal(r["a"]) for r in store.query(f"""
        SELECT p, m, toString(sum(a)) AS a FROM (
            SELECT argMax(JSONExtractString(payload, 'partner_id'), JSONExtractUInt(payload, 'revision')) AS p,
                   argMax(substring(JSONExtractString(payload, 'period_start'), 1, 7),
                          JSONExtractUInt(payload, 'revision')) AS m,
                   argMax(toDecimal128(JSONExtractString(payload, 'amount'), 9),
                          JSONExtractUInt(payload, 'revision')) AS a
            FROM {db}.events FINAL WHERE event_type = 'billing.line'
            GROUP BY JSONExtractString(payload, 'line_id')) GROUP BY p, m""")}
    return {"placed": placed, "rejected": rejected, "cost": Decimal(live["usd"] or "0"),
            "vcpu": float(live["vcpu"] or 0), "free": free, "bills": bills}


def _number(text: str) -> Decimal:
    return Decimal(text.replace(",", ""))


def _agree(screen: dict, sql: dict) -> list[str]:
    """Differences between the page and SQL (empty: they agree, to the digits shown)."""
    out = []
    k = screen["kpi"]
    if _number(k["placed"]) != sql["placed"]:
        out.append(f"placed {k['placed']} != {sql['placed']}")
    if _number(k["rejected"]) != sum(sql["rejected"].values()):
        out.append(f"rejected {k['rejected']} != {sql['rejected']}")
    if {c: int(_number(n)) for c, n in screen["rejected"].items()} != sql["rejected"]:
        out.append(f"rejections {screen['rejected']} != {sql['rejected']}")
    if _number(k["cost"]) != sql["cost"].quantize(Decimal("0.01")):
        out.append(f"cost {k['cost']} != {sql['cost']}")
    if _number(k["vcpu"]) != round(sql["vcpu"]):
        out.append(f"vCPU {k['vcpu']} != {sql['vcpu']}")
    if set(screen["resources"]) != set(sql["free"]):
        out.append("the resource table lists other resources than SQL")
    for rid, shown in screen["resources"].items():
        if rid in sql["free"] and _number(shown) != Decimal(f"{max(sql['free'][rid], 0):.1f}"):
            out.append(f"{rid} free vCPU {shown} != {sql['free'][rid]}")
    if {b: _number(a) for b, a in screen["bills"].items()} != {b: a.quantize(Decimal("0.01"))
                                                               for b, a in sql["bills"].items()}:
        out.append(f"bills {screen['bills']} != {sql['bills']}")
    return out


def test_the_dashboard_shows_what_sql_says_while_the_pipeline_runs(settings):
    st = settings.replace(forecast_interval_s=2, forecast_season=10, forecast_horizon=3, forecast_grace_s=1.0)
    agreements = parse_agreements(DEMO_AGREEMENTS)
    resources = blended_fleet(own_cpu=2, own_gpu=10, digitalocean=8, gcp=6)

    async def scenario():
        async with pipeline(st, agreements, batch_wait_ms=30) as p:
            await register(st, resources)
            await asyncio.sleep(2)
            reqs = list(datasets.alibaba_pod_requests(datetime.now(timezone.utc), limit=N, time_scale=2e4,
                                                      id_prefix="dash-"))
            producer = producer_for(st)
            await producer.start()
            try:
                # In three waves, so the charts have a history to draw.
                for wave in (reqs[: N // 3], reqs[N // 3: 2 * N // 3], reqs[2 * N // 3:]):
                    await send_events(producer, st, "requests", wave)
                    await asyncio.sleep(4)
            finally:
                await producer.stop()
            board = await Dashboard(p.store, p.store.database, port=0, refresh_s=1.0).start()
            driver = await asyncio.to_thread(_browser)
            try:
                await asyncio.to_thread(driver.get, board.url)
                # Live: the numbers move while work is decided and billed. Compare the page with
                # SQL until a refresh finds them equal (each read of the page is a fresh render).
                deadline = time.monotonic() + 90
                diff: list[str] = ["not compared yet"]
                while time.monotonic() < deadline and diff:
                    await asyncio.sleep(2)
                    screen = await asyncio.to_thread(_on_screen, driver)
                    sql = await asyncio.to_thread(_by_sql, p.store)
                    diff = _agree(screen, sql)
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                await asyncio.to_thread(driver.save_screenshot, str(SCREENSHOT))
                size = await asyncio.to_thread(lambda: driver.get_window_size())
            finally:
                await asyncio.to_thread(driver.quit)
                await board.stop()
        return screen, sql, diff, size

    screen, sql, diff, size = run(scenario(), timeout=300)
    assert diff == [], diff
    assert sql["placed"] > 0 and screen["resources"] and sql["bills"], (screen, sql)
    assert (size["width"], size["height"]) == (1400, 900)
    # Axes say what they measure, with units.
    assert {"cost rate (USD / hour)", "time (UTC)", "interval start (UTC)"} <= set(screen["axes"])
    assert any("requested per interval" in a for a in screen["axes"])
    assert SCREENSHOT.stat().st_size > 20_000
