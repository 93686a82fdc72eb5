"""Disruption budgets: how much moving the planner may cause, and what a move costs.

Moving work is never free: a replica restarts, its caches go cold, its clients see a
pause. The budget bounds that disruption the way a Kubernetes PodDisruptionBudget and
Karpenter's disruption budgets do, and prices it so a move is made only when it pays:

* ``max_moves``: at most this many moves in one plan (the executor runs them concurrently);
* ``max_fraction``: at most this share of a pool's, and of a tenant's, allocations moved
  per ``window_s`` (moves already made in the window, from the snapshot, count);
* ``maintenance``: daily UTC windows outside which only evacuations run;
* ``evacuate_only``: tiers that move only when their resource fails (platinum);
* ``move_cost`` per replica, weighted per tier (``tier_weight``): the disruption cost a
  saving must exceed over the moved work's expected remaining life (at most ``horizon_s``).

Evacuations are not optional (the work is on failing capacity), so only ``max_moves``
limits them; what does not fit the budget is reported as unplaced, to move next round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time
from decimal import Decimal

DEFAULT_TIER_WEIGHT = {"platinum": Decimal(8), "gold": Decimal(4), "silver": Decimal(2), "bronze": Decimal(1)}


@dataclass(frozen=True, slots=True)
class DailyWindow:
    """A daily UTC window [start, end); it may cross midnight (22:00-04:00)."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> "DailyWindow":
        try:
            a, b = text.split("-")
            return cls(time.fromisoformat(a.strip()), time.fromisoformat(b.strip()))
        except ValueError:
            raise ValueError(f"maintenance window {text!r} is not HH:MM-HH:MM (UTC)") from None

    def contains(self, t: datetime) -> bool:
        now = t.time().replace(tzinfo=None)
        if self.start <= self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end


@dataclass(frozen=True, slots=True)
class DisruptionBudget:
    max_moves: int | None = None
    max_fraction: float = 1.0
    window_s: float = 3600.0
    maintenance: tuple[DailyWindow, ...] = ()
    evacuate_only: frozenset[str] = frozenset({"platinum"})
    move_cost: Decimal = Decimal(0)
    tier_weight: dict[str, Decimal] = field(default_factory=lambda: dict(DEFAULT_TIER_WEIGHT))
    horizon_s: float = 24 * 3600.0

    def __post_init__(self) -> None:
        if self.max_moves is not None and self.max_moves < 0:
            raise ValueError("max_moves must be 0 or more")
        if not 0.0 <= self.max_fraction <= 1.0:
            raise ValueError("max_fraction must be between 0 and 1")
        if self.move_cost < 0:
            raise ValueError("move_cost must be 0 or more")
        if self.horizon_s <= 0 or self.window_s <= 0:
            raise ValueError("horizon_s and window_s must be positive")

    def evacuations_only(self) -> "DisruptionBudget":
        """This budget with every tier evacuate-only: what a plan triggered by a failure uses."""
        from dataclasses import replace

        return replace(self, evacuate_only=frozenset(self.tier_weight) | self.evacuate_only)

    def in_maintenance(self, t: datetime) -> bool:
        return not self.maintenance or any(w.contains(t) for w in self.maintenance)

    def disruption(self, tier: str, replicas: int) -> Decimal:
        return self.move_cost * replicas * self.tier_weight.get(tier, Decimal(1))

    def fraction_limit(self, population: int) -> int:
        """How many of ``population`` allocations may move per window (at least one when
        any may: a pool of three at 20 % may still move one)."""
        if self.max_fraction <= 0 or population == 0:
            return 0
        return max(1, int(population * self.max_fraction))
