"""``tessera demo``: an own data center blended with partner clouds on a real workload.

1. brings up the local Kafka broker (unless TESSERA_KAFKA_BOOTSTRAP names one);
2. starts the whole pipeline in this process: event log -> ClickHouse, the live resource
   table, demand forecasts, the transactional scheduler and the billing agent;
3. registers the own data center (Alibaba v2023 nodes at amortized capex + opex) and two
   partners (GCP europe-west4 and DigitalOcean catalogs) with agreements;
4. replays Alibaba v2023 pod arrivals, time-compressed, as workload requests (SLA tier
   from the QoS class), paced in real time, plus two malformed messages;
5. lets placements, releases, forecasts and billing run, then drains;
6. prints a summary from ClickHouse SQL and writes an HTML report with plots.

Every run uses its own topics and database (``demo-<run>``), so running it twice works.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tessera.app import datasets, live
from tessera.app.pipeline import DEMO_AGREEMENTS, blended_fleet, heartbeat, pipeline, register
from tessera.app.report import svg_chart, write_report
from tessera.config import Settings
from tessera.infra.kafka_broker import BrokerError, broker_from_settings
from tessera.pricing.agreements import parse_agreements
from tessera.scheduler.core import DEFAULT_SLA_TARGETS
from tessera.streams.produce import producer_for, send_events, send_raw

STEPS = 6


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _pretty(store, sql: str) -> str:
    # NoEscapes: chdb colours Pretty output when stdout is a terminal, and these tables also
    # go into the HTML report, where the colour codes would be garbage.
    return store.query_raw(sql, "PrettyCompactNoEscapesMonoBlock").decode()


async def _replay(p, settings: Settings, requests, run: str) -> int:
    """Publish requests at their (compressed) arrival times; show progress."""
    producer = producer_for(settings, linger_ms=5)
    await producer.start()
    db = p.store.database
    sent = 0
    t0 = time.monotonic()
    start = requests[0].event_time if requests else datetime.now(timezone.utc)
    try:
        i = 0
        last_print = 0.0
        while i < len(requests):
            now = time.monotonic() - t0
            due = [r for r in requests[i:] if (r.event_time - start).total_seconds() <= now]
            if due:
                await send_events(producer, settings, "requests", due)
                i += len(due)
                sent += len(due)
            if now - last_print >= 1.0 or i == len(requests):
                last_print = now
                counts = _outcomes(p.store, db)
                print(f"\r      {now:5.0f}s  sent {sent:>5}/{len(requests)}  placed {counts['placed']:>5}  "
                      f"queued {counts['queued']:>4}  rejected {counts['rejected']:>4}  "
                      f"released {counts['released']:>5}", end="", file=sys.stderr, flush=True)
            await asyncio.sleep(0.2)
        await send_raw(producer, settings, "requests", [
            f"demo {run}: this is not JSON".encode(),
            b'{"schema_version":1,"event_type":"workload.request","event_id":"bad","event_time":'
            b'"2026-01-01T00:00:00Z","request_id":"r","tenant":"t","per_replica":{"vcpu":"lots"}}'],
            key=b"demo-broken")
    finally:
        await producer.stop()
        print(file=sys.stderr)
    return sent


async def _fail_busiest_own_node(p, silenced: set[str], after_s: float) -> None:
    """A third into the replay, the own node holding the most replicas stops its heartbeats
    (as a failed node does): the health monitor marks it unhealthy and the migration agent
    evacuates its work."""
    await asyncio.sleep(after_s)
    held: dict[str, int] = {}
    for a in p.scheduler.core.allocations.values():
        for rid, k in a.placements:
            if rid.startswith("own/"):
                held[rid] = held.get(rid, 0) + k
    if held:
        node = max(sorted(held), key=held.get)
        silenced.add(node)
        _say(f"      own node {node} fails now (its heartbeats stop) with {held[node]} replicas on it")


async def _quiet_end(p, longest_s: float = 45.0) -> None:
    """The quiet end of the replay: no arrivals, while the forecasts learn that nothing comes
    (the forecast agent's quiet clock closes their intervals with zero demand) and the
    migration agent's consolidation passes may close partner VMs the remaining work strands.
    Up to ``longest_s``, or until a pass has moved work."""
    if p.migration is None:
        return
    seen = len(p.migration.plans)
    t0 = time.monotonic()
    while time.monotonic() - t0 < longest_s:
        if any(consolidate and plan.moves for consolidate, plan in p.migration.plans[seen:]):
            _say(f"      the quiet end: consolidation moved work after {time.monotonic() - t0:.0f} s")
            return
        await asyncio.sleep(1)
    _say(f"      the quiet end: {longest_s:.0f} s without arrivals; consolidation moved nothing (see below why)")


def _trace_window(t0: datetime, n: int, seconds: float, run: str) -> tuple[list, float]:
    """``n`` consecutive pod arrivals from the middle of the trace (the file is not in
    arrival order, and its start is sparse), rebased to ``t0`` and compressed to last
    ``seconds``; lifetimes are compressed by the same factor."""
    pods = sorted(datasets.alibaba_pod_requests(t0, id_prefix=f"{run}-"), key=lambda r: r.event_time)
    window = pods[max(0, len(pods) // 2 - n // 2):][:n]
    first, last = window[0].event_time, window[-1].event_time
    span = max((last - first).total_seconds(), 1.0)
    scale = span / seconds
    out = []
    for r in window:
        at = t0 + (r.event_time - first) / scale
        dur = r.expected_duration_seconds / scale if r.expected_duration_seconds else None
        out.append(r.model_copy(update={"event_time": at, "expected_duration_seconds": max(dur, 1.0) if dur else None}))
    return out, span


def _outcomes(store, db: str) -> dict[str, int]:
    rows = store.query(f"SELECT event_type, uniqExact(event_id) AS n FROM {db}.events "
                       f"WHERE event_type LIKE 'allocation.%' GROUP BY event_type")
    got = {r["event_type"].split(".")[1]: int(r["n"]) for r in rows}
    return {k: got.get(k, 0) for k in ("placed", "queued", "rejected", "released")}


def _timeline(store, db: str, t0: datetime, value: str, scale: float = 1.0) -> dict[str, list[tuple[float, float]]]:
    """``live.timeline`` from the replay's start, x in hours of the trace (``scale``: trace
    seconds per replay second)."""
    _, series = live.timeline(store, db, value, start=t0.timestamp())
    return {p: [(dx * scale / 3600, v) for dx, v in pts] for p, pts in series.items()}


def _report(store, db: str, t0: datetime, run: str, tables: list[tuple[str, str]], path: Path,
            scale: float = 1.0) -> Path:
    """The HTML report; x axes in hours of the trace (``scale``: trace seconds per replay second)."""
    cost = _timeline(store, db, t0, "toFloat64(price_per_hour)", scale)
    vcpu = _timeline(store, db, t0, "vcpu_per_replica * replicas", scale)
    gpu = _timeline(store, db, t0, "gpu_per_replica * replicas", scale)
    caps = {r["provider"]: (float(r["c"]), float(r["g"])) for r in store.query(
        f"SELECT provider, sum(vcpu) AS c, sum(gpu) AS g FROM {db}.v_resources WHERE NOT removed GROUP BY provider")}
    util = {p: [(x, y / caps[p][0]) for x, y in s] for p, s in vcpu.items() if caps.get(p, (0, 0))[0]}
    gpu_util = {p: [(x, y / caps[p][1]) for x, y in s] for p, s in gpu.items() if caps.get(p, (0, 0))[1]}
    name = live.busiest_series(store, db)
    band_svg = "<p>(no forecasts yet)</p>"
    if name:
        f = live.forecast_band(store, db, name, limit=100_000)
        s0 = t0.timestamp()

        def hours(t: float) -> float:
            return (t - s0) * scale / 3600

        xs = [hours(t) for t, *_ in f["band"]]
        band_svg = svg_chart(f"{name}: one-step forecast band vs realised demand",
                             {"realised": [(hours(t), v) for t, v in f["actual"]],
                              "median forecast": list(zip(xs, [mid for _, _, mid, _ in f["band"]]))},
                             band=(xs, [lo for _, lo, _, _ in f["band"]], [hi for *_, hi in f["band"]]),
                             y_label="demand per interval", x_unit="h")
    sections = [
        ("Cost over time by provider (x: hours of the trace)",
         svg_chart("Cost rate of live placements (USD per hour)", cost, y_label="USD/h", x_unit="h")),
        ("Utilization: vCPU", svg_chart("vCPU in use / vCPU offered, by provider", util, y_label="share",
                                        x_unit="h")),
        ("Utilization: GPU (most Alibaba v2023 pods want one: GPUs decide the spill to partners)",
         svg_chart("GPUs in use / GPUs offered, by provider", gpu_util, y_label="share", x_unit="h")),
        ("Forecast bands vs actual demand", band_svg),
    ]
    return write_report(path, f"Tessera demo run {run}", sections, tables)


async def _run(base: Settings, n_requests: int, seconds: float, report_path: Path | None) -> int:
    run = uuid.uuid4().hex[:6]
    settings = base.replace(topic_prefix=f"demo-{run}", app_id=f"tessera-demo-{run}",
                            clickhouse_database=f"demo_{run}", forecast_interval_s=3, forecast_season=20,
                            forecast_horizon=6, forecast_grace_s=1.0, metrics_port=0,
                            health_heartbeat_timeout_s=6.0)   # a silent node turns unhealthy within seconds
    settings = store_of_its_own(settings, run)
    agreements = parse_agreements(DEMO_AGREEMENTS)
    _say(f"[2/{STEPS}] starting the pipeline: event log, live resource table, forecasts, scheduler, billing "
         f"(topics demo-{run}.*, database demo_{run})")
    t_start = time.monotonic()
    async with pipeline(settings, agreements, batch_wait_ms=50, aging_s=10.0, tuning_interval_s=15.0,
                        consolidate_every_s=10.0, say=lambda text: _say(f"      {text}")) as p:
        store, db = p.store, p.store.database
        board = await _start_dashboard(settings, store, db)
        # A small own data center, so bursts spill to partners: with 8 GPU nodes (16 before)
        # the few pods that outlive the replay had mostly found own GPUs free, and the quiet
        # end had no partner VM left to consolidate in most runs.
        resources = blended_fleet(own_cpu=10, own_gpu=8, digitalocean=40, gcp=60)
        own = sum(r.spec.provider == "own" for r in resources)
        _say(f"[3/{STEPS}] registering {len(resources)} resources: {own} own nodes (Alibaba v2023, "
             f"amortized capex + opex), DigitalOcean and GCP offers with agreements")
        await register(settings, resources)
        silenced: set[str] = set()
        p.tasks.append(asyncio.create_task(heartbeat(settings, [r.resource_id for r in resources], p.stop,
                                                     silenced), name="heartbeat"))
        await asyncio.sleep(2)
        t0 = datetime.now(timezone.utc) + timedelta(seconds=1)
        requests, span = _trace_window(t0, n_requests, seconds, run)
        scale = span / seconds
        _say(f"[4/{STEPS}] replaying {len(requests)} Alibaba v2023 pods ({span / 3600:.0f} h of arrivals "
             f"compressed {scale:,.0f}x into {seconds:.0f} s)")
        failing = asyncio.create_task(_fail_busiest_own_node(p, silenced, seconds / 3))
        await _replay(p, settings, requests, run)
        await failing
        _say(f"[5/{STEPS}] draining: outcomes, releases, forecasts and billing catching up")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            c = _outcomes(store, db)
            if c["placed"] + c["rejected"] + c["queued"] >= len(requests):
                break
            await asyncio.sleep(1)
        await _quiet_end(p)
        await asyncio.sleep(5)
        _say(f"[6/{STEPS}] results (ClickHouse SQL over the run's events)")
        # The alternatives price this run's own usage: the own data center at its price per
        # vCPU (had it the capacity), and partners at the cheapest offer per vCPU that could
        # run each allocation (a GPU offer for GPU work: most Alibaba v2023 pods want one).
        alternatives = f"""
                SELECT * FROM (
                SELECT 'blended (this run)' AS option, round(toFloat64(sum(cost)) / sum(vcpu_hours), 5) AS usd_per_vcpu_hour
                FROM {db}.v_allocation_usage
                UNION ALL
                SELECT 'own data center only', round(sum(p) / sum(v), 5) FROM (
                    SELECT toFloat64OrZero(JSONExtractString(payload, 'spec', 'price_per_hour')) AS p,
                           JSONExtractFloat(payload, 'spec', 'capacity', 'vcpu') AS v
                    FROM {db}.events FINAL WHERE event_type = 'resource.discovered'
                      AND JSONExtractString(payload, 'spec', 'provider') = 'own')
                UNION ALL
                SELECT 'cheapest partner only (GPU offers for GPU work)',
                       round(sum(a.vcpu_hours * if(n.gpu, o.gpu_min, o.any_min)) / sum(a.vcpu_hours), 5)
                FROM {db}.v_allocation_usage AS a
                INNER JOIN (SELECT JSONExtractString(payload, 'allocation_id') AS allocation_id,
                                   JSONExtractFloat(payload, 'per_replica', 'gpu') > 0 AS gpu
                            FROM {db}.events FINAL WHERE event_type = 'allocation.placed') AS n USING (allocation_id)
                CROSS JOIN (SELECT minIf(p / v, g > 0) AS gpu_min, min(p / v) AS any_min FROM (
                    SELECT JSONExtractString(payload, 'spec', 'provider') AS pr,
                           toFloat64OrZero(JSONExtractString(payload, 'spec', 'price_per_hour')) AS p,
                           JSONExtractFloat(payload, 'spec', 'capacity', 'vcpu') AS v,
                           JSONExtractFloat(payload, 'spec', 'capacity', 'gpu') AS g
                    FROM {db}.events FINAL WHERE event_type = 'resource.discovered' AND pr != 'own' AND v > 0)) AS o
                ) ORDER BY usd_per_vcpu_hour"""
        tables = [
            ("Placements by provider", _pretty(store, f"""
                SELECT provider, uniqExactIf(allocation_id, kind = 'placed') AS allocations,
                       sumIf(replicas, kind = 'placed') AS total_replicas,
                       round(sumIf(vcpu_per_replica * replicas, kind = 'placed')) AS total_vcpu,
                       sumIf(replicas, kind = 'migrated_in') AS replicas_moved_in,
                       round(sum(toFloat64(cost)), 4) AS cost_usd
                FROM {db}.v_allocation_usage GROUP BY provider ORDER BY provider""")),
            ("Cost per vCPU-hour: blended vs own-only (had it the capacity) vs cheapest partner only",
             _pretty(store, alternatives)),
            ("Queue waits by SLA tier (seconds)", _pretty(store, f"SELECT * FROM {db}.v_queue_wait_by_tier ORDER BY sla_tier")),
            ("Forecast accuracy (one-step and longer horizons). The demo's series are about 30 intervals\n"
             "long, all inside the engine's 30-interval warm-up, where the band is a Gaussian guess from\n"
             "few residuals; docs/benchmarks.md measures its coverage on long series.", _pretty(store, f"""
                SELECT step, sum(forecasts) AS scored_forecasts, round(avg(mae), 2) AS mean_mae,
                       round(sum(band_coverage * forecasts) / scored_forecasts, 3) AS band_coverage_5_95
                FROM {db}.v_forecast_accuracy GROUP BY step ORDER BY step""")),
            ("Partner bills, month to date (latest revision of each line)", _pretty(store, f"""
                SELECT partner, currency, sum(amount) AS total_usd, groupArray(concat(sku, '=', toString(amount))) AS bill_lines
                FROM (SELECT JSONExtractString(payload, 'line_id') AS line_id,
                             argMax(JSONExtractString(payload, 'partner_id'), JSONExtractUInt(payload, 'revision')) AS partner,
                             argMax(JSONExtractString(payload, 'currency'), JSONExtractUInt(payload, 'revision')) AS currency,
                             argMax(JSONExtractString(payload, 'sku'), JSONExtractUInt(payload, 'revision')) AS sku,
                             argMax(toDecimal64(JSONExtractString(payload, 'amount'), 2), JSONExtractUInt(payload, 'revision')) AS amount
                      FROM {db}.events FINAL WHERE event_type = 'billing.line' GROUP BY line_id)
                GROUP BY partner, currency ORDER BY partner""")),
            ("Provisioning hints (forecast demand beyond the capacity in service; latest per interval)",
             _pretty(store, f"""
                SELECT pool, needed_by, round(shortfall_vcpu, 1) AS shortfall_vcpu,
                       round(free_in_service_vcpu, 1) AS free_in_service_vcpu, suggested_resources,
                       suggested_cost_per_hour, hints
                FROM {db}.v_provisioning_hints ORDER BY needed_by DESC LIMIT 8""")),
            ("Learning-driven tuning (headroom quantile per 15 s window; reward = -(cost of capacity held) "
             "- 1.00 per SLA miss)", _pretty(store, f"""
                SELECT context, arm AS headroom_quantile, count() AS windows, round(avg(reward), 4) AS mean_reward,
                       sum(window_misses) AS sla_misses
                FROM (SELECT context, previous_arm AS arm, reward, window_misses FROM {db}.v_tuning
                      WHERE reward IS NOT NULL)
                GROUP BY context, arm ORDER BY context, arm""")),
            ("Migrations (the migration agent: evacuations from the failed node, consolidation; partner bills "
             "follow each cut-over)", _pretty(store, f"""
                SELECT reason, status, count() AS migrations, sum(if(replicas = 0, 1, replicas)) AS replicas_moved,
                       groupUniqArray(source_resource_id) AS from_resources,
                       round(sum(toFloat64(expected_saving_per_hour)), 4) AS planned_saving_per_hour
                FROM {db}.v_migrations GROUP BY reason, status ORDER BY reason, status""")),
            ("Usage-limit alerts", _pretty(store, f"SELECT * FROM {db}.v_alerts_over_time")),
            ("Dead letters", _pretty(store, f"SELECT * FROM {db}.v_dead_letters_over_time")),
        ]
        for heading, text in tables:
            print(f"\n{heading}\n{text}", end="")
        summary = _summary(store, db, {r["option"]: float(r["usd_per_vcpu_hour"] or 0)
                                       for r in store.query(alternatives)})
        summary += _consolidation_line(p.migration)
        print(f"\n{summary}")
        tables.insert(0, ("In short", summary))
        path = report_path or (settings.data_path / "reports" / f"demo-{run}.html")
        _report(store, db, t0, run, tables, Path(path), scale)
        if board is not None:
            await board.stop()
    print(f"\nHTML report with plots: {Path(path).resolve()}")
    # The command as this process was started (`.venv/bin/tessera` from `make demo`), so the
    # hints work as printed.
    me = sys.argv[0] if os.path.basename(sys.argv[0]) == "tessera" else "tessera"
    again = f"TESSERA_CHDB_DIR={settings.chdb_dir} " if settings.chdb_dir else ""
    print(f"The live dashboard stopped with the demo; see this run again with: {again}{me} dashboard --database {db}")
    print(f"Finished in {time.monotonic() - t_start:.0f} s. Query more with: "
          f"{me} sql \"SELECT * FROM {db}.v_cost_per_partner_day\" (after this process exits), "
          f"or serve it: {me} sql serve. Stop the broker: {me} infra down")
    return 0


def store_of_its_own(settings: Settings, run: str) -> Settings:
    """The embedded store can be open in one process at a time: if another process (another
    demo, a worker) holds the configured one, this run writes a directory of its own."""
    from tessera.storage.store import ChdbStore, StorageError

    if settings.clickhouse_url:
        return settings
    try:
        ChdbStore(settings.chdb_path, settings.clickhouse_database)   # this process holds it from now on
        return settings
    except StorageError:
        alt = settings.data_path / f"chdb-demo-{run}"
        _say(f"      another process holds the embedded store {settings.chdb_path}; this run writes {alt}")
        return settings.replace(chdb_dir=str(alt))


async def _start_dashboard(settings: Settings, store, db: str):
    """The live dashboard over this run's store, on TESSERA_DASHBOARD_PORT (8050) or, if that
    is taken, a free port; the demo goes on without it if it cannot start."""
    from tessera.app.dashboard import Dashboard, DashboardError

    for port in (settings.dashboard_port, 0):
        try:
            board = await Dashboard(store, db, host=settings.dashboard_bind, port=port,
                                    password=settings.dashboard_password or None).start()
        except OSError:
            continue
        except DashboardError as exc:
            _say(f"      (no live dashboard: {exc})")
            return None
        _say(f"      live dashboard: {board.url}  (open it in a browser; it updates every 2 s)")
        return board
    return None


def _consolidation_line(worker) -> str:
    """What the consolidation passes found (from the agent's own plans: a pass that moves
    nothing leaves no event)."""
    passes = [p for consolidate, p in (worker.plans if worker else []) if consolidate]
    if not passes:
        return ""
    moved = sum(m.replicas for p in passes for m in p.moves)
    reasons: dict[str, int] = {}
    for p in passes:
        for skip in p.skipped:
            reasons[skip.reason] = reasons.get(skip.reason, 0) + 1
    if not reasons and all(p.cost_before == 0 for p in passes):
        why = "the partner capacity in use cost nothing at the margin (a partner's commitment still unmet)"
    else:
        why = "candidates left alone: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items(), key=lambda x: -x[1]))
        if "needed_again" in reasons:
            why += " (needed_again: the demand forecast needs that capacity before the move would pay off)"
        if "tier_evacuate_only" in reasons:
            why += (" (tier_evacuate_only: platinum work (the trace's Guaranteed pods) moves only to"
                    " evacuate)")
    return f"\n- Consolidation ran {len(passes)} times and moved {moved} replicas; {why}."


def _summary(store, db: str, rates: dict[str, float]) -> str:
    """What a platform engineer asks first, in numbers: cost and its alternatives (``rates``:
    USD per vCPU-hour by option), what blending saved, waits against the tiers' targets, idle
    own capacity, forecast quality."""
    def one(sql: str) -> dict:
        rows = store.query(sql)
        return rows[0] if rows else {}

    use = one(f"SELECT toFloat64(sum(cost)) AS total_cost, sum(vcpu_hours) AS vh, "
              f"sumIf(vcpu_hours, provider = 'own') AS own_vh, toFloat64(sumIf(cost, provider != 'own')) AS partner_cost "
              f"FROM {db}.v_allocation_usage")
    vh = float(use.get("vh") or 0.0)
    cost = float(use.get("total_cost") or 0.0)
    own_rate = rates.get("own data center only")
    cheap_rate = rates.get("cheapest partner only (GPU offers for GPU work)")
    lines = ["In short"]
    if vh:
        lines.append(f"- This run used {vh:,.1f} vCPU-hours and cost {cost:.4f} USD "
                     f"({cost / vh:.4f} per vCPU-hour; partners {float(use.get('partner_cost') or 0):.4f}).")
        if own_rate and cheap_rate:
            lines.append(f"- Own capacity only would have cost {own_rate * vh:.4f} USD, had it the capacity; the "
                         f"cheapest partner only {cheap_rate * vh:.4f} USD. Blending saved "
                         f"{cheap_rate * vh - cost:.4f} USD ({1 - cost / (cheap_rate * vh):.0%}) against partners only.")
    waits = store.query(f"SELECT sla_tier, placed, p99_s, max_s FROM {db}.v_queue_wait_by_tier ORDER BY sla_tier")
    worst = [f"{w['sla_tier']} p99 {float(w['p99_s']):.0f} s (target {DEFAULT_SLA_TARGETS.get(w['sla_tier'], 0):.0f} s)"
             for w in waits]
    if worst:
        lines.append("- Queue waits: " + "; ".join(worst) + ".")
    cap = one(f"SELECT sum(vcpu) AS c FROM {db}.v_resources WHERE provider = 'own' AND NOT removed")
    span = one(f"SELECT dateDiff('microsecond', min(placed_at), max(ifNull(released_at, placed_at))) / 3600e6 AS h "
               f"FROM {db}.v_allocation_usage")
    own_cap_h = float(cap.get("c") or 0) * float(span.get("h") or 0)
    if own_cap_h:
        lines.append(f"- Own capacity sat idle {1 - float(use.get('own_vh') or 0) / own_cap_h:.0%} of the time "
                     f"(vCPU-hours used over vCPU-hours offered while work ran).")
    mig = store.query(f"SELECT reason, count() AS n, uniqExact(source_resource_id) AS sources, "
                      f"toFloat64(sum(expected_saving_per_hour)) AS saving FROM {db}.v_migrations "
                      f"WHERE status = 'done' GROUP BY reason ORDER BY reason")
    if mig:
        parts = [f"{int(m['n'])} {m['reason']} ({int(m['sources'])} source resource"
                 f"{'s' if int(m['sources']) != 1 else ''})" for m in mig]
        saving = sum(float(m["saving"] or 0) for m in mig)
        lines.append(f"- Migrations done: {', '.join(parts)}; their plans expected to save {saving:.4f} USD per "
                     f"hour. Partner bills and the cost figures above split each moved allocation at its "
                     f"cut-over.")
    fc = one(f"SELECT sum(forecasts) AS n, avg(mae) AS mae, sum(band_coverage * forecasts) / sum(forecasts) AS cov "
             f"FROM {db}.v_forecast_accuracy WHERE step = 1")
    if fc.get("n"):
        lines.append(f"- Forecasts, one step ahead: {int(fc['n'])} scored, mean absolute error {float(fc['mae']):.2f},"
                     f" 5-95 % band covering {float(fc['cov']):.0%} of outcomes (inside the engine's warm-up).")
    return "\n".join(lines)


def _log_to_file(settings: Settings) -> Path:
    """Send every log record (aiokafka, Faust, Tessera's workers) to a file: while the
    broker warms up the clients log retried errors and warnings that a newcomer would read
    as failures. The console keeps the demo's own progress and results."""
    path = settings.data_path / "logs" / f"demo-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    return path


def run_demo(settings: Settings, requests: int = 1500, seconds: float = 90.0, report: str | None = None) -> int:
    log_path = _log_to_file(settings)
    _say(f"Tessera demo (library and worker logs: {log_path})")
    if settings.kafka_bootstrap:
        _say(f"[1/{STEPS}] using the Kafka broker at {settings.kafka_bootstrap}")
    else:
        _say(f"[1/{STEPS}] bringing up the local Kafka broker")
        try:
            broker_from_settings(settings).start(progress=lambda m: _say(f"      {m}"))
        except BrokerError as exc:
            _say(f"error: {exc}")
            return 1
    return asyncio.run(_run(settings, requests, seconds, Path(report) if report else None))


