"""Learning-driven tuning: a River bandit picks the controller's headroom quantile per
context from the realised reward (negative cost minus an SLA-miss penalty), online.

The context is the hour of day in four bands (demand is daily-seasonal, and the right
headroom differs between the ramp and the trough); one epsilon-greedy bandit per band.
Each control interval: ``reward`` scores the arm chosen last interval, ``choose`` picks
the next. Deterministic for a seed.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from river import bandit

#: Headroom quantiles the tuner chooses among (levels the demand engine tracks).
ARMS = (0.5, 0.8, 0.9, 0.95, 0.99)


class QuantileTuner:
    def __init__(self, seed: int = 0, epsilon: float = 0.1, arms: tuple[float, ...] = ARMS):
        self.arms = list(range(len(arms)))
        self.levels = arms
        self.policies = {band: bandit.EpsilonGreedy(epsilon=epsilon, decay=0.001, seed=seed + band, burn_in=1)
                         for band in range(4)}
        self.last: tuple[int, int] | None = None
        self.counts: Counter[str] = Counter()

    def choose(self, now: datetime) -> float:
        band = now.hour // 6
        arm = self.policies[band].pull(self.arms)
        self.last = (band, arm)
        self.counts[format(self.levels[arm], "g")] += 1
        return self.levels[arm]

    def reward(self, value: float) -> None:
        if self.last is not None:
            band, arm = self.last
            self.policies[band].update(arm, value)

    def choices(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))
