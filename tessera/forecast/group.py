"""A series group's forecasting state: its open intervals and one forecaster per series.

Pure (no Faust): the forecast agent loads a group, feeds it observations, and publishes
what ``advance`` returns. Two pieces are checkpointed apart because they change at very
different rates: the intervals (every batch, small) and the models (once per closed
interval, tens of kB per series). The models' checkpoint is written first; if a worker
dies between the two writes, the restarted worker closes the same interval again and the
forecaster refuses it (its last learned interval is not before it): nothing is learned
twice and nothing is lost.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from datetime import datetime, timezone

from tessera.schemas import DemandInterval, DemandSpike, Event, ExternalEvent, Forecast, HorizonForecast

from .demand import DIMENSIONS, GroupIntervals, series_name
from .engine import ForecastConfig, SeriesForecaster


@dataclass
class GroupModels:
    forecasters: dict[str, SeriesForecaster] = field(default_factory=dict)   # dim -> forecaster

    def to_bytes(self) -> bytes:
        return pickle.dumps(self, protocol=5)

    @staticmethod
    def from_bytes(data: bytes | None) -> "GroupModels":
        return GroupModels() if not data else pickle.loads(data)


def intervals_from_bytes(data: bytes | None, group: str, interval_s: int, grace_s: float) -> GroupIntervals:
    return GroupIntervals(group, interval_s, grace_s) if not data else pickle.loads(data)


def intervals_to_bytes(g: GroupIntervals) -> bytes:
    return pickle.dumps(g, protocol=5)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def event_applies(e: ExternalEvent, group: str) -> bool:
    return e.scope in ("global", group)


def advance(group: str, intervals: GroupIntervals, models: GroupModels, config: ForecastConfig,
            external: list[ExternalEvent]) -> list[Event]:
    """Close what the watermark passed; learn, forecast; return the events to publish."""
    closed = intervals.close_ready()
    out: list[Event] = []
    for start, values in closed:
        for dim in DIMENSIONS:
            fc = models.forecasters.get(dim)
            if fc is None:
                fc = models.forecasters[dim] = SeriesForecaster(config)
            if fc.last_ts is not None and start <= fc.last_ts:
                continue     # learned before a restart: never twice
            for e in external:
                if event_applies(e, group):
                    fc.add_event(e.external_id, e.kind, e.starts_at.timestamp(), e.ends_at.timestamp())
            series = series_name(group, dim)
            spike = fc.learn(start, values[dim])
            f = fc.forecast()
            out.append(DemandInterval(series=series, interval_start=_utc(start),
                                      interval_seconds=config.interval_s, value=values[dim]))
            out.append(Forecast(series=series, interval_seconds=config.interval_s, model=f.model,
                                horizons=[HorizonForecast(step=h + 1, interval_start=_utc(float(s)), quantiles=q)
                                          for h, (s, q) in enumerate(zip(f.interval_starts, f.as_dicts()))]))
            if spike is not None:
                out.append(DemandSpike(series=series, interval_start=_utc(spike.interval_start),
                                       observed=spike.observed, expected=spike.expected, score=spike.score,
                                       external_ids=list(spike.external_ids)))
    return out
