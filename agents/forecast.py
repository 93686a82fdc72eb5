"""The forecast agents: demand in, forecast quantiles (and spikes) out.

* ``demand-router``   requests and usage samples -> demand observations on the internal
                      ``demand`` topic, keyed by series group (so whichever worker owns a
                      group's partition sees all of its demand).
* ``external-events`` campaigns, sales, releases ... into a global table every worker sees.
* ``forecaster``      per group: apply observations to the open intervals (exactly once per
                      source message), close what the watermark passed, let each series'
                      forecaster learn it, publish ``demand.interval``, ``forecast`` and
                      ``demand.spike`` events on the forecasts topic. The event-log agent
                      writes those to ClickHouse, where forecasts meet realised demand.

State lives in two Faust tables keyed by group (changelog-backed, so a restarted worker
recovers it): the intervals (written every batch) and the models (written when an
interval closes); ``tessera.forecast.group`` explains why replays neither lose nor
double count.
"""

from __future__ import annotations

import base64
import logging
import time
from collections import defaultdict
from typing import Any

from tessera.agents.worker import worker_agent
from tessera.config import Settings
from tessera.forecast import MODEL_NAMES
from tessera.forecast.demand import observation_of_request, observation_of_usage, quiet_observation
from tessera.forecast.engine import ForecastConfig, compile_forecast_kernels
from tessera.forecast.group import GroupModels, advance, intervals_from_bytes, intervals_to_bytes
from tessera.schemas import DeadLetter, DemandObservation, ExternalEvent, UsageSample, WorkloadRequest, decode, encode
from tessera.schemas.topics import topic_spec
from tessera.storage.store import AnalyticsStore
from tessera.streams import metrics
from tessera.streams.deadletter import publish_dead_letters, publish_events
from tessera.streams.edge import Decoded, decode_faust_event
from tessera.streams.topics import Topics

log = logging.getLogger(__name__)

AGENT = "forecast"


def forecast_config(settings: Settings) -> ForecastConfig:
    models = tuple(m.strip() for m in settings.forecast_models.split(",") if m.strip()) or MODEL_NAMES
    return ForecastConfig(horizon=settings.forecast_horizon, interval_s=settings.forecast_interval_s,
                          season=settings.forecast_season, models=models,
                          quantiles=tuple(float(q) for q in settings.forecast_quantiles.split(",") if q.strip()))


def table_names(settings: Settings) -> dict[str, str]:
    p = settings.topic_prefix
    return {"intervals": f"{p}.forecast-intervals", "models": f"{p}.forecast-models",
            "external": f"{p}.external-events"}


