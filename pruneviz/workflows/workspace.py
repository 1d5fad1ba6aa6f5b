"""A Workspace is one user's work on one model: a Workbench, the experiment log of
everything measured on it, and the named weight sets the session can prune.

It is plain Python (no Streamlit): the app keeps one per browser tab, the CLI or a test
can make one over any Workbench. Every workflow that measures several plans (a uniform
sweep, the best deployable forms, a budget comparison, int8 / low-rank techniques)
records its results in the log and leaves the session's plan and weights as it found
them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from torch import Tensor

from pruneviz.core.plan import Plan
from pruneviz.errors import PrunevizError
from pruneviz.i18n import _
from pruneviz.measure.forms import measure_forms
from pruneviz.measure.meter import Report, latency_batch
from pruneviz.measure.metrics import EvalResult, Stop, evaluate
from pruneviz.measure.storage import dense_bytes, gzip_size
from pruneviz.workflows.allocation import (
    Budget,
    BudgetKind,
    Method,
    Outcome,
    method_name,
    plan_for_budget,
)
from pruneviz.workflows.experiments import (
    ORIGINAL,
    Experiment,
    ExperimentLog,
    describe_plan,
    granularity_name,
    technique_name,
    weights_name,
)
from pruneviz.workflows.floor import OBJECTIVE_NAMES, FloorResult, Objective, plan_for_floor
from pruneviz.workflows.refine import Refiner
from pruneviz.workflows.sensitivity import SensitivityResult
from pruneviz.workflows.sweep import SweepPoint, UniformSweep, report_sparsity
from pruneviz.workflows.techniques import Recorded, record_technique
from pruneviz.workflows.workbench import Workbench, load_weights

if TYPE_CHECKING:  # only read for its attributes (long_jobs imports load_weights)
    from pruneviz.workflows.long_jobs import FinetuneOutcome

# A plan's slow figures (latency, gzip size, the whole set's metric) are measured once it
# has stayed applied this long: a tab whose sliders keep moving costs the server only its
# slider moves, and a classroom of them stays fast (benchmarks/classroom.py).
REFINE_SETTLE = 1.0

WeightSets = dict[str, dict[str, Tensor]]  # {name: state dict}: fine-tuned weights, by name


def budget_text(budget: Budget) -> str:
    """A short label for a budget: "80% sparsity", "50% MACs", "24.0 KiB sparse", "0.50 ms"."""
    if budget.kind is BudgetKind.SPARSITY:
        return _("{percent}% sparsity").format(percent=f"{budget.value * 100:.4g}")
    if budget.kind is BudgetKind.MACS:
        return f"{budget.value * 100:.4g}% MACs"
    if budget.kind is BudgetKind.SIZE:
        return _("{size} KiB sparse").format(size=f"{budget.value / 1024:.1f}")
    return f"{budget.value:.2f} ms"


class Journal(Protocol):
    """Where a Workspace's changes are written as they happen (saved.Saver)."""

    def experiment(self, space: Workspace, experiment: Experiment) -> None: ...
    def state(self, space: Workspace) -> None: ...
    def weights(self, space: Workspace, name: str, state: dict[str, Tensor]) -> None: ...
    def result(self, space: Workspace, kind: str, value: object) -> None: ...
    def notes(self, space: Workspace, text: str) -> None: ...


@dataclass(frozen=True)
class Compared:
    """One method's plan fitted to a budget, measured, and its entry in the experiment log."""

    outcome: Outcome
    experiment: Experiment


