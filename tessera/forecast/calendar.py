"""Calendar features: Fourier terms of the time of day and the day of week.

Demand on clusters follows the clock (a daily cycle, a weekly one). Sine/cosine pairs of
the phase inside each cycle let a linear model represent any smooth seasonal profile,
and are known for every future interval, so regressions can forecast on them directly.

>>> f = fourier_terms(np.array([0.0, 21600.0]), period_s=86400.0, harmonics=1)
>>> (np.round(f, 3) + 0.0).tolist()   # + 0.0 turns -0.0 into 0.0
[[0.0, 1.0], [1.0, 0.0]]
"""

from __future__ import annotations

import numpy as np

DAY_S = 86_400.0


def fourier_terms(ts: np.ndarray, period_s: float, harmonics: int) -> np.ndarray:
    """Shape (len(ts), 2 * harmonics): sin, cos of k * phase for k = 1..harmonics."""
    phase = 2.0 * np.pi * (np.asarray(ts, dtype=np.float64) % period_s) / period_s
    k = np.arange(1, harmonics + 1, dtype=np.float64)
    angles = phase[:, None] * k[None, :]
    out = np.empty((len(phase), 2 * harmonics))
    out[:, 0::2] = np.sin(angles)
    out[:, 1::2] = np.cos(angles)
    return out


def calendar_matrix(ts: np.ndarray, day_s: float = DAY_S, daily_harmonics: int = 4,
                    weekly_harmonics: int = 2) -> np.ndarray:
    """Daily and weekly Fourier terms for each timestamp (seconds since the epoch, UTC)."""
    parts = [fourier_terms(ts, day_s, daily_harmonics)]
    if weekly_harmonics:
        parts.append(fourier_terms(ts, 7 * day_s, weekly_harmonics))
    return np.hstack(parts)


class CalendarTable:
    """The calendar rows of every interval of one week, computed once and shared.

    Interval starts lie on a grid, so their features repeat weekly; looking rows up costs
    far less than recomputing sines per update (which dominated the engine's profile).
    Timestamps off the grid are computed directly.
    """

    _shared: dict[tuple, "CalendarTable"] = {}

    def __init__(self, interval_s: float, day_s: float, daily_harmonics: int, weekly_harmonics: int):
        self.interval_s = float(interval_s)
        self.args = (day_s, daily_harmonics, weekly_harmonics)
        self.period = max(int(round(7 * day_s / self.interval_s)), 1)
        self.rows = calendar_matrix(np.arange(self.period) * self.interval_s, *self.args)

    @classmethod
    def get(cls, interval_s: float, day_s: float, daily_harmonics: int, weekly_harmonics: int) -> "CalendarTable":
        key = (float(interval_s), float(day_s), daily_harmonics, weekly_harmonics)
        table = cls._shared.get(key)
        if table is None:
            table = cls._shared[key] = cls(*key)
        return table

    def rows_from(self, ts: float, n: int) -> np.ndarray:
        """Rows for the ``n`` consecutive intervals starting at ``ts``."""
        k, off = divmod(ts, self.interval_s)
        if off:
            return calendar_matrix(ts + self.interval_s * np.arange(n), *self.args)
        start = int(k) % self.period
        if start + n <= self.period:
            return self.rows[start:start + n]
        return self.rows[(start + np.arange(n)) % self.period]