@worker_agent("forecast", "online demand forecasts per series group", prepare=compile_forecast_kernels)
def register(app: Any, topics: Topics, settings: Settings, store: AnalyticsStore | None = None) -> None:
    config = forecast_config(settings)
    names = table_names(settings)
    parts = topic_spec("demand").partitions
    # Keys are group names, values pickled state; use_partitioner: rows are written from
    # batches, and the demand topic's key partitioner puts a group's row on its partition.
    intervals_table = app.Table(names["intervals"], default=None, partitions=parts, key_type=bytes,
                                value_type=bytes, use_partitioner=True, help="open demand intervals per group")
    models_table = app.Table(names["models"], default=None, partitions=parts, key_type=bytes,
                             value_type=bytes, use_partitioner=True, help="forecaster checkpoints per group")
    external_table = app.GlobalTable(names["external"], default=None, key_type=bytes, value_type=bytes,
                                     help="external events by id (every worker has all)")
    dlq, demand, forecasts = topics["dead-letters"], topics["demand"], topics["forecasts"]
    source = app.topic(*topics["requests"].topics, *topics["usage"].topics, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")

    @app.agent(source, name=f"{settings.topic_prefix}.agent.demand-router")
    async def demand_router(stream: Any) -> None:
        async for batch in stream.take_events(1000, within=0.2):
            decoded = [decode_faust_event(e, topics.spec_of_topic(e.message.topic), AGENT) for e in batch]
            await publish_dead_letters(dlq, decoded, AGENT)
            obs = []
            for d in decoded:
                if isinstance(d.event, WorkloadRequest):
                    obs.append(observation_of_request(d.event, d.topic, d.partition, d.offset))
                elif isinstance(d.event, UsageSample):
                    obs.append(observation_of_usage(d.event, d.topic, d.partition, d.offset, config.interval_s))
            await publish_events(demand, obs)

    @app.agent(topics["external-events"], name=f"{settings.topic_prefix}.agent.external-events")
    async def external_events(stream: Any) -> None:
        async for batch in stream.take_events(100, within=0.2):
            decoded = [decode_faust_event(e, topics.specs["external-events"], AGENT) for e in batch]
            await publish_dead_letters(dlq, decoded, AGENT)
            for d in decoded:
                if isinstance(d.event, ExternalEvent):
                    external_table[d.event.external_id.encode()] = encode(d.event)

    def known_events() -> list[ExternalEvent]:
        out = []
        for raw in list(external_table.values()):
            if raw:
                e = decode(raw)
                if isinstance(e, ExternalEvent):
                    out.append(e)
        return out

    @app.timer(interval=config.interval_s, name=f"{settings.topic_prefix}.timer.quiet-clock")
    async def quiet_clock() -> None:
        # Groups whose inputs stopped still close their intervals (quiet_observation says why).
        now = time.time()
        quiet = []
        try:
            for key, raw in list(intervals_table.items()):
                if raw:
                    o = quiet_observation(intervals_from_bytes(raw, key.decode(), config.interval_s,
                                                               settings.forecast_grace_s), now)
                    if o is not None:
                        quiet.append(o)
        except Exception:    # a clock tick must never stop the worker; the next one tries again
            log.exception("the forecast quiet clock could not read the intervals table")
            return
        await publish_events(demand, quiet)

    @app.agent(demand, name=f"{settings.topic_prefix}.agent.forecaster")
    async def forecaster(stream: Any) -> None:
        async for batch in stream.take_events(2000, within=0.2):
            decoded = [decode_faust_event(e, topics.specs["demand"], AGENT) for e in batch]
            late: list[Decoded] = []
            by_group: dict[str, list[tuple[Decoded, DemandObservation]]] = defaultdict(list)
            for d in decoded:
                if isinstance(d.event, DemandObservation):
                    by_group[d.event.group].append((d, d.event))
            external = known_events() if by_group else []
            out = []
            for group, items in by_group.items():
                key = group.encode()
                intervals = intervals_from_bytes(intervals_table.get(key), group, config.interval_s,
                                                 settings.forecast_grace_s)
                for d, o in items:
                    outcome = intervals.observe(o)
                    metrics.child(metrics.FORECAST_OBSERVATIONS, outcome).inc()
                    if outcome == "late":
                        late.append(_late(d, o))
                models = GroupModels.from_bytes(models_table.get(key))
                try:
                    events = advance(group, intervals, models, config, external)
                except Exception:   # a bug in one group must not stop the others (or the agent)
                    log.exception("forecasting group %s failed; its state is kept as before this batch", group)
                    continue
                if events:
                    out.extend(events)
                    metrics.FORECAST_INTERVALS.labels(group).inc(sum(e.event_type == "demand.interval"
                                                                     for e in events))
                    metrics.FORECAST_SPIKES.labels(group).inc(sum(e.event_type == "demand.spike" for e in events))
                    models_table[key] = models.to_bytes()     # models first: see tessera.forecast.group
                intervals_table[key] = intervals_to_bytes(intervals)
            decoded_invalid = [d for d in decoded if d.dead_letter is not None] + late
            await publish_dead_letters(dlq, decoded_invalid, AGENT)
            await publish_events(forecasts, out)


def _late(d: Decoded, o: DemandObservation) -> Decoded:
    """A valid observation whose interval already closed: kept, on the dead-letter topic."""
    dl = DeadLetter(reason=f"late: interval of {o.observed_at.isoformat()} closed before it arrived "
                           f"(grace window passed); not counted in group {o.group!r}",
                    field="observed_at", source_topic=d.topic, source_partition=d.partition,
                    source_offset=d.offset, source_key_b64=base64.b64encode(d.key or b"").decode(),
                    original_b64=base64.b64encode(encode(o)).decode(), consumer=AGENT)
    return Decoded(d.topic, d.partition, d.offset, d.key, dead_letter=dl)
