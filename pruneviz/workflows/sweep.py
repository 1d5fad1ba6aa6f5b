"""A uniform sweep: the same sparsity on every layer at a ladder of levels, each plan
measured with latency, one point of the experiment log per level.

`UniformSweep` measures one plan at a time and can be cancelled between plans, so that a
worker thread can run it on a session of its own and a page can show each point as it
comes; `Workspace.record_uniform_sweep` runs one to the end on the tab's session. Either
way a point becomes an experiment through `Workspace.record_sweep_point`, labelled by
`SweepPoint.label`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from pruneviz.core.plan import Plan
from pruneviz.core.session import PruningSession
from pruneviz.measure.meter import Meter, Report
from pruneviz.workflows.experiments import ORIGINAL


def report_sparsity(plan: Plan) -> str:
    """The common sparsity of a uniform plan, as a percentage label."""
    amounts = {e.sparsity for e in plan.layers.values()}
    return f"{next(iter(amounts)):.0%}" if len(amounts) == 1 and None not in amounts else "mixed"


@dataclass(frozen=True)
class SweepPoint:
    """One level of a sweep, measured: record it with `Workspace.record_sweep_point`."""

    plan: Plan  # stamped for the session's model
    report: Report  # measured with `plan` applied, with latency
    granularity: str
    criterion: str
    weights: str  # the name of the weights it was measured on

    @property
    def label(self) -> str:
        """Its label in the experiment log: "uniform unstructured l1 50%"."""
        return f"uniform {self.granularity} {self.criterion} {report_sparsity(self.plan)}"


def sweep_plans(session: PruningSession, levels: Sequence[float], granularity: str,
                criterion: str) -> list[Plan]:
    """The uniform plans at `levels` (fractions) that prune something, in level order."""
    plans = []
    for level in levels:
        plan, _ = session.uniform_plan(level, granularity, criterion)
        if not plan.is_empty:
            plans.append(plan)
    return plans


class UniformSweep:
    """The uniform plans at `levels`, measured one at a time by `meter` (with latency) on
    its session, which is borrowed: each plan is applied while it is measured, and the
    plan applied before is applied again after it. Give a worker thread a session (and a
    meter) of its own. `weights` names the weights the session prunes."""

    def __init__(self, meter: Meter, levels: Sequence[float], granularity: str,
                 criterion: str, *, weights: str = ORIGINAL) -> None:
        self.meter = meter
        self.granularity = granularity
        self.criterion = criterion
        self.weights = weights
        self.plans = sweep_plans(meter.session, levels, granularity, criterion)
        self.total = len(self.plans)
        self.done = 0

    def points(self, cancel: threading.Event | None = None) -> Iterator[SweepPoint]:
        """Measure each plan, yielding each point as it is measured; stop before the next
        plan once `cancel` is set."""
        for plan in self.plans[self.done:]:
            if cancel is not None and cancel.is_set():
                return
            report = self._measure(plan)
            self.done += 1
            yield SweepPoint(plan, report, self.granularity, self.criterion, self.weights)

    def _measure(self, plan: Plan) -> Report:
        with self.meter.session.applied(plan):
            return self.meter.report(latency=True)


__all__ = ["SweepPoint", "UniformSweep", "report_sparsity", "sweep_plans"]