class Workspace:
    """One user's work on one model: its workbench, experiment log and weight sets.

    The log starts with the bench's baseline. `weight_sets` holds fine-tuned weights by
    name (pass a dict that outlives the workspace to keep them across rebuilds); the
    original weights are always the bench's pristine model's.
    """

    def __init__(self, bench: Workbench, weight_sets: WeightSets | None = None) -> None:
        self.bench = bench
        self.log = ExperimentLog(bench.eval_data.higher_is_better)
        self.log.record(bench.baseline, bench.session.stamp(Plan()), _("baseline (unpruned)"))
        self.best_forms: dict[int, Report] = {}  # experiment id -> its best deployable form
        self.compressions: list[Recorded] = []  # what the last int8 / SVD form measured
        self._weight_sets: WeightSets = {} if weight_sets is None else weight_sets
        self._weights = ORIGINAL
        self.head = 0  # the experiment the plan on screen came from (the next one's parent)
        self.sensitivity: SensitivityResult | None = None  # the last analysis kept
        self.finetuned: dict[int, FinetuneOutcome] = {}  # finished runs, by run number
        self.notes = ""
        # Where the workspace is saved as it changes (None: it is not saved).
        self.saver: Journal | None = None
        self.log.listener = self._logged
        # the slow figures of the current plan, measured in the background
        self.refiner = Refiner(bench, on_finish=self._refined, then=self._finish_baseline,
                               then_needed=self._baseline_pending, settle=REFINE_SETTLE)

    # -- weights: the original ones, or fine-tuned ones ----------------------------------
    @property
    def weights(self) -> str:
        """The name of the weights the session prunes (ORIGINAL unless switched)."""
        return self._weights

    def remember_weights(self, name: str, state: dict[str, Tensor]) -> None:
        """Keep weights under `name`, for experiments that were measured on them."""
        self._weight_sets[name] = state
        if self.saver is not None:
            self.saver.weights(self, name, state)

    def weight_sets(self) -> WeightSets:
        """The weights kept besides the original ones, by name."""
        return dict(self._weight_sets)

    # -- what is saved: every change, as it happens ----------------------------------------
    def _logged(self, experiment: Experiment) -> None:
        if self.saver is not None:
            self.saver.experiment(self, experiment)

    def _moved(self) -> None:
        """The plan on screen, its weights or the experiment it came from changed."""
        if self.saver is not None:
            self.saver.state(self)

    def keep_sensitivity(self, result: SensitivityResult) -> None:
        """Keep a (finished or stopped) sensitivity analysis of this model."""
        if result is self.sensitivity:
            return
        self.sensitivity = result
        if self.saver is not None:
            self.saver.result(self, "sensitivity", result)

    def keep_finetune(self, outcome: FinetuneOutcome) -> None:
        """Keep a finished fine-tuning run (its weights are kept by remember_weights)."""
        self.finetuned[outcome.run] = outcome
        if self.saver is not None:
            self.saver.result(self, f"finetune {outcome.run}", outcome)

    def set_notes(self, text: str) -> None:
        """The user's notes on this model's work."""
        if text != self.notes:
            self.notes = text
            if self.saver is not None:
                self.saver.notes(self, text)

    def weights_state(self, name: str) -> dict[str, Tensor]:
        """The weights called `name` (ORIGINAL: the bench's pristine model's)."""
        if name == ORIGINAL:
            return self.bench.pristine.state_dict()
        found = self._weight_sets.get(name)
        if found is None:
            raise PrunevizError(f"the {name} weights are not kept in this tab any more; "
                                "run the fine-tuning (or the refit) again")
        return found

    def use_weights(self, name: str, plan: Plan | None = None) -> None:
        """Make the weights called `name` the session's originals, with `plan` (default:
        the current plan) applied."""
        session = self.bench.session
        target = session.plan if plan is None else plan
        load_weights(session, self.weights_state(name))
        self.bench.meter.clear()  # its measurements were of the other weights
        self._weights = name
        session.apply(target)
        found = self.log.find(session.plan, name)
        if found is not None:
            self.head = found.id
        self._moved()

    # -- the current plan ----------------------------------------------------------------
    def measure_and_record(self, label: str | None = None) -> Report:
        """Measure the current plan with latency (cached per plan) and record it."""
        report = self.bench.meter.report(latency=True)
        plan = self.bench.session.stamp(self.bench.session.plan)
        self._record_current(report, plan, label)
        return report

    def _record_current(self, report: Report, plan: Plan, label: str | None) -> None:
        """Record the plan on screen, as coming from the one before it."""
        experiment = self.log.record(report, plan, label or describe_plan(plan),
                                     self._weights, parent=self.head)
        if experiment.id != self.head:
            self.head = experiment.id
            self._moved()

    def measure_live(self, label: str | None = None) -> Report:
        """Measure the current plan at the cost of one forward pass of the live data and
        record it; the slow figures (whole-set metric, latency, gzip size) follow in the
        background (`refiner`), and the log's entry is completed when they are in."""
        report = self.bench.meter.report(gzip=False)
        plan = self.bench.session.stamp(self.bench.session.plan)
        self._record_current(report, plan, label)
        self.refiner.start()
        return report

    def baseline(self) -> Report:
        """The unpruned model's report, with the slow figures measured since it opened."""
        base = self.bench.baseline
        meter = self.bench.meter
        empty = Plan()
        full = meter.known("eval_full", empty)
        gzip = meter.known("gzip", empty)
        timed = meter.known("latency", empty)
        return replace(
            base,
            evaluation_full=base.evaluation_full if full is None else full,
            sizes=base.sizes if gzip is None else replace(base.sizes, gzip=gzip),
            latency=base.latency if timed is None else timed[0])

    def settle(self) -> None:
        """Wait for the current plan's background measurement, so that what is recorded
        next does not stop it (it has the latency and sizes of the plan on screen)."""
        self.refiner.wait()

    def _baseline_pending(self) -> bool:
        """Whether the unpruned model's slow figures are still to measure (on the pristine
        model: the original weights only)."""
        if self._weights != ORIGINAL:
            return False
        meter, empty = self.bench.meter, Plan()
        timed = meter.reference is None or meter.known("latency", empty) is not None
        return (meter.known("gzip", empty) is None or not timed
                or (meter.full_data is not None and meter.known("eval_full", empty) is None))

    def _finish_baseline(self, report: Report, stop: Stop) -> None:
        """The unpruned model's slow figures, measured on the pristine model (the original
        weights; no plan touches it): the whole set's metric, the gzip size, and the
        latency the last refinement timed it at (`report`'s reference); then completes
        the log's baseline entry."""
        if self._weights != ORIGINAL:
            return
        meter, pristine, empty = self.bench.meter, self.bench.pristine, Plan()
        if meter.full_data is not None and meter.known("eval_full", empty) is None:
            meter.remember("eval_full", empty, evaluate(pristine, meter.full_data, stop=stop))
        if meter.known("gzip", empty) is None:
            meter.remember("gzip", empty, gzip_size(dense_bytes(pristine.state_dict()),
                                                    stop=stop))
        reference = report.latency_reference
        if meter.known("latency", empty) is None and reference is not None:
            meter.remember("latency", empty, (reference, reference, None))
        self.log.record(self.baseline(), self.bench.session.stamp(empty), weights=ORIGINAL)

    def _refined(self, report: Report) -> None:
        """A refinement finished: complete the log's entry for its plan (on its weights)."""
        self.log.record(report, Plan.from_dict(report.plan), weights=self._weights)

    def restore_plan(self, plan: Plan) -> None:
        """Apply `plan` to the session (on the weights it prunes now)."""
        self.bench.session.apply(plan)
        found = self.log.find(self.bench.session.plan, self._weights)
        if found is not None:
            self.head = found.id
        self._moved()

    def restore_experiment(self, id: int) -> None:
        """Apply experiment `id`'s plan on the weights it was measured with; what is
        measured next branches from it."""
        experiment = self.log.get(id)
        if experiment.weights != self._weights:
            self.use_weights(experiment.weights, self.log.plan(id))
        else:
            self.restore_plan(self.log.plan(id))
        if experiment.is_pruning:
            self.head = id
            self._moved()

    def full_evaluation(self) -> EvalResult | None:
        """The current plan's metric on the whole evaluation set, if measured for it."""
        meter = self.bench.meter
        return meter.evaluate_full() if meter.has("eval_full") else None

    def evaluate_full(self) -> EvalResult:
        """Measure the current plan on the whole evaluation set (it may be slow)."""
        self.refiner.stop()  # it may be measuring the same: one forward at a time
        return self.bench.evaluate_full()

    def _current(self) -> tuple[Plan, str]:
        return self.bench.session.plan, self._weights

    # -- workflows over many plans ---------------------------------------------------------
    def record_uniform_sweep(self, levels: list[float], granularity: str,
                             criterion: str) -> int:
        """Measure uniform plans at `levels` (fractions) and record them; returns how many.
        (The app measures a sweep in the background: see `UniformSweep`.)"""
        self.settle()
        sweep = UniformSweep(self.bench.meter, levels, granularity, criterion,
                             weights=self._weights)
        for point in sweep.points():
            self.record_sweep_point(point)
        return sweep.total

    def record_sweep_point(self, point: SweepPoint) -> Experiment:
        """Record one measured level of a uniform sweep (its own weights' name: a sweep
        measured in the background keeps the weights it started on)."""
        return self.log.record(point.report, point.plan, point.label, point.weights)

    def measure_best_forms(self, runs: int = 10) -> None:
        """Measure the deployable forms (masked, slimmed, sparse) of every recorded pruning
        configuration not measured yet, each on the weights it was measured with, timed
        together, and keep the one to ship for speed in `best_forms` (`Forms.choice`: masked
        unless another is measurably faster)."""
        self.settle()
        session = self.bench.session
        current, weights = session.plan, self._weights
        batch = latency_batch(self.bench.eval_data, self.bench.meter.latency_batch_size)
        # int8 / SVD points are measured as they are, not as deployable forms of a plan
        todo = [e for e in self.log if e.id not in self.best_forms and e.is_pruning]
        # the session's own weights first, so that most runs need no switching
        order: Iterable[str] = dict.fromkeys([weights, *(e.weights for e in todo)])
        loaded = weights
        try:
            for name in order:
                group = [e for e in todo if e.weights == name]
                if not group:
                    continue
                if name != loaded:
                    load_weights(session, self.weights_state(name))
                    loaded = name
                for experiment in group:
                    with session.applied(self.log.plan(experiment.id)):
                        self.best_forms[experiment.id] = measure_forms(
                            session, batch, runs=runs).choice()
        finally:
            if loaded != weights:  # the same values bit for bit: the meter's cache stays valid
                load_weights(session, self.weights_state(weights))
                session.apply(current)

    def record_budget_comparison(self, result: SensitivityResult, budget: Budget,
                                 cap: float) -> list[Compared]:
        """Fit a uniform, a global, a sensitivity-guided and an outlier-weighted (owl;
        not at N:M, whose sparsity is fixed) plan to `budget` (with the analysis's
        granularity and criterion, no layer above `cap`), measure each with latency and
        record it. The plan applied before is applied again after."""
        self.settle()
        compared = []
        for method in Method:
            if method is Method.OWL and result.granularity.n_m is not None:
                continue
            outcome = plan_for_budget(self.bench, budget, method,
                                      granularity=result.granularity,
                                      criterion=result.criterion, sensitivity=result, cap=cap)
            with self.bench.applied(outcome.plan):
                self.measure_and_record(_("{method} {budget} ({granularity}, {criterion})").format(
                    method=method_name(method), budget=budget_text(budget),
                    granularity=granularity_name(result.granularity.value),
                    criterion=result.criterion))
                experiment = self.log.find(self.bench.session.plan, self._weights)
            assert experiment is not None  # just recorded
            compared.append(Compared(outcome, experiment))
        return compared

    def record_floor(self, result: SensitivityResult, floor: float, method: Method | str,
                     objective: Objective | str, cap: float) -> tuple[FloorResult,
                                                                      Experiment | None]:
        """Search `method`'s plans (the analysis's granularity and criterion, no layer above
        `cap`) for the one that prunes the most by `objective` while the metric meets
        `floor` (see `plan_for_floor`); measure the chosen plan with latency and record it.
        The experiment is None when no plan meets the floor. The plan applied before is
        applied again after."""
        self.settle()
        found = plan_for_floor(self.bench, floor, method, objective=objective,
                               granularity=result.granularity, criterion=result.criterion,
                               sensitivity=result, cap=cap)
        if found.chosen is None:
            return found, None
        side = ">=" if found.floor.higher_is_better else "<="
        metric_name = _("accuracy") if found.metric_name == "accuracy" else found.metric_name
        with self.bench.applied(found.chosen.plan):
            self.measure_and_record(_(
                "{method} most {objective} at {metric_name} {side} {floor} ({granularity}, "
                "{criterion})").format(
                method=method_name(found.method), objective=_(OBJECTIVE_NAMES.get(
                    found.objective.value, found.objective.value)),
                metric_name=metric_name, side=side, floor=f"{floor:.4g}",
                granularity=granularity_name(result.granularity.value),
                criterion=result.criterion))
            experiment = self.log.find(self.bench.session.plan, self._weights)
        return found, experiment

    def record_compression(self, kind: str, apply_to: str, rank: float | None = None,
                           group_size: int | None = None) -> list[Recorded]:
        """Measure technique `kind` ("int8", "int8-static", "int4-w" in groups of at most
        `group_size`, or "svd" at `rank`, a fraction of full rank) on the unpruned model
        and/or the current plan (`apply_to`, one of techniques.APPLY_TO), timed as the
        meter times plans (int4: storage only, not timed), and record the points (kept in
        `compressions`)."""
        self.settle()
        self.compressions = record_technique(
            self.bench, self.log, kind, apply_to=apply_to, weights=self._weights, rank=rank,
            runs=self.bench.meter.latency_runs,
            **({} if group_size is None else {"group_size": group_size}))
        return self.compressions

    def last_compression(self) -> list[tuple[str, tuple[str, ...]]]:
        """What the last int8 / SVD form measured: per point, a sentence and its notes."""
        lines: list[tuple[str, tuple[str, ...]]] = []
        for item in self.compressions:
            experiment = item.experiment
            latency = (f"{experiment.latency_ms:.3g} ms" if experiment.latency_ms is not None
                       else _("latency: storage only") if experiment.storage_only else "- ms")
            line = (_("#{id} {technique} ({weights} weights) measured: {metric_name} {metric}, "
                      "{size} B weight file, {latency}") if item.new else
                    _("#{id} {technique} ({weights} weights) already measured: {metric_name} "
                      "{metric}, {size} B weight file, {latency}"))
            metric_name = experiment.metric_name
            lines.append((line.format(
                id=experiment.id, technique=technique_name(experiment.technique),
                weights=weights_name(experiment.weights),
                metric_name=_("accuracy") if metric_name == "accuracy" else metric_name,
                metric=f"{experiment.metric:.4g}", size=f"{experiment.size_dense_bytes:,}",
                latency=latency), item.notes))
        return lines


__all__ = ["Compared", "Journal", "WeightSets", "Workspace", "budget_text", "load_weights",
           "report_sparsity"]
