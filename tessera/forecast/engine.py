"""One series' online forecaster: blended River models, calibrated quantiles, event uplift.

Per closed interval (``learn``) the forecaster

1. scores every forecast it issued for this interval (horizons 1..H): exponentially
   weighted absolute error per model and horizon (the blend weights), and the residual
   of the blended forecast per horizon (the quantile trackers);
2. learns each external-event kind's uplift (River linear regression of the one-step
   residual on the kinds active in the interval) and flags a spike when the one-step
   residual is far outside its recent scale;
3. feeds the event-free value to every model (each updates incrementally).

``forecast`` then issues quantiles for the next H intervals: the blended point forecast
plus, per horizon, tracked residual quantiles. The trackers are *online quantile tracking*
(the 'quantile' part of conformal PID control, Angelopoulos, Candès & Tibshirani 2023):
``q += eta * (tau - 1[residual <= q])``. Whatever the residual distribution does, the
long-run share of outcomes below ``point + q_tau`` converges to ``tau`` because ``q`` stays
bounded; so the 5-95 % band keeps covering about 90 % when the series drifts. Levels are
sorted after tracking (monotone rearrangement), so quantiles never cross.

All work per update is a handful of small NumPy operations plus the River models; the
whole state pickles to a few tens of kB (``to_bytes``), which is the checkpoint.
"""

from __future__ import annotations

import logging
import math
import pickle
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Sequence

import numpy as np
from river import linear_model, optim

from tessera.forecast import MODEL_NAMES, kernels
from tessera.forecast.calendar import CalendarTable
from tessera.forecast.models import build_models

log = logging.getLogger(__name__)

#: Scored residuals per horizon before the tracked quantiles are trusted fully.
WARM_RESIDUALS = 30

#: A model forecast beyond this many times the largest value the series has shown (in
#: units of its first value, at least 1) is treated as diverged. Demand a few intervals
#: ahead does not jump tenfold past its whole history, while an online AR fit on a sparse,
#: spiky series can turn unstable and grow without bound (SNARIMAX forecast 10^10 GPUs
#: for a series that never exceeded 16; the blend passed it on before its error counted).
DIVERGED_FACTOR = 10.0


class ForecastInputError(ValueError):
    """A value the engine refuses: NaN, negative, or an interval not after the last one."""


@dataclass(frozen=True)
class ForecastConfig:
    horizon: int = 12
    quantiles: tuple[float, ...] = (0.05, 0.5, 0.95)
    interval_s: int = 300
    season: int = 288                     # intervals per day
    models: tuple[str, ...] = MODEL_NAMES
    # Blend weights follow about a day of error, sharply: with a shorter memory a weak
    # model's lucky hour won it weight often enough that the blend did 1-2 % worse than
    # its best member on every cluster series.
    blend_halflife: float = 300.0         # intervals; how fast blend weights follow recent error
    blend_sharpness: float = 40.0
    scale_halflife: float = 96.0          # intervals; residual scale memory for the trackers
    tracking_rate: float = 0.08           # quantile step as a fraction of the residual scale
    # The median's tracker is the point forecast's bias correction, and any jitter in it
    # lands on every point forecast: at the outer levels' rate it cost 4-6 % MAE on the
    # cluster traces (the 'last' model scored 1.03-1.06 of the naive last value). It
    # steps slowly, so it removes a persistent bias and little else.
    median_tracking_rate: float = 0.005
    spike_threshold: float = 6.0          # one-step residual / its recent mean absolute size
    weekly_harmonics: int = 1
    daily_harmonics: int = 3

    def __post_init__(self):
        if self.horizon < 1:
            raise ValueError("horizon must be at least 1")
        if not self.quantiles or any(not 0.0 < q < 1.0 for q in self.quantiles):
            raise ValueError("quantile levels must lie strictly between 0 and 1, e.g. 0.05,0.5,0.95")
        if self.interval_s <= 0 or self.season < 1:
            raise ValueError("interval_s must be positive and season at least 1")
        object.__setattr__(self, "quantiles", tuple(sorted(set(self.quantiles))))

    @property
    def day_seconds(self) -> float:
        return float(self.season * self.interval_s)


