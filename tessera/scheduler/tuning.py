"""Learning-driven tuning: a River bandit picks the controller's knobs per context from the
realised reward (negative cost minus an SLA-miss penalty), online.

Knobs (``Knob``):

* the headroom quantile: how much capacity the scheduler (``Reservations``) and the
  simulator's controller keep ahead of the protected tiers' forecast demand. It is the
  quantile of the tier whose shortage costs most; each other tier's follows by the
  newsvendor (``reservation.tier_level``), so one knob sets a quantile per tier without a
  bandit arm per combination;
* the idle-close share: how long an idle partner VM is kept open before it is closed, as a
  share of its partner's ``idle_close_s``;
* the partner preference: whether the VMs opened first are the cheapest or the soonest
  usable (learnt only where partners' lead times differ);
* the consolidation threshold, when the migration planner runs: a factor on what the
  planner counts a move to cost.

The live scheduler opens, closes and moves nothing, so it tunes the headroom quantile
alone; the simulator's controller tunes them all. The context is the hour of day in
four bands (demand is daily-seasonal: the right settings differ between the ramp and the
trough); one bandit per band (``BANDITS``; epsilon-greedy by default), over the joint
settings of the knobs (their product: the knobs interact, closing idle VMs sooner asks for
more headroom, so they are learnt together rather than as independent bandits sharing one
reward). Each window:
``reward`` scores the setting chosen for the last one, ``choose`` picks the next.
Deterministic for a seed. Used by the live scheduler (``Scheduler.tuning_step``, published
as ``tuning.decision`` events) and by ``tessera simulate --policy learned``.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from river import bandit


@dataclass(frozen=True)
class Knob:
    """A controller setting the tuner chooses, and the values it may take."""

    name: str
    values: tuple[float, ...]


#: Headroom quantiles of the most protected tier (levels the demand engine tracks).
HEADROOM_QUANTILE = Knob("headroom_quantile", (0.5, 0.8, 0.9, 0.95, 0.99))
#: Share of each partner's ``idle_close_s`` an idle VM stays open (1 = the fleet's setting).
IDLE_CLOSE_SHARE = Knob("idle_close_share", (0.0, 0.5, 1.0))
#: The consolidation threshold: a consolidating move must save more than its cost, and the
#: planner's move cost is scaled by this factor (higher: fewer, surer moves).
CONSOLIDATION_COST_FACTOR = Knob("consolidation_cost_factor", (0.25, 1.0, 4.0))
#: Partner preference: which partner VMs the controller opens first, the cheapest per vCPU
#: (0) or the soonest usable, cheapest among those (1): paying more to miss less.
PARTNER_PREFERENCE = Knob("prefer_fast_partners", (0.0, 1.0))
ARMS = HEADROOM_QUANTILE.values
KNOB = HEADROOM_QUANTILE.name


# River is imported when a tuner first builds a bandit: it brings SciPy, about 1.3 s of a
# process's start, which a scheduler or a simulation that tunes nothing never needs.
def _epsilon_greedy(seed: int, epsilon: float) -> bandit.base.Policy:
    from river import bandit
    return bandit.EpsilonGreedy(epsilon=epsilon, decay=0.001, burn_in=1, seed=seed)


def _ucb(seed: int, epsilon: float) -> bandit.base.Policy:
    from river import bandit, preprocessing
    return bandit.UCB(delta=1.0, reward_scaler=preprocessing.TargetStandardScaler(None), burn_in=1, seed=seed)


def _thompson(seed: int, epsilon: float) -> bandit.base.Policy:
    from river import bandit, proba
    return bandit.ThompsonSampling(reward_obj=proba.Gaussian(), burn_in=1, seed=seed)


#: The River bandit policies the tuner can run per context, by name (seed, epsilon -> policy).
#: Epsilon-greedy is the default: it cost least on each of the six economics runs
#: (``load/bench_bandits.py``: 75,271 against 80,552 for UCB and 79,335 for Thompson
#: sampling in total, misses alike); the rewards (minus the window's cost and
#: misses) are scaled for UCB, which assumes sub-Gaussian rewards, as River advises.
BANDITS: dict[str, Callable[[int, float], bandit.base.Policy]] = {
    "epsilon-greedy": _epsilon_greedy, "ucb": _ucb, "thompson": _thompson}


def context_of(now: datetime) -> str:
    band = now.hour // 6
    return f"hours={band * 6:02d}-{band * 6 + 6:02d}"


class KnobTuner:
    def __init__(self, knobs: tuple[Knob, ...] = (HEADROOM_QUANTILE,), seed: int = 0, epsilon: float = 0.1,
                 policy: str = "epsilon-greedy"):
        if policy not in BANDITS:
            raise ValueError(f"bandit {policy!r} unknown; use one of {', '.join(BANDITS)}")
        self.knobs = knobs
        self.policy = policy
        self.settings: list[tuple[float, ...]] = list(itertools.product(*(k.values for k in knobs)))
        self.arms = list(range(len(self.settings)))
        self.policies: dict[str, bandit.base.Policy] = {}
        self.seed, self.epsilon = seed, epsilon
        self.last: tuple[str, int] | None = None
        self.counts: Counter[str] = Counter()

    def choose_settings(self, now: datetime) -> dict[str, float]:
        """The knobs' values for the window starting ``now``."""
        context = context_of(now)
        arm = self._policy(context).pull(self.arms)
        self.last = (context, arm)
        self.counts[self._label(arm)] += 1
        return dict(zip((k.name for k in self.knobs), self.settings[arm]))

    def _label(self, arm: int) -> str:
        values = self.settings[arm]
        if len(self.knobs) == 1:
            return format(values[0], "g")
        return ", ".join(f"{k.name}={v:g}" for k, v in zip(self.knobs, values))

    def _policy(self, context: str) -> bandit.base.Policy:
        policy = self.policies.get(context)
        if policy is None:
            policy = self.policies[context] = BANDITS[self.policy](self.seed + len(self.policies), self.epsilon)
        return policy

    def reward(self, value: float) -> None:
        if self.last is not None:
            context, arm = self.last
            self.policies[context].update(arm, value)

    def choices(self) -> dict[str, int]:
        """How often each setting was chosen."""
        return dict(sorted(self.counts.items()))


class QuantileTuner(KnobTuner):
    """The live scheduler's tuner: the headroom quantile alone."""

    def __init__(self, seed: int = 0, epsilon: float = 0.1, arms: tuple[float, ...] = ARMS):
        super().__init__((Knob(KNOB, arms),), seed, epsilon)
        self.levels = arms

    def choose(self, now: datetime) -> float:
        return self.choose_settings(now)[KNOB]

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
