"""Sparsity schedules: how much of the model is pruned at each training step.

- one-shot: the final sparsity at the begin step, then training keeps it;
- constant: the same (TF Model Optimization's ConstantSparsity), re-applied every
  `frequency` steps between begin and end so that what training regrows is cut again;
- iterative: N prune-retrain rounds, the sparsity rising in equal steps of the kept
  fraction (each round prunes the same share of what is left);
- poly: TF Model Optimization's PolynomialDecay — from `initial` at `begin_step` to
  `final` at `end_step`, s(t) = final + (initial - final) * (1 - (t - begin)/(end - begin))^power,
  applied every `frequency` steps;
- agp: Zhu & Gupta's automated gradual pruning, the cubic case of poly (power 3) starting
  from 0 by default.

A schedule is plain data; `events(total_steps)` lists (step, sparsity) pruning events and
`curve(total_steps)` the sparsity at every step, which the app draws before training starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pruneviz.errors import PlanError


class ScheduleKind(StrEnum):
    ONESHOT = "oneshot"
    CONSTANT = "constant"
    ITERATIVE = "iterative"
    POLY = "poly"
    AGP = "agp"


@dataclass(frozen=True)
class Schedule:
    """When to prune, and to which sparsity (fractions of each pruned layer's weights)."""

    kind: ScheduleKind
    final: float
    initial: float = 0.0
    begin_step: int = 0
    end_step: int = 0
    frequency: int = 100
    power: float = 3.0
    rounds: int = 1

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", ScheduleKind(self.kind))
        except ValueError:
            raise PlanError(f"unknown schedule {self.kind!r}; choose one of "
                            f"{', '.join(k.value for k in ScheduleKind)}") from None
        for name in ("final", "initial"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 <= value < 1.0):
                raise PlanError(f"schedule {name} sparsity must be in [0, 1), got {value!r}"
                                " (a layer pruned to 100% computes nothing)")
        if self.kind in (ScheduleKind.POLY, ScheduleKind.AGP) and self.initial > self.final:
            raise PlanError(f"schedule initial sparsity {self.initial} is above the final "
                            f"{self.final}; sparsity only rises")
        if self.begin_step < 0 or self.end_step < 0:
            raise PlanError("schedule steps must be >= 0")
        if self.kind is not ScheduleKind.ONESHOT and self.end_step <= self.begin_step:
            raise PlanError(f"schedule end step {self.end_step} must come after the begin "
                            f"step {self.begin_step}")
        if self.frequency < 1:
            raise PlanError(f"pruning frequency must be at least 1 step, got {self.frequency}")
        if not (math.isfinite(self.power) and self.power > 0):
            raise PlanError(f"schedule power must be a positive number, got {self.power}")
        if self.rounds < 1:
            raise PlanError(f"iterative schedules need at least 1 round, got {self.rounds}")

    def sparsity_at(self, step: int) -> float:
        """The target sparsity once the events up to `step` have happened."""
        target = 0.0
        for at, sparsity in self.events(step + 1):
            if at <= step:
                target = sparsity
        return target

    def events(self, total_steps: int) -> list[tuple[int, float]]:
        """(step, sparsity) pruning events within `total_steps` training steps."""
        k = self.kind
        if k is ScheduleKind.ONESHOT:
            steps = [self.begin_step]
            values = [self.final]
        elif k is ScheduleKind.CONSTANT:
            steps = list(range(self.begin_step, self.end_step + 1, self.frequency))
            values = [self.final] * len(steps)
        elif k is ScheduleKind.ITERATIVE:
            span = self.end_step - self.begin_step
            steps = [self.begin_step + round(i * span / self.rounds) for i in range(self.rounds)]
            kept = 1.0 - self.final
            values = [1.0 - kept ** ((i + 1) / self.rounds) for i in range(self.rounds)]
        else:
            steps = [*range(self.begin_step, self.end_step, self.frequency), self.end_step]
            values = [self._poly(s) for s in steps]
        out = [(s, round(v, 6)) for s, v in zip(steps, values, strict=True) if s < total_steps]
        return out

    def _poly(self, step: int) -> float:
        span = self.end_step - self.begin_step
        done = min(1.0, max(0.0, (step - self.begin_step) / span))
        return float(self.final + (self.initial - self.final) * (1.0 - done) ** self.power)

    def curve(self, total_steps: int) -> list[float]:
        """The target sparsity at every step 0 .. total_steps - 1 (for the chart)."""
        events = self.events(total_steps)
        out = []
        current = 0.0
        i = 0
        for step in range(total_steps):
            while i < len(events) and events[i][0] <= step:
                current = events[i][1]
                i += 1
            out.append(current)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "initial": self.initial, "final": self.final,
                "begin_step": self.begin_step, "end_step": self.end_step,
                "frequency": self.frequency, "power": self.power, "rounds": self.rounds}


def agp(final: float, begin_step: int, end_step: int, frequency: int,
        initial: float = 0.0) -> Schedule:
    """Zhu & Gupta's automated gradual pruning (cubic)."""
    return Schedule(ScheduleKind.AGP, final, initial, begin_step, end_step, frequency, 3.0)


__all__ = ["Schedule", "ScheduleKind", "agp"]