@dataclass(frozen=True)
class Spike:
    interval_start: float
    observed: float
    expected: float
    score: float
    external_ids: tuple[str, ...]


@dataclass(frozen=True)
class QuantileForecast:
    issued_at: float                 # start of the last learned interval
    interval_starts: np.ndarray      # (H,) start of each forecast interval
    values: np.ndarray               # (H, K) demand per horizon and quantile level
    levels: tuple[float, ...]
    model: str                       # the model with the largest blend weight at horizon 1

    def as_dicts(self) -> list[dict[str, float]]:
        return [{_level_key(q): float(v) for q, v in zip(self.levels, row)} for row in self.values]


def _level_key(q: float) -> str:
    return format(q, "g")


@dataclass
class EventSpan:
    external_id: str
    kind: str
    starts_at: float
    ends_at: float


@dataclass
class EventCalendar:
    """External events known to affect one series: what is active in an interval."""

    spans: list[EventSpan] = field(default_factory=list)

    def add(self, external_id: str, kind: str, starts_at: float, ends_at: float) -> None:
        self.spans = [s for s in self.spans if s.external_id != external_id]
        self.spans.append(EventSpan(external_id, kind, starts_at, ends_at))

    def active(self, start: float, length: float) -> list[EventSpan]:
        return [s for s in self.spans if s.starts_at < start + length and s.ends_at > start]

    def prune(self, before: float) -> None:
        self.spans = [s for s in self.spans if s.ends_at > before]


