"""Learning-driven tuning: a River bandit picks a knob's value per context from the
realised reward (negative cost minus an SLA-miss penalty), online.

The knob is the headroom quantile: how much capacity the scheduler (``Reservations``) and
the simulator's controller keep ahead of the protected tiers' forecast demand. The context
is the hour of day in four bands (demand is daily-seasonal, and the right headroom differs
between the ramp and the trough); one epsilon-greedy bandit per band. Each window:
``reward`` scores the arm chosen for the last one, ``choose`` picks the next. Deterministic
for a seed. Used by the live scheduler (``Scheduler.tuning_step``, published as
``tuning.decision`` events) and by ``tessera simulate --policy learned``.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from river import bandit

#: Headroom quantiles the tuner chooses among (levels the demand engine tracks).
ARMS = (0.5, 0.8, 0.9, 0.95, 0.99)
KNOB = "headroom_quantile"


def context_of(now: datetime) -> str:
    band = now.hour // 6
    return f"hours={band * 6:02d}-{band * 6 + 6:02d}"


class QuantileTuner:
    def __init__(self, seed: int = 0, epsilon: float = 0.1, arms: tuple[float, ...] = ARMS):
        self.arms = list(range(len(arms)))
        self.levels = arms
        self.policies: dict[str, bandit.EpsilonGreedy] = {}
        self.seed, self.epsilon = seed, epsilon
        self.last: tuple[str, int] | None = None
        self.counts: Counter[str] = Counter()

    def choose(self, now: datetime) -> float:
        context = context_of(now)
        arm = self._policy(context).pull(self.arms)
        self.last = (context, arm)
        self.counts[format(self.levels[arm], "g")] += 1
        return self.levels[arm]

    def _policy(self, context: str) -> bandit.EpsilonGreedy:
        policy = self.policies.get(context)
        if policy is None:
            policy = self.policies[context] = bandit.EpsilonGreedy(
                epsilon=self.epsilon, decay=0.001, burn_in=1, seed=self.seed + len(self.policies))
        return policy

    def reward(self, value: float) -> None:
        if self.last is not None:
            context, arm = self.last
            self.policies[context].update(arm, value)

    def replay(self, decisions: list) -> None:
        """Learn again from published decisions (``tuning.decision`` events, in order): each
        reward scores the choice the decision before made. A restarted scheduler keeps what
        its tuner learned."""
        before = None
        for d in decisions:
            if before is not None and d.reward is not None and before.arm:
                arm = min(range(len(self.levels)), key=lambda i: abs(self.levels[i] - float(before.arm)))
                self._policy(before.context).update(arm, d.reward)
            before = d

    @property
    def last_choice(self) -> tuple[str, float] | None:
        return None if self.last is None else (self.last[0], self.levels[self.last[1]])

    def choices(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))
