"""The point forecasters a series blends, each a thin adapter over an online River model.

Every model sees the series in *normalised* units (value / series scale, fixed at warm-up)
so that learning rates mean the same for a series of CPU fractions and one of thousands
of vCPU, and every model answers the same question: given what was learned up to now,
the values of the next ``H`` intervals. Models learn one closed interval at a time; none
is ever refitted from scratch.

- ``last``: the last value (a strong baseline on 5-minute cluster series; kept in the
  blend so the engine never does much worse than it).
- ``holt_winters``: River's additive Holt-Winters (exponential smoothing with trend and
  a daily season).
- ``snarimax``: River's SNARIMAX (ARIMA with a seasonal AR term at lag ``season``), on the
  first difference.
- ``direct_ar``: one linear model per horizon (direct, not recursive, multi-step) of the
  change ``y[t+h] - y[t]`` on recent changes, distance from short and daily levels and
  the same span's change one and two days earlier; fitted by recursive least squares with
  exponential forgetting and Huber weights (a burst no feature could foresee moves the
  fit as if it were only 1.5 error scales away), vectorised over horizons. On top, a bias
  per horizon and hour of the target's day, learned from the fit's residuals: cluster
  demand drifts by the clock (up in the morning, down at night) in ways a linear map of
  recent changes cannot express.
  The strongest single model on the cluster traces; River has no recursive least squares
  with forgetting cheap enough for a per-interval budget, so this one is compiled with
  Numba (``kernels.direct_learn`` / ``direct_forecast``).
- ``calendar_linear``: River linear regression of the value's deviation from its slow
  level on daily and weekly Fourier terms; forecasts move from the last value along the
  learned profile: ``y[t] + s(t+h) - s(t)``.
- ``calendar_mlp``: the same framing with a small neural network (one tanh hidden layer,
  online SGD) in place of the linear map, as a River regressor.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
from river import base, linear_model, optim, time_series

from tessera.forecast import check_models, kernels


class PointModel(Protocol):
    name: str

    def learn(self, z: float, cal: np.ndarray) -> None:
        """Learn the closed interval's value ``z`` whose calendar features are ``cal``."""

    def forecast(self, z_last: float, cal_now: np.ndarray, cal_future: np.ndarray) -> np.ndarray:
        """Point forecasts for the next ``len(cal_future)`` intervals."""


class LastValue:
    name = "last"

    def learn(self, z: float, cal: np.ndarray) -> None:
        pass

    def forecast(self, z_last, cal_now, cal_future):
        return _held(z_last, len(cal_future))


def _held(z: float, n: int) -> np.ndarray:
    """``n`` forecasts of ``z`` (``np.full`` infers a dtype per call, several times dearer)."""
    out = np.empty(n)
    out.fill(z)
    return out


class HoltWintersModel:
    """River ``HoltWinters``, additive; falls back to the last value during its first season.

    River initialises an *additive* season with ratios ``y / level`` (right only for the
    multiplicative form, and a division by zero for an all-zero first season), so this
    adapter collects the first season itself and initialises the components the additive
    way (``y - level``); River's update equations run from then on.
    """

    name = "holt_winters"

    def __init__(self, season: int, alpha: float = 0.4, beta: float = 0.005, gamma: float = 0.15):
        self.model = time_series.HoltWinters(alpha=alpha, beta=beta, gamma=gamma, seasonality=season)
        self._first: list[float] | None = []

    def learn(self, z, cal):
        m = self.model
        if self._first is None:
            m.learn_one(z)
            return
        self._first.append(z)
        if len(self._first) < max(2, m.seasonality):
            return
        first, self._first = self._first, None
        level = sum(first) / len(first)
        m.level.append(level)
        m.trend.append(sum(b - a for a, b in zip(first, first[1:])) / (len(first) - 1))
        m.season.extend(v - level for v in first)
        m._initialized = True

    def forecast(self, z_last, cal_now, cal_future):
        if self._first is not None:
            return _held(z_last, len(cal_future))
        return np.asarray(self.model.forecast(horizon=len(cal_future)))


