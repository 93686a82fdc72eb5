"""Versioned DDL, applied at start, idempotent, identical on chdb and a ClickHouse server.

Each migration is a numbered list of statements with ``{db}`` for the database. Applied
versions are recorded in ``{db}.schema_migrations``; re-running is a no-op, and every
statement is itself ``IF NOT EXISTS`` so a crash half-way through is safe to repeat.

Table choices (why):

* ReplacingMergeTree keyed by ``event_id``: Kafka delivery is at-least-once, so the same
  event may be written twice; merges collapse the copies and queries that must be exact
  use ``FINAL`` (or ``uniqExact(event_id)``) so they are right before a merge too.
* ``non_replicated_deduplication_window``: a retried batch insert with the same
  ``insert_deduplication_token`` is dropped by the engine itself.
* PARTITION BY month of event time: billing periods are calendar months (UTC), and old
  months can be dropped or moved whole. ORDER BY leads with the column most queries
  filter on (event type, topic), then time.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

from tessera.storage.store import AnalyticsStore


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


#: Views other views build on; migration 6 makes them anew (with their GPU columns) in a
#: database whose older migration 2 created them without.
_PLACEMENTS = """
            SELECT
                JSONExtractString(payload, 'allocation_id')             AS allocation_id,
                JSONExtractString(payload, 'request_id')                AS request_id,
                JSONExtractString(payload, 'tenant')                    AS tenant,
                JSONExtractString(payload, 'sla_tier')                  AS sla_tier,
                event_time                                              AS placed_at,
                JSONExtractFloat(payload, 'queued_seconds')             AS queued_seconds,
                JSONExtractFloat(payload, 'per_replica', 'vcpu')        AS vcpu_per_replica,
                JSONExtractUInt(payload, 'per_replica', 'gpu')          AS gpu_per_replica,
                JSONExtractString(p, 'resource_id')                     AS resource_id,
                JSONExtractString(p, 'provider')                        AS provider,
                JSONExtractUInt(p, 'replicas')                          AS replicas,
                toDecimal128OrZero(JSONExtractString(p, 'price_per_hour'), 9) AS price_per_hour
            FROM {db}.events FINAL
            ARRAY JOIN JSONExtractArrayRaw(payload, 'placements') AS p
            WHERE event_type = 'allocation.placed'
"""
_RESOURCES = """
            SELECT resource_id, argMax(provider, event_time) AS provider, argMax(region, event_time) AS region,
                   argMax(vcpu, event_time) AS vcpu, argMax(gpu, event_time) AS gpu,
                   argMax(price, event_time) AS price_per_hour,
                   argMax(removed, event_time) AS removed
            FROM (
                SELECT JSONExtractString(payload, 'resource_id') AS resource_id, event_time,
                       JSONExtractString(payload, 'spec', 'provider') AS provider,
                       JSONExtractString(payload, 'spec', 'region') AS region,
                       JSONExtractFloat(payload, 'spec', 'capacity', 'vcpu') AS vcpu,
                       JSONExtractUInt(payload, 'spec', 'capacity', 'gpu') AS gpu,
                       toDecimal128OrZero(JSONExtractString(payload, 'spec', 'price_per_hour'), 9) AS price,
                       event_type = 'resource.removed' AS removed
                FROM {db}.events FINAL
                WHERE event_type IN ('resource.discovered', 'resource.updated', 'resource.removed')
            ) GROUP BY resource_id
