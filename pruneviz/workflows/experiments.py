"""The session's record of evaluated pruning configurations, and their Pareto front.

Every plan the user measures becomes one `Experiment`: a flat, frozen row of numbers
plus the plan's JSON, so any row can be re-applied, compared or exported as CSV.
Costs (non-zero parameters, MACs, bytes, latency) are better when smaller; the task
metric is better when higher (accuracy) or lower (MSE), as the log is told.

A plan says which weights are zeroed, not what the others are: an experiment also names
its `weights` — "original" (the model as shipped), or fine-tuned weights such as
"fine-tuned #2" — and the same plan on two sets of weights is two experiments.

An experiment also names its `technique`: "prune" (the masked model itself), or another
compression measured on the model the plan made (compression.py): "int8", "prune+int8",
"int8-static", "int4-w g=128", "svd r=50%", "prune+svd r=50%". Its plan is still the
pruning plan (empty for a technique alone), and restoring it restores that plan only.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from pruneviz.core.plan import GlobalPlan, LayerPlan, Plan
from pruneviz.i18n import N_, _
from pruneviz.measure.meter import PRUNE

if TYPE_CHECKING:  # only read for its attributes
    from pruneviz.measure.meter import Report

ORIGINAL = "original"  # the weights of an experiment made on the model as shipped
# Technique families, as technique_family names them (their order is the legend's).
TECHNIQUES: tuple[str, ...] = (
    "prune", "int8", "prune+int8", "int8-static", "prune+int8-static", "int4-w", "prune+int4-w",
    "svd", "prune+svd")
# Families whose models have no kernel of their own to time (compression.STORAGE_ONLY):
# their latency is not measured, and their `latency_device` says so.
STORAGE_ONLY_FAMILIES: tuple[str, ...] = ("int4-w", "prune+int4-w")
STORAGE_ONLY = "storage only"
# what the app shows for a granularity (N:M and others show as they are)
GRANULARITY_NAMES = {"unstructured": N_("unstructured"), "filter": N_("filter"),
                     "channel": N_("channel")}


def technique_name(technique: str) -> str:
    """A technique label as the app shows it: "prune+int8" reads "pruning + int8" in the
    current language (itself in English); the compression's own name is kept."""
    if technique.startswith(PRUNE + "+"):
        return _("prune+{technique}").format(technique=technique.removeprefix(PRUNE + "+"))
    return technique


def weights_name(weights: str) -> str:
    """A set of weights as the app shows it: "original" in the current language."""
    return _("original") if weights == ORIGINAL else weights


def granularity_name(granularity: str) -> str:
    """A granularity as the app shows it, in the current language."""
    return _(GRANULARITY_NAMES[granularity]) if granularity in GRANULARITY_NAMES else granularity

# Experiment fields that are costs (smaller is better): the x axes a trade-off can use.
COST_FIELDS: tuple[str, ...] = (
    "params_nonzero",
    "macs_effective",
    "size_sparse_bytes",
    "size_gzip_bytes",
    "size_dense_bytes",
    "latency_ms",
)


@dataclass(frozen=True)
class Experiment:
    """One evaluated plan: its label, the plan itself, and every measurement of it."""

    id: int
    label: str
    plan_json: str
    plan_key: str
    metric_name: str
    metric: float
    loss: float
    params_total: int
    params_nonzero: int
    sparsity: float
    macs_dense: int
    macs_effective: int
    size_dense_bytes: int
    size_sparse_bytes: int
    size_gzip_bytes: int | None  # None: not measured yet (measured in the background)
    latency_ms: float | None
    weights: str = ORIGINAL  # which weights the plan was applied to
    technique: str = PRUNE  # what was measured: the masked model, or it made int8 or low-rank
    eval_samples: int = 0  # how many samples the metric was measured on
    final: bool = True  # the metric is the whole evaluation set's (False: a live subset's)
    # where latency_ms was timed ("cpu", "cuda:0"); STORAGE_ONLY: a form with no kernel
    latency_device: str | None = None
    # against the unpruned model timed in the same rounds: "1.73x faster (95% CI ...)" or
    # "within noise (...)" (timing.Speedup.text); None: not timed against it
    latency_vs_unpruned: str | None = None
    parent: int | None = None  # the experiment this one came from (None: the unpruned model)

    @property
    def storage_only(self) -> bool:
        """Whether this form has no kernel to time (int4 weight-only): no latency."""
        return technique_family(self.technique) in STORAGE_ONLY_FAMILIES

    @property
    def is_pruning(self) -> bool:
        """Whether this is the masked model itself (restoring it restores all of it)."""
        return self.technique == PRUNE

    def to_row(self) -> dict[str, Any]:
        """Flat dict for tables and CSV: every field but the plan JSON (the key stays)."""
        row = asdict(self)
        del row["plan_json"]
        row["plan_key"] = row.pop("plan_key")  # last: long, and least read
        return row

    def cost(self, field: str) -> float | None:
        """The value of cost field `field` (see COST_FIELDS), None if not measured."""
        check_cost_field(field)
        value = getattr(self, field)
        return None if value is None else float(value)