class SnarimaxModel:
    name = "snarimax"

    def __init__(self, season: int, p: int = 2, q: int = 1):
        self.model = time_series.SNARIMAX(
            p=p, d=1, q=q, m=season, sp=1 if season > 1 else 0,
            regressor=linear_model.LinearRegression(optimizer=optim.SGD(0.01), intercept_lr=0.001, l2=1e-4))
        self._seen = 0
        self._warm = season + 2

    def learn(self, z, cal):
        self.model.learn_one(z)
        self._seen += 1

    def forecast(self, z_last, cal_now, cal_future):
        if self._seen < self._warm:
            return _held(z_last, len(cal_future))
        out = np.asarray(self.fast_forecast(len(cal_future)), dtype=np.float64)
        # An online ARIMA can diverge on a regime change; never let it answer absurdly.
        if all(map(math.isfinite, out.tolist())):
            return out
        return np.where(np.isfinite(out), out, z_last)

    def fast_forecast(self, horizon: int) -> np.ndarray | list[float]:
        """River's ``SNARIMAX.forecast`` for this configuration (d=1, linear regressor),
        evaluated directly on the learned weights: the same recursion, compiled
        (``kernels.arima_path``), without building a feature dict per step, which made
        River's version cost ~100 us per update (and a plain-Python loop ~40 us).
        ``tests/test_forecast.py`` checks it against ``self.model.forecast``."""
        m = self.model
        Y, E = m.y_diff, m.errors
        if len(Y) < m.m * m.sp or len(Y) < m.p:
            return m.forecast(horizon=horizon)
        reg = m.regressor
        w = reg._weights
        ar = np.array([w.get(f"y-{k + 1}", 0.0) for k in range(m.p)])
        ma = np.array([w.get(f"e-{k + 1}", 0.0) for k in range(m.q)])
        sar = w.get(f"sy-{m.m}", 0.0) if m.sp else 0.0  # River's feature names
        lag = m.m
        # Only the values the recursion reads (deques index cheaply only near their ends).
        y_recent = np.array([Y[k] for k in range(m.p)])
        e_recent = np.array([E[k] for k in range(min(m.q, len(E)))])
        y_season = np.array([Y[lag - 1 - t] for t in range(min(horizon, lag))]) if sar else np.zeros(0)
        out = np.empty(horizon)
        kernels.arima_path(reg.intercept, ar, ma, sar, lag, y_recent, e_recent, y_season, m.y_hist[0], out)
        return out


class _SlowLevel:
    """Exponentially weighted mean with a half-life of about a day: the 'level' a seasonal
    profile is measured against."""

    def __init__(self, season: int):
        self.rate = 1.0 - 0.5 ** (1.0 / max(season, 1))
        self.value: float | None = None

    def update(self, z: float) -> float:
        self.value = z if self.value is None else self.value + self.rate * (z - self.value)
        return self.value


class CalendarLinear:
    name = "calendar_linear"

    def __init__(self, season: int, lr: float = 0.02):
        self.model = linear_model.LinearRegression(optimizer=optim.SGD(lr), intercept_lr=0.0, l2=0.0)
        self.level = _SlowLevel(season)

    def learn(self, z, cal):
        level = self.level.update(z)
        self.model.learn_one(_as_dict(cal), z - level)

    def forecast(self, z_last, cal_now, cal_future):
        w = self.model._weights
        n = cal_now.shape[0]
        coef = np.fromiter((w.get(i, 0.0) for i in range(n)), dtype=np.float64, count=n)
        return z_last + (cal_future - cal_now) @ coef


class TinyMLPRegressor(base.Regressor):
    """One hidden tanh layer trained by online SGD: a small neural net as a River regressor.

    River 0.26 no longer ships its neural-net module, so this is the minimal one the
    engine needs; it follows River's ``learn_one`` / ``predict_one`` protocol and also
    predicts many rows at once (``predict_many_array``) for multi-horizon forecasts.
    """

    def __init__(self, n_inputs: int, hidden: int = 12, lr: float = 0.01, seed: int = 7):
        rng = np.random.default_rng(seed)
        self.n_inputs, self.hidden, self.lr = n_inputs, hidden, lr
        self.w1 = rng.normal(0.0, 1.0 / np.sqrt(n_inputs), size=(n_inputs, hidden))
        self.b1 = np.zeros(hidden)
        self.w2 = rng.normal(0.0, 1.0 / np.sqrt(hidden), size=hidden) * 0.1
        self.b2 = 0.0

    def predict_many_array(self, X: np.ndarray) -> np.ndarray:
        out = np.empty(len(X))
        kernels.mlp_predict(np.ascontiguousarray(X), self.w1, self.b1, self.w2, self.b2, out)
        return out

    def learn_array(self, x: np.ndarray, y: float) -> None:
        self.b2 = kernels.mlp_learn(np.ascontiguousarray(x), y, self.w1, self.b1, self.w2, self.b2, self.lr)

    def learn_one(self, x: dict, y: float) -> "TinyMLPRegressor":
        self.learn_array(np.fromiter((x[k] for k in sorted(x)), dtype=np.float64), y)
        return self

    def predict_one(self, x: dict) -> float:
        return float(self.predict_many_array(np.fromiter((x[k] for k in sorted(x)), dtype=np.float64)[None, :])[0])