"""


#: ``v_allocation_usage``'s query (migration 6 says what its rows are). Cost is a stretch's
#: price (the scheduler's, from the pricing core: what the partner bills for these replicas,
#: or their share of an own node's full cost) over the hours it ran, so it agrees with the
#: partners' bills.
_ALLOCATION_USAGE = """
            WITH moved AS (
                SELECT JSONExtractString(payload, 'allocation_id') AS allocation_id,
                       JSONExtractString(payload, 'source_resource_id') AS source_resource_id,
                       JSONExtractString(payload, 'source_provider') AS source_provider,
                       JSONExtractString(payload, 'target_resource_id') AS target_resource_id,
                       JSONExtractString(payload, 'target_provider') AS target_provider,
                       toInt64(JSONExtractUInt(payload, 'replicas')) AS replicas,
                       toDecimal128OrZero(JSONExtractString(payload, 'target_price_per_hour'), 9) AS price,
                       parseDateTime64BestEffort(JSONExtractString(payload, 'cut_over_at'), 6, 'UTC') AS cut_over_at
                FROM {db}.events FINAL WHERE event_type = 'migration.done'
            )
            SELECT s.allocation_id AS allocation_id, a.request_id AS request_id, a.tenant AS tenant,
                   a.sla_tier AS sla_tier, a.placed_at AS placed_at, a.queued_seconds AS queued_seconds,
                   a.vcpu_per_replica AS vcpu_per_replica, a.gpu_per_replica AS gpu_per_replica,
                   s.resource_id AS resource_id, if(s.provider = '', res.provider, s.provider) AS provider,
                   s.kind AS kind, s.started_at AS started_at,
                   s.replicas AS replicas, s.price_per_hour AS price_per_hour, r.released_at AS released_at,
                   res.vcpu AS resource_vcpu, res.price_per_hour AS resource_price_per_hour,
                   -- A stretch still running counts up to the latest event, not the wall
                   -- clock: the view is a function of the events, and does not drift after
                   -- the workers stop (billing's month to date runs to the same watermark).
                   dateDiff('microsecond', s.started_at,
                            if(r.released_at IS NULL, (SELECT max(event_time) FROM {db}.events), r.released_at))
                       / 3600e6 AS hours,
                   if(res.vcpu > 0, least(a.vcpu_per_replica * s.replicas / res.vcpu, 1.0), 1.0) AS capacity_share,
                   toDecimal128(hours, 9) * s.price_per_hour AS cost,
                   hours * a.vcpu_per_replica * s.replicas AS vcpu_hours
            FROM (
                SELECT allocation_id, resource_id, provider, toInt64(replicas) AS replicas, price_per_hour,
                       placed_at AS started_at, 'placed' AS kind
                FROM {db}.v_placements
                UNION ALL
                SELECT allocation_id, target_resource_id, target_provider, replicas, price, cut_over_at, 'migrated_in'
                FROM moved
                UNION ALL
                SELECT m.allocation_id, m.source_resource_id, m.source_provider, -m.replicas,
                       -(u.unit_price * m.replicas), m.cut_over_at, 'migrated_out'
                FROM moved AS m
                LEFT JOIN (
                    SELECT allocation_id, resource_id, any(price / n) AS unit_price FROM (
                        SELECT allocation_id, resource_id, price_per_hour AS price, toInt64(replicas) AS n
                        FROM {db}.v_placements
                        UNION ALL
                        SELECT allocation_id, target_resource_id, price, replicas FROM moved)
                    WHERE n > 0 GROUP BY allocation_id, resource_id
                ) AS u ON m.allocation_id = u.allocation_id AND m.source_resource_id = u.resource_id
            ) AS s
            INNER JOIN (
                SELECT allocation_id, any(request_id) AS request_id, any(tenant) AS tenant,
                       any(sla_tier) AS sla_tier, min(placed_at) AS placed_at,
                       any(queued_seconds) AS queued_seconds, any(vcpu_per_replica) AS vcpu_per_replica,
                       any(gpu_per_replica) AS gpu_per_replica
                FROM {db}.v_placements GROUP BY allocation_id
            ) AS a USING (allocation_id)
            LEFT JOIN (
                SELECT JSONExtractString(payload, 'allocation_id') AS allocation_id,
                       toNullable(min(event_time)) AS released_at
                FROM {db}.events FINAL WHERE event_type = 'allocation.released' GROUP BY allocation_id
            ) AS r USING (allocation_id)
            LEFT JOIN {db}.v_resources AS res USING (resource_id)
            SETTINGS join_use_nulls = 1
"""

#: Cost per provider and day; a placement counts once (migrated stretches are not placements).
_COST_PER_PARTNER_DAY = """
            SELECT toDate(placed_at) AS day, provider, sum(cost) AS total_cost, sum(vcpu_hours) AS total_vcpu_hours,
                   countIf(kind = 'placed') AS placements
            FROM {db}.v_allocation_usage GROUP BY day, provider ORDER BY day, provider
"""


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "event log and dead letters",
        (
            """
            CREATE TABLE IF NOT EXISTS {db}.events (
                event_id      String,
                event_type    LowCardinality(String),
                schema_version UInt16,
                topic         LowCardinality(String),
                partition     UInt32,
                offset        UInt64,
                key           String,
                event_time    DateTime64(6, 'UTC'),
                ingested_at   DateTime64(6, 'UTC') DEFAULT now64(6),
                payload       String CODEC(ZSTD(3))
            )
            ENGINE = ReplacingMergeTree(ingested_at)
            PARTITION BY toYYYYMM(event_time)
            ORDER BY (event_type, event_id)
            SETTINGS non_replicated_deduplication_window = 1000
            """,
            """
            CREATE TABLE IF NOT EXISTS {db}.dead_letters (
                event_id         String,
                event_time       DateTime64(6, 'UTC'),
                reason           String,
                field            String,
                consumer         LowCardinality(String),
                source_topic     LowCardinality(String),
                source_partition UInt32,
                source_offset    UInt64,
                original_b64     String CODEC(ZSTD(3))
            )
            ENGINE = ReplacingMergeTree
            PARTITION BY toYYYYMM(event_time)
            ORDER BY (source_topic, source_partition, source_offset, event_id)
            TTL toDateTime(event_time) + INTERVAL 90 DAY
            SETTINGS non_replicated_deduplication_window = 1000
            """,
        ),
    ),
    Migration(
        2,
        "analytics views over the event log",
        (
            # Every view reads `events FINAL`, so a redelivered event counted twice in the
            # table (before a merge) is still counted once in every answer.
            "CREATE VIEW IF NOT EXISTS {db}.v_placements AS\n" + _PLACEMENTS,
            "CREATE VIEW IF NOT EXISTS {db}.v_resources AS\n" + _RESOURCES,
            # Made anew by migration 6 (through migrations); a new database gets that form here.
            "CREATE VIEW IF NOT EXISTS {db}.v_allocation_usage AS" + _ALLOCATION_USAGE,
            """
            CREATE VIEW IF NOT EXISTS {db}.v_tuning AS
            -- The scheduler's tuner: each window's choice of a knob, and the reward the
            -- choice before it earned (negative cost of capacity held minus SLA-miss penalty).
            SELECT event_time AS decided_at, JSONExtractString(payload, 'knob') AS knob,
                   JSONExtractString(payload, 'context') AS context, JSONExtractString(payload, 'arm') AS arm,
                   JSONExtractString(payload, 'previous_arm') AS previous_arm,
                   JSONExtract(payload, 'reward', 'Nullable(Float64)') AS reward,
                   toDecimal64OrZero(JSONExtractString(payload, 'window_cost'), 6) AS window_cost,
                   JSONExtractUInt(payload, 'window_misses') AS window_misses,
                   JSONExtractFloat(payload, 'window_seconds') AS window_seconds
            FROM {db}.events FINAL WHERE event_type = 'tuning.decision'
            """,
            "CREATE VIEW IF NOT EXISTS {db}.v_cost_per_partner_day AS" + _COST_PER_PARTNER_DAY,
            """
            CREATE VIEW IF NOT EXISTS {db}.v_cost_per_tenant_day AS
            SELECT toDate(placed_at) AS day, tenant, sum(cost) AS total_cost, sum(vcpu_hours) AS total_vcpu_hours
            FROM {db}.v_allocation_usage GROUP BY day, tenant ORDER BY day, tenant
            """,
            """
            CREATE VIEW IF NOT EXISTS {db}.v_blended_cost_per_vcpu_hour AS
            SELECT if(provider = 'own', 'own', 'partners') AS source, sum(cost) AS total_cost,
                   sum(vcpu_hours) AS total_vcpu_hours, total_cost / nullIf(total_vcpu_hours, 0) AS cost_per_vcpu_hour
            FROM {db}.v_allocation_usage GROUP BY source
            UNION ALL
            SELECT 'blended', sum(cost), sum(vcpu_hours), sum(cost) / nullIf(sum(vcpu_hours), 0)
            FROM {db}.v_allocation_usage
            """,
            """
            CREATE VIEW IF NOT EXISTS {db}.v_pool_utilization AS
            SELECT c.provider AS provider, c.region AS region, c.vcpu AS vcpu_capacity,
                   ifNull(u.vcpu_in_use, 0) AS vcpu_in_use, vcpu_in_use / nullIf(vcpu_capacity, 0) AS utilization
            FROM (SELECT provider, region, sum(vcpu) AS vcpu FROM {db}.v_resources WHERE NOT removed
                  GROUP BY provider, region) AS c
            LEFT JOIN (SELECT r.provider AS provider, r.region AS region,
                              sum(a.vcpu_per_replica * a.replicas) AS vcpu_in_use
                       FROM {db}.v_allocation_usage AS a INNER JOIN {db}.v_resources AS r USING (resource_id)
                       WHERE a.released_at IS NULL GROUP BY provider, region) AS u
            ON c.provider = u.provider AND c.region = u.region
            """,
            """
            CREATE VIEW IF NOT EXISTS {db}.v_queue_wait_by_tier AS
            SELECT sla_tier, count() AS placed,
                   quantile(0.5)(queued_seconds) AS p50_s, quantile(0.9)(queued_seconds) AS p90_s,
                   quantile(0.99)(queued_seconds) AS p99_s, max(queued_seconds) AS max_s
            FROM (SELECT DISTINCT allocation_id, sla_tier, queued_seconds FROM {db}.v_placements)
            GROUP BY sla_tier
            """,
            """
            CREATE VIEW IF NOT EXISTS {db}.v_forecast_accuracy AS
            WITH f AS (
                SELECT JSONExtractString(payload, 'series') AS series,
                       JSONExtractUInt(h, 'step') AS step,
                       parseDateTime64BestEffort(JSONExtractString(h, 'interval_start'), 6, 'UTC') AS interval_start,
                       JSONExtractKeysAndValues(JSONExtractRaw(h, 'quantiles'), 'Float64') AS q
                FROM {db}.events FINAL
                ARRAY JOIN JSONExtractArrayRaw(payload, 'horizons') AS h
                WHERE event_type = 'forecast'
            ),
            a AS (
                SELECT JSONExtractString(payload, 'series') AS series,
                       parseDateTime64BestEffort(JSONExtractString(payload, 'interval_start'), 6, 'UTC')
                           AS interval_start,
                       argMax(JSONExtractFloat(payload, 'value'), event_time) AS actual
                FROM {db}.events FINAL WHERE event_type = 'demand.interval' GROUP BY series, interval_start
            )
            SELECT f.series AS series, f.step AS step, count() AS forecasts,
                   avg(abs(a.actual - arrayFirst(x -> x.1 = '0.5', f.q).2)) AS mae,
                   avg(a.actual >= arrayReduce('min', arrayMap(x -> x.2, f.q))
                       AND a.actual <= arrayReduce('max', arrayMap(x -> x.2, f.q))) AS band_coverage
            FROM f INNER JOIN a ON f.series = a.series AND f.interval_start = a.interval_start
            GROUP BY series, step ORDER BY series, step
            """,
            """
            CREATE VIEW IF NOT EXISTS {db}.v_alerts_over_time AS
            SELECT toStartOfHour(event_time) AS hour, JSONExtractString(payload, 'partner_id') AS partner,
                   JSONExtractString(payload, 'limit_name') AS limit_name,
                   max(JSONExtractUInt(payload, 'threshold_pct')) AS max_threshold_pct,
                   countIf(JSONExtractString(payload, 'enforcement') = 'hard') AS hard, count() AS alerts
            FROM {db}.events FINAL WHERE event_type = 'usage_limit.alert'
            GROUP BY hour, partner, limit_name ORDER BY hour
            """,
            """
            CREATE VIEW IF NOT EXISTS {db}.v_dead_letters_over_time AS
            SELECT toStartOfHour(event_time) AS hour, source_topic, consumer, count() AS dead_letters,
                   any(reason) AS example_reason
            FROM {db}.dead_letters FINAL GROUP BY hour, source_topic, consumer ORDER BY hour
            """,
        ),
    ),
    Migration(
        3,
        "provisioning hints",
        (
            # The latest hint per pool and interval (a hint is repeated when its shortfall
            # moves): what the forecast asked to bring up, by when, at what price.
            """
            CREATE VIEW IF NOT EXISTS {db}.v_provisioning_hints AS
            SELECT JSONExtractString(payload, 'pool') AS pool,
                   parseDateTime64BestEffort(JSONExtractString(payload, 'needed_by'), 3, 'UTC') AS needed_by,
                   argMax(JSONExtractFloat(payload, 'shortfall_vcpu'), event_time) AS shortfall_vcpu,
                   argMax(JSONExtractFloat(payload, 'free_in_service_vcpu'), event_time) AS free_in_service_vcpu,
                   argMax(length(JSONExtractArrayRaw(payload, 'suggested')), event_time) AS suggested_resources,
                   argMax(toDecimal128(JSONExtractString(payload, 'suggested_cost_per_hour'), 6), event_time)
                       AS suggested_cost_per_hour,
                   count() AS hints, max(event_time) AS last_hint_at
            FROM {db}.events FINAL WHERE event_type = 'provisioning.hint'
            GROUP BY pool, needed_by ORDER BY needed_by
            """,
        ),
    ),
    Migration(
        4,
        "workload migrations",
        (
            # One row per migration: why it moved what where, when each step happened, how it
            # ended, and the saving per hour its plan expected (on the plan's first move).
            """
            CREATE VIEW IF NOT EXISTS {db}.v_migrations AS
            SELECT JSONExtractString(payload, 'migration_id') AS migration_id,
                   any(JSONExtractString(payload, 'allocation_id')) AS allocation_id,
                   anyIf(JSONExtractString(payload, 'reason'), event_type = 'migration.planned') AS reason,
                   any(JSONExtractString(payload, 'source_resource_id')) AS source_resource_id,
                   any(JSONExtractString(payload, 'target_resource_id')) AS target_resource_id,
                   any(JSONExtractString(payload, 'target_provider')) AS target_provider,
                   any(JSONExtractUInt(payload, 'replicas')) AS replicas,
                   minIf(event_time, event_type = 'migration.planned') AS planned_at,
                   minIf(event_time, JSONExtractString(payload, 'step') = 'reserve_target') AS reserved_at,
                   minIf(event_time, JSONExtractString(payload, 'step') = 'cut_over') AS cut_over_at,
                   multiIf(countIf(event_type = 'migration.done') > 0, 'done',
                           countIf(event_type = 'migration.failed') > 0,
                           if(anyIf(JSONExtractBool(payload, 'rolled_back'), event_type = 'migration.failed'),
                              'rolled_back', 'failed'),
                           'running') AS status,
                   anyIf(JSONExtractString(payload, 'reason'), event_type = 'migration.failed') AS failure,
                   sumIf(toDecimal64OrZero(JSONExtractString(payload, 'expected_saving_per_hour'), 6),
                         event_type = 'migration.planned') AS expected_saving_per_hour
            FROM {db}.events FINAL WHERE event_type LIKE 'migration.%'
            GROUP BY migration_id ORDER BY planned_at
            """,
        ),
    ),
    Migration(
        5,
        "tenant chargeback",
        (
            # What each tenant's work cost per month at the blended true cost: partner
            # placements at the price the partner bills for them, own capacity at its share
            # of the nodes' full cost (capex amortized plus opex), both over the hours run.
            # `tessera bill --format chargeback-json` gives the partners' part as exact
            # per-tenant invoices.
            """
            CREATE VIEW IF NOT EXISTS {db}.v_tenant_chargeback AS
            SELECT toStartOfMonth(placed_at) AS month, tenant,
                   sumIf(cost, provider = 'own') AS own_cost, sumIf(cost, provider != 'own') AS partner_cost,
                   sum(cost) AS total_cost, sum(vcpu_hours) AS vcpu_hours,
                   uniqExact(allocation_id) AS allocations
            FROM {db}.v_allocation_usage GROUP BY month, tenant ORDER BY month, tenant
            """,
        ),
    ),
    Migration(
        6,
        "allocation usage through migrations",
        (
            # One row per stretch of an allocation's replicas on a resource (`kind`): as
            # placed, from its placement; for each migration done, the moved replicas leaving
            # the source from the cut-over (a row of negative replicas and cost, at the
            # source's price per replica) and arriving on the target from the cut-over (at the
            # target's price from the migration's events: the pricing core's, as billing
            # splits the bill there). Any sum over the rows is then exact through moves; the
            # views over it keep their meaning (a placement count counts kind = 'placed').
            # A migration counts once it is done; one that failed or rolled back moved nothing.
            "CREATE OR REPLACE VIEW {db}.v_placements AS\n" + _PLACEMENTS,
            "CREATE OR REPLACE VIEW {db}.v_resources AS\n" + _RESOURCES,
            "CREATE OR REPLACE VIEW {db}.v_allocation_usage AS" + _ALLOCATION_USAGE,
            "CREATE OR REPLACE VIEW {db}.v_cost_per_partner_day AS" + _COST_PER_PARTNER_DAY,
        ),
    ),
)


def apply_migrations(store: AnalyticsStore) -> list[int]:
    """Apply every migration not yet recorded; return the versions applied now."""
    db = store.database
    store.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    store.command(
        f"""CREATE TABLE IF NOT EXISTS {db}.schema_migrations (
                version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
            ) ENGINE = ReplacingMergeTree ORDER BY version"""
    )
    done = {int(r["version"]) for r in store.query(f"SELECT version FROM {db}.schema_migrations FINAL")}
    applied = []
    for m in MIGRATIONS:
        if m.version in done:
            continue
        for stmt in m.statements:
            store.command(stmt.format(db=db))
        store.insert(f"{db}.schema_migrations", [{"version": m.version, "name": m.name}])
        applied.append(m.version)
    return applied


# --------------------------------------------------------------------------- a ClickHouse cluster
_TABLE = re.compile(r"CREATE TABLE IF NOT EXISTS (\S+)\.(\w+) \(")
_ENGINE = re.compile(r"ENGINE = ReplacingMergeTree(\(([^)]*)\))?")
_VIEW = re.compile(r"CREATE (VIEW IF NOT EXISTS|OR REPLACE VIEW) (\S+)\.(\w+) AS")
#: Rows of one event always go to one shard, so ReplacingMergeTree (and FINAL, which runs
#: per shard) collapses its redelivered copies exactly as on one server.
SHARDING_KEY = "cityHash64(event_id)"


def statements(db: str, cluster: str = "") -> list[str]:
    """Every DDL statement of every migration for database ``db``: as applied on one server,
    or, with ``cluster``, for a ClickHouse cluster of that name (``tessera sql ddl --cluster``):

    * each table becomes ``<table>_local``, ReplicatedReplacingMergeTree on every replica
      (ZooKeeper/Keeper path ``/clickhouse/tables/{shard}/<db>/<table>_local``, the server's
      ``{shard}`` and ``{replica}`` macros), with the insert-deduplication window of the
      replicated engine;
    * beside it a Distributed table with the original name, sharded by ``event_id``, so
      the sinks and every view keep their names and queries;
    * the database, the views and the migrations table are created ``ON CLUSTER``.
    """
    out = []
    on = f" ON CLUSTER '{cluster}'" if cluster else ""
    out.append(f"CREATE DATABASE IF NOT EXISTS {db}{on}")
    for m in MIGRATIONS:
        for raw in m.statements:
            stmt = textwrap.dedent(raw.format(db=db)).strip()
            if not cluster:
                out.append(stmt)
                continue
            table = _TABLE.search(stmt)
            if table:
                name = table.group(2)
                local = f"{name}_local"
                path = f"'/clickhouse/tables/{{shard}}/{db}/{local}', '{{replica}}'"
                stmt = _TABLE.sub(f"CREATE TABLE IF NOT EXISTS {db}.{local}{on} (", stmt, count=1)
                stmt = _ENGINE.sub(lambda e: f"ENGINE = ReplicatedReplacingMergeTree({path}"
                                             f"{', ' + e.group(2) if e.group(2) else ''})", stmt, count=1)
                stmt = stmt.replace("non_replicated_deduplication_window", "replicated_deduplication_window")
                out.append(stmt)
                out.append(f"CREATE TABLE IF NOT EXISTS {db}.{name}{on} AS {db}.{local} "
                           f"ENGINE = Distributed('{cluster}', '{db}', '{local}', {SHARDING_KEY})")
            else:
                out.append(_VIEW.sub(lambda v: f"CREATE {v.group(1)} {v.group(2)}.{v.group(3)}{on} AS",
                                     stmt, count=1))
    out.append(f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations{on} (version UInt32, name String, "
               "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = "
               + (f"ReplicatedReplacingMergeTree('/clickhouse/tables/{{shard}}/{db}/schema_migrations', '{{replica}}')"
                  if cluster else "ReplacingMergeTree") + " ORDER BY version")
    return out