TradeoffPoint = Experiment  # what tradeoff_figures.tradeoff_scatter plots: any recorded experiment

ROW_FIELDS: tuple[str, ...] = (
    *(f.name for f in fields(Experiment) if f.name not in ("plan_json", "plan_key")),
    "plan_key",
)


def technique_family(technique: str) -> str:
    """The family of a technique label: "svd r=50%" -> "svd", "prune+svd r=25%" ->
    "prune+svd"; one of TECHNIQUES, or the label's first word if it is none of them."""
    return technique.split(" ", 1)[0]


def check_cost_field(field: str) -> None:
    """Refuse a field that is not one of COST_FIELDS, naming the allowed ones."""
    if field not in COST_FIELDS:
        raise ValueError(
            f"x field {field!r} is not a cost (smaller is better); allowed: "
            f"{', '.join(COST_FIELDS)}"
        )


class ExperimentLog:
    """The experiments of one session, one per distinct plan and weights, with ids 0, 1, ..."""

    def __init__(self, higher_is_better: bool) -> None:
        self.higher_is_better = higher_is_better
        self._experiments: list[Experiment] = []
        self._by_key: dict[str, int] = {}
        # told of every entry added or completed (a saved workspace writes it to disk)
        self.listener: Callable[[Experiment], None] | None = None

    def __getstate__(self) -> dict[str, Any]:
        """A copy or a pickle of the log (an export's snapshot) holds its entries only,
        not who is told of changes (a saved workspace)."""
        return {**self.__dict__, "listener": None}

    def restore(self, experiments: Sequence[Experiment]) -> None:
        """Replace the log's entries with `experiments` (a saved log, ids 0, 1, ...)."""
        for n, experiment in enumerate(experiments):
            if experiment.id != n:
                raise ValueError(f"saved experiment ids must be 0, 1, ...: #{experiment.id} "
                                 f"is at place {n}")
        self._experiments = list(experiments)
        self._by_key = {_log_key(Plan.from_json(e.plan_json), e.weights, e.technique): e.id
                        for e in self._experiments}

    def _changed(self, experiment: Experiment) -> Experiment:
        if self.listener is not None:
            self.listener(experiment)
        return experiment

    def record(self, report: Report, plan: Plan, label: str | None = None,
               weights: str = ORIGINAL, parent: int | None = None) -> Experiment:
        """Add the measurements of `plan` applied to `weights`; a plan seen before on the
        same weights returns its entry.

        Recording a known plan again fills in what it lacked: the latency, the gzip size,
        the whole evaluation set's metric in place of a live subset's. `parent` is the
        experiment a new entry came from (a known one keeps its own).
        `report` must have been measured with `plan` applied.
        """
        if report.technique != PRUNE:
            raise ValueError(f"a {report.technique} model is recorded by record_measurement, "
                             "not as the pruned model")
        key = plan.key()
        measured = Plan.from_dict(report.plan).key()
        if measured != key:
            raise ValueError(
                f"the report was measured for plan {describe_plan(Plan.from_dict(report.plan))!r}"
                f", not for {describe_plan(plan)!r}; measure the plan before recording it"
            )
        latency = report.latency.median_ms if report.latency is not None else None
        index = self._by_key.get(_log_key(plan, weights))
        if index is not None:
            existing = self._experiments[index]
            if existing.latency_ms is None and report.latency is not None:
                existing = replace(existing, latency_ms=latency,
                                   latency_device=report.latency.device,
                                   latency_vs_unpruned=_versus(report))
            if existing.size_gzip_bytes is None and report.sizes.gzip is not None:
                existing = replace(existing, size_gzip_bytes=report.sizes.gzip)
            if not existing.final and report.final:
                best = report.best_evaluation
                existing = replace(existing, metric=best.metric, loss=best.loss,
                                   eval_samples=best.samples, final=True)
            if existing != self._experiments[existing.id]:
                self._experiments[existing.id] = existing
                self._changed(existing)
            return existing
        return self._add(report, plan, label or describe_plan(plan), weights, parent)

    def record_measurement(self, measured: Report, plan: Plan, label: str | None = None,
                           weights: str = ORIGINAL, parent: int | None = None) -> Experiment:
        """Add a model measured by compression.measure_model (int8, low-rank, ...), made from
        `plan` applied to `weights` (an empty plan: the technique alone); the same
        technique, plan and weights seen before return their entry."""
        technique = measured.technique
        if technique == PRUNE:
            raise ValueError("a pruned model is recorded from its Report (record), not as a "
                             "measurement of another technique")
        log_key = _log_key(plan, weights, technique)
        index = self._by_key.get(log_key)
        if index is not None:
            return self._experiments[index]
        label = label or (_("{technique} (unpruned)").format(technique=technique)
                          if plan.is_empty
                          else f"{technique_name(technique)}: {describe_plan(plan)}")
        return self._add(measured, plan, label, weights, parent)

    def _add(self, measured: Report, plan: Plan, label: str, weights: str,
             parent: int | None) -> Experiment:
        """Append a new entry made from `measured`."""
        experiment = experiment_from(measured, len(self._experiments), label, plan, weights)
        if parent is not None:
            self.get(parent)  # refuses an unknown one
            experiment = replace(experiment, parent=parent)
        self._experiments.append(experiment)
        self._by_key[_log_key(plan, weights, experiment.technique)] = experiment.id
        return self._changed(experiment)

    def __len__(self) -> int:
        return len(self._experiments)

    def __iter__(self) -> Iterator[Experiment]:
        return iter(list(self._experiments))

    def get(self, id: int) -> Experiment:
        """The experiment with id `id`."""
        if not 0 <= id < len(self._experiments):
            raise KeyError(f"no experiment with id {id!r}; ids are 0..{len(self) - 1}")
        return self._experiments[id]

    def find(self, plan: Plan, weights: str = ORIGINAL, technique: str = PRUNE
             ) -> Experiment | None:
        """The experiment recorded for `plan` (same key) on `weights` with `technique`
        (default: the masked model itself), or None."""
        index = self._by_key.get(_log_key(plan, weights, technique))
        return None if index is None else self._experiments[index]

    def plan(self, id: int) -> Plan:
        """The plan of experiment `id`, parsed back from its JSON."""
        return Plan.from_json(self.get(id).plan_json)

    def to_csv(self) -> str:
        """CSV text: a header and one row per experiment (missing latency left empty)."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=ROW_FIELDS)
        writer.writeheader()
        for experiment in self._experiments:
            writer.writerow(experiment.to_row())
        return out.getvalue()

    def pareto_ids(self, x_field: str) -> list[int]:
        """Ids of the experiments on the Pareto front of metric vs `x_field`, by cost."""
        check_cost_field(x_field)
        measured = [e for e in self._experiments if e.cost(x_field) is not None]
        xs = [float(getattr(e, x_field)) for e in measured]
        ys = [e.metric for e in measured]
        return [measured[i].id for i in pareto_front(xs, ys, self.higher_is_better)]


def experiment_from(report: Report, id: int, label: str, plan: Plan,
                    weights: str = ORIGINAL) -> Experiment:
    """The log row of a measured configuration: `report` of `plan` applied to `weights`
    (the masked model, or another technique on it: `report.technique`)."""
    if report.form is not None:
        raise ValueError(f"a deployable form ({report.form}) is not an experiment: it is not "
                         "evaluated on the data")
    best = report.best_evaluation
    return Experiment(
        id=id,
        label=label,
        plan_json=plan.to_json(indent=None),
        plan_key=plan.key(),
        metric_name=best.metric_name,
        metric=best.metric,
        loss=best.loss,
        params_total=report.params_total,
        params_nonzero=report.params_nonzero,
        sparsity=report.sparsity,
        macs_dense=report.macs_dense,
        macs_effective=report.macs_effective,
        size_dense_bytes=report.sizes.dense,
        size_sparse_bytes=report.sizes.sparse,
        size_gzip_bytes=report.sizes.gzip,
        latency_ms=report.latency_ms,
        weights=weights,
        technique=report.technique,
        eval_samples=best.samples,
        final=report.final,
        latency_device=(report.latency.device if report.latency is not None
                        else STORAGE_ONLY if technique_family(report.technique)
                        in STORAGE_ONLY_FAMILIES else None),
        latency_vs_unpruned=_versus(report),
    )


def _versus(report: Report) -> str | None:
    """The report's speed-up over the unpruned model in the same rounds, for people."""
    return None if report.latency_speedup is None else report.latency_speedup.text()