class CalendarMLP:
    name = "calendar_mlp"

    def __init__(self, season: int, n_features: int):
        self.net = TinyMLPRegressor(n_features)
        self.level = _SlowLevel(season)

    def learn(self, z, cal):
        level = self.level.update(z)
        self.net.learn_array(cal, z - level)

    def forecast(self, z_last, cal_now, cal_future):
        out = np.empty(len(cal_future))
        n = self.net
        kernels.mlp_profile_path(z_last, np.ascontiguousarray(cal_now), np.ascontiguousarray(cal_future),
                                 n.w1, n.b1, n.w2, n.b2, out)
        return out


class DirectAR:
    name = "direct_ar"
    LAGS = 6
    #: Half-lives (intervals) of the levels the value's distance from is a feature; the
    #: last one is replaced by the season length (a daily level).
    HALFLIVES = (3.0, 12.0, 0.0)

    #: Time-of-day slots (hours) of the per-horizon bias; see ``time_of_day_slot``.
    SLOTS = 24
    BIAS_RATE = 0.015

    def __init__(self, season: int, horizon: int, forgetting: float = 0.9995, prior: float = 100.0,
                 huber: float = 1.5, bias_rate: float = BIAS_RATE, time_of_day: bool = True):
        self.S, self.H, self.lam, self.huber = season, horizon, forgetting, huber
        self.err_scale = np.zeros(horizon)
        # Without daily calendar terms there is no time of day to read: no bias then.
        self.bias_rate = bias_rate if time_of_day else 0.0
        self.bias = np.zeros((horizon, self.SLOTS))
        self._no_cal = not time_of_day
        halflives = np.array([h or float(season) for h in self.HALFLIVES])
        self.rates = 1.0 - 0.5 ** (1.0 / np.maximum(halflives, 1.0))
        self.F = 1 + self.LAGS + len(halflives) + 3
        self.W = np.zeros((horizon, self.F))
        self.P = np.repeat(np.eye(self.F)[None] * prior, horizon, axis=0)
        self.L = 2 * season + horizon + self.LAGS + 2
        self.hist = np.zeros(self.L)
        self.t = -1
        self.levels = np.zeros(len(halflives))
        # The levels at each of the last H origins (features are rebuilt from the history
        # and these when the outcome arrives).
        self._levels_at = np.zeros((horizon, len(halflives)))

    def learn(self, z, cal):
        self.t += 1
        kernels.direct_learn(self.t, z, self.hist, self.levels, self.rates, self.W, self.P, self.LAGS, self.S,
                             self._levels_at, self.lam, self.err_scale, self.huber, self.bias,
                             cal[:0] if self._no_cal else cal, self.bias_rate)

    def forecast(self, z_last, cal_now, cal_future):
        if self.t < 0:
            return _held(z_last, len(cal_future))
        out = np.empty(self.H)
        kernels.direct_forecast(self.t, self.hist, self.LAGS, self.S, self.levels, self._levels_at, self.W,
                                self.bias, cal_future[:, :0] if self._no_cal else cal_future, out)
        return out[:len(cal_future)]


def time_of_day_slot(cal: np.ndarray, slots: int) -> int:
    """Which of ``slots`` equal parts of the day the interval with calendar row ``cal``
    falls in (-1 without daily terms). The phase is read back from the first daily
    harmonic (sin, cos), so slots follow the clock, not the series' first interval."""
    if len(cal) < 2:
        return -1
    return kernels.time_of_day_slot(cal[0], cal[1], slots)


def _as_dict(v: np.ndarray) -> dict[int, float]:
    return dict(enumerate(v.tolist()))


def build_models(names: tuple[str, ...], season: int, n_features: int, horizon: int,
                 daily_terms: bool = True) -> list[PointModel]:
    """The named models; ``daily_terms``: the calendar rows start with the daily harmonics."""
    makers = {
        "last": lambda: LastValue(),
        "holt_winters": lambda: HoltWintersModel(season),
        "snarimax": lambda: SnarimaxModel(season),
        "direct_ar": lambda: DirectAR(season, horizon, time_of_day=daily_terms),
        "calendar_linear": lambda: CalendarLinear(season),
        "calendar_mlp": lambda: CalendarMLP(season, n_features),
    }
    check_models(names)
    return [makers[n]() for n in names]