class SeriesForecaster:
    def __init__(self, config: ForecastConfig | None = None):
        c = self.config = config or ForecastConfig()
        H, K = c.horizon, len(c.quantiles)
        self.n_features = 2 * c.daily_harmonics + 2 * c.weekly_harmonics
        self.models = build_models(c.models, c.season, self.n_features, c.horizon, daily_terms=c.daily_harmonics > 0)
        M = len(self.models)
        self.events = EventCalendar()
        self.model_failures: dict[str, int] = {}
        self.uplift = linear_model.LinearRegression(optimizer=optim.SGD(0.2), intercept_lr=0.0, l2=0.0)
        self.scale: float | None = None
        self.step = -1                     # index of the last learned interval
        self.last_ts: float | None = None
        self.last_z = 0.0
        self.step_change = 0.0   # mean |change| between consecutive intervals (normalised)
        self.taus = np.asarray(c.quantiles)
        self._level_rates = self._rates_per_level()
        self._prior_z = np.array([NormalDist().inv_cdf(q) for q in c.quantiles])
        self._blend_rate = 1.0 - 0.5 ** (1.0 / c.blend_halflife)
        self._scale_rate = 1.0 - 0.5 ** (1.0 / c.scale_halflife)
        self.model_error = np.ones((H, M))          # EW mean |error| per horizon and model
        self.resid_scale = np.zeros(H)              # EW mean |residual| of the blend per horizon
        self.tracked = np.zeros((H, K))             # residual quantiles per horizon and level
        self._scored = np.zeros(H, dtype=np.int64)  # residuals seen per horizon
        # Issued forecasts, filed under the interval they are for: row = target step % H,
        # column = horizon - 1. Scoring an interval then reads one contiguous row.
        self._due_target = np.full((H, H), -1, dtype=np.int64)
        self._due_models = np.zeros((H, H, M), dtype=np.float32)
        self._due_point = np.zeros((H, H))
        self._due_offsets = np.zeros((H, H, K))
        self._hs = np.arange(1, H + 1)
        self._cols = np.arange(H)

    # ------------------------------------------------------------------ learning
    def learn(self, ts: float, value: float) -> Spike | None:
        """Learn the value of the interval starting at ``ts`` (seconds, UTC)."""
        c = self.config
        if value is None or not math.isfinite(value):
            raise ForecastInputError(f"value {value!r} at {ts} is not a finite number")
        if value < 0:
            raise ForecastInputError(f"value {value} at {ts} is negative; demand cannot be")
        for i in sorted(self.__dict__.pop("_diverged", ())):
            self._restart_model(i)
        if self.last_ts is not None:
            if ts <= self.last_ts:
                raise ForecastInputError(
                    f"interval {ts} is not after the last learned interval {self.last_ts}; "
                    "intervals must arrive in order and once")
            gap = int(round((ts - self.last_ts) / c.interval_s)) - 1
            for k in range(1, gap + 1):        # missing intervals: hold the last value
                self._learn_models(self.last_ts + k * c.interval_s, self.last_z)
                self.step += 1
        if self.scale is None:
            # Models work in units of the first real value, so learning rates mean the same
            # for CPU fractions and for thousands of vCPU; degenerate first values use 1.
            self.scale = value if value >= 1e-6 else 1.0
        z = value / self.scale
        self.peak_z = max(self.__dict__.get("peak_z", 0.0), z)   # checkpoints before it lack it
        self.step += 1
        spike = self._score(ts, z)
        active = self.events.active(ts, c.interval_s)
        z_free = z - self._uplift_of(active)
        self._learn_models(ts, z_free)
        if self.step >= 1:   # a running mean at first, then exponentially weighted
            weight = max(1.0 / self.step, self._scale_rate)
            self.step_change += weight * (abs(z_free - self.last_z) - self.step_change)
        self.last_ts, self.last_z = ts, z_free
        self.events.prune(ts - c.interval_s)
        return spike

    def _learn_models(self, ts: float, z: float) -> None:
        # The rows from this interval on: its own for learning; the next H for the forecast
        # that usually follows (forecast() reuses them when they start at last_ts).
        self._cal_rows = (ts, self._calendar().rows_from(ts, self.config.horizon + 1))
        cal = self._cal_rows[1][0]
        for m in self.models:
            try:
                m.learn(z, cal)
            except (ArithmeticError, ValueError, IndexError) as exc:   # one model's failure is not the series'
                self.model_failures[m.name] = self.model_failures.get(m.name, 0) + 1
                log.warning("model %s failed to learn (%s); it answers 'last value' until it recovers", m.name, exc)

    def _score(self, ts: float, z: float) -> Spike | None:
        c = self.config
        r1 = kernels.score_interval(self.step, z, self._due_target, self._due_models, self._due_point,
                                    self._due_offsets, self.model_error, self.resid_scale, self.tracked,
                                    self._scored, self.taus, self._blend_rate, self._scale_rate, self._level_rates)
        if math.isnan(r1):
            return None
        active = self.events.active(ts, c.interval_s)
        if active:   # learn the uplift of what is active from the one-step surprise
            self.uplift.learn_one({s.kind: 1.0 for s in active}, r1 + self._uplift_of(active))
        scale = float(self.resid_scale[0])
        if self._scored[0] > 2 * c.horizon and scale > 0 and r1 / scale > c.spike_threshold:
            return Spike(ts, z * self.scale, (z - r1) * self.scale, r1 / scale,
                         tuple(s.external_id for s in active))
        return None

    def _uplift_of(self, active: Sequence[EventSpan]) -> float:
        if not active:
            return 0.0
        return float(self.uplift.predict_one({s.kind: 1.0 for s in active}))

    # ------------------------------------------------------------------ forecasting
    def forecast(self) -> QuantileForecast:
        """Quantiles for the ``H`` intervals after the last learned one."""
        c = self.config
        if self.last_ts is None:
            raise ForecastInputError("nothing learned yet: a series needs one interval before it forecasts")
        H = c.horizon
        starts = self.last_ts + c.interval_s * self._hs
        cal_ts, cal = self.__dict__.get("_cal_rows", (None, None))
        if cal_ts != self.last_ts:
            cal = self._calendar().rows_from(self.last_ts, H + 1)
        preds = np.empty((len(self.models), H))
        cal_now, cal_future = cal[0], cal[1:]
        for i, m in enumerate(self.models):
            try:
                preds[i] = m.forecast(self.last_z, cal_now, cal_future)
            except (ArithmeticError, ValueError, IndexError):
                self.model_failures[m.name] = self.model_failures.get(m.name, 0) + 1
                preds[i] = self.last_z
        # A diverged model answers 'last value' here and starts afresh at the next learn
        # (here it would make a second forecast of the same state differ from the first).
        # 'Diverged' includes huge finite values: besides misleading the blend, the issued
        # forecasts are filed as float32 for scoring, where anything past 3.4e38 turns into
        # inf, then its error into inf and the blend into NaN.
        bound = DIVERGED_FACTOR * max(self.__dict__.get("peak_z", 0.0), 1.0)
        # (Tested in floats first: a dozen values, where four NumPy calls cost more than the
        # test. ``not abs(v) <= bound`` holds for NaN and the infinities too.)
        if any(not abs(v) <= bound for row in preds.tolist() for v in row):
            diverged = ~np.isfinite(preds) | (np.abs(preds) > bound)
            preds[diverged] = self.last_z
            self.__dict__.setdefault("_diverged", set()).update(np.nonzero(diverged.any(axis=1))[0].tolist())
        uplift = np.array([self._uplift_of(self.events.active(s, c.interval_s)) for s in starts]) \
            if self.events.spans else np.zeros(H)
        out = np.empty((H, len(c.quantiles)))
        best = kernels.issue_forecast(self.step, preds, uplift, self.model_error, c.blend_sharpness, self.tracked,
                                      self._scored, self.resid_scale, self._prior_z, float(WARM_RESIDUALS),
                                      self._due_target, self._due_models, self._due_point, self._due_offsets,
                                      self.scale, out, self.step_change)
        return QuantileForecast(self.last_ts, starts, out, c.quantiles, self.models[best].name)

    def _calendar(self) -> CalendarTable:
        table = self.__dict__.get("_cal_table")
        if table is None:
            c = self.config
            table = self._cal_table = CalendarTable.get(c.interval_s, c.day_seconds, c.daily_harmonics,
                                                        c.weekly_harmonics)
        return table

    # ------------------------------------------------------------------ events, state
    def add_event(self, external_id: str, kind: str, starts_at: float, ends_at: float) -> None:
        self.events.add(external_id, kind, starts_at, ends_at)

    def uplifts(self) -> dict[str, float]:
        """Learned uplift per event kind, in the series' units."""
        return {k: v * (self.scale or 1.0) for k, v in self.uplift.weights.items()}

    def _restart_model(self, i: int) -> None:
        c, name = self.config, self.models[i].name
        self.model_failures[name] = self.model_failures.get(name, 0) + 1
        log.warning("model %s diverged (a forecast past %g times the series' peak); it starts afresh",
                    name, DIVERGED_FACTOR)
        self.models[i] = build_models((name,), c.season, self.n_features, c.horizon,
                                      daily_terms=c.daily_harmonics > 0)[0]

    def blend_weights(self) -> dict[str, list[float]]:
        """Current blend weight of each model per horizon: exp(-sharpness * relative excess
        error), normalised; a model 5 % worse than the best keeps about an eighth of its weight."""
        w = kernels.blend_weights(self.model_error, self.config.blend_sharpness)
        return {m.name: w[:, i].round(4).tolist() for i, m in enumerate(self.models)}

    def to_bytes(self) -> bytes:
        return pickle.dumps(self, protocol=5)

    def __getstate__(self) -> dict:
        # The calendar table is shared and rebuilt on demand; it is not series state.
        state = self.__dict__.copy()
        state.pop("_cal_table", None)
        state.pop("_cal_rows", None)
        return state

    def _rates_per_level(self) -> np.ndarray:
        """Quantile tracking step per level: the median slow, the others at tracking_rate."""
        c = self.config
        return np.where(np.abs(self.taus - 0.5) < 1e-9, c.median_tracking_rate, c.tracking_rate)

    @staticmethod
    def from_bytes(data: bytes) -> "SeriesForecaster":
        obj = pickle.loads(data)
        if not isinstance(obj, SeriesForecaster):
            raise ValueError("checkpoint does not hold a SeriesForecaster")
        return obj


def compile_forecast_kernels() -> None:
    """Compile the forecast kernels (Numba, cached on disk) by running a tiny series
    through a forecaster: services call this before they join a consumer group, since the
    first compile on a fresh checkout takes about 10 s and would block the event loop."""
    forecaster = SeriesForecaster()
    for i in range(4):
        forecaster.learn(300.0 * i, 1.0 + i)
        forecaster.forecast()