def _log_key(plan: Plan, weights: str, technique: str = PRUNE) -> str:
    key = plan.key() if weights == ORIGINAL else f"{weights}\n{plan.key()}"
    return key if technique == PRUNE else f"{technique}\n{key}"


def pareto_front(xs: Sequence[float], ys: Sequence[float], higher_is_better: bool) -> list[int]:
    """Indices of the points no other point beats, sorted by x (smaller x is better).

    A point is dropped if another has x no larger and y no worse, one of them strictly;
    of identical points only the first is kept. Points with a NaN coordinate are dropped.
    """
    if len(xs) != len(ys):
        raise ValueError(f"xs and ys differ in length: {len(xs)} and {len(ys)}")
    sign = -1.0 if higher_is_better else 1.0  # sort key: smaller is better for both
    candidates = [
        i for i in range(len(xs)) if not (math.isnan(xs[i]) or math.isnan(ys[i]))
    ]
    candidates.sort(key=lambda i: (xs[i], sign * ys[i], i))
    front: list[int] = []
    best = math.inf
    for i in candidates:
        y = sign * ys[i]
        if y < best:
            front.append(i)
            best = y
    return front


def _amount(entry: LayerPlan | GlobalPlan) -> str:
    if entry.granularity.n_m is not None:
        return ""
    if entry.sparsity is not None:
        return f" {entry.sparsity * 100:.4g}%"
    if entry.threshold is not None:
        return f" t<{entry.threshold:.3g}"
    return ""


def _entry_text(entry: LayerPlan | GlobalPlan) -> str:
    return f"{granularity_name(entry.granularity.value)} {entry.criterion}{_amount(entry)}"


def describe_plan(plan: Plan, max_parts: int = 3) -> str:
    """A short human label: "conv1 filter l1 50%, 3 layers unstructured l1 80%", ...

    Layers with identical entries are counted together; parts beyond the first
    `max_parts` are summarised as "+N more".
    """
    if max_parts < 1:
        raise ValueError(f"max_parts must be at least 1, got {max_parts!r}")
    if plan.is_empty:
        return _("unpruned")
    groups: dict[LayerPlan, list[str]] = {}
    for name, entry in plan.layers.items():
        groups.setdefault(entry, []).append(name)
    parts = [
        (names[0] if len(names) == 1 else _("{count} layers").format(count=len(names)))
        + f" {_entry_text(entry)}"
        for entry, names in groups.items()
    ]
    if plan.global_ is not None:
        g = plan.global_
        scope = _("global") if g.layers is None else _("global over {count} layers").format(
            count=len(g.layers))
        cap = "" if g.max_layer_sparsity is None else _(" (cap {percent}%)").format(
            percent=f"{g.max_layer_sparsity * 100:.4g}")
        parts.append(f"{scope} {_entry_text(g)}{cap}")
    parts += [_("{block} removed").format(block=block) for block in plan.blocks]
    if len(parts) > max_parts:
        parts = [*parts[:max_parts], _("+{count} more").format(count=len(parts) - max_parts)]
    return ", ".join(parts)


__all__ = [
    "COST_FIELDS",
    "ORIGINAL",
    "PRUNE",
    "ROW_FIELDS",
    "STORAGE_ONLY",
    "STORAGE_ONLY_FAMILIES",
    "TECHNIQUES",
    "Experiment",
    "ExperimentLog",
    "GRANULARITY_NAMES",
    "TradeoffPoint",
    "check_cost_field",
    "describe_plan",
    "granularity_name",
    "technique_name",
    "weights_name",
    "experiment_from",
    "pareto_front",
    "technique_family",
]
