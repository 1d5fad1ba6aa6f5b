"""Lesson 4, criteria disagree: one conv layer's filters pruned at the same share by
magnitude (l1), random and Taylor scores; which filters each removes, their overlaps, and
the accuracy after each."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from pruneviz.core.criteria import get_criterion, iter_criteria
from pruneviz.core.granularity import Granularity
from pruneviz.core.plan import LayerPlan, Plan
from pruneviz.errors import PlanError
from pruneviz.measure.metrics import evaluate
from pruneviz.workflows.lessons.copies import lesson_bench

CRITERIA = ("l1", "random", "taylor")  # magnitude, the baseline, data-driven


@dataclass(frozen=True)
class CriterionRun:
    """One criterion's choice on the layer: its score per filter, the filters it removes
    and the model's accuracy with only them removed."""

    criterion: str
    scores: tuple[float, ...]
    removed: tuple[int, ...]
    accuracy: float


@dataclass(frozen=True)
class Overlap:
    """How many removed filters two criteria share, and their Jaccard index."""

    first: str
    second: str
    shared: int
    jaccard: float


@dataclass(frozen=True)
class CriteriaResult:
    layer: str
    filters: int
    sparsity: float
    baseline: float  # accuracy with nothing pruned
    runs: tuple[CriterionRun, ...]
    overlaps: tuple[Overlap, ...]

    def run(self, criterion: str) -> CriterionRun:
        return next(r for r in self.runs if r.criterion == criterion)

    def overlap(self, first: str, second: str) -> Overlap:
        return next(o for o in self.overlaps if {o.first, o.second} == {first, second})


def conv_layers(model_ref: str) -> list[str]:
    """The conv layers whose filters every lesson criterion can score."""
    bench = lesson_bench(model_ref)
    session = bench.session
    return [layer.name for layer in session.layers if layer.type.startswith("Conv")
            and not any(session.unsupported(layer.name, Granularity.FILTER, c)
                        for c in CRITERIA)]


def filter_count(model_ref: str, layer: str) -> int:
    """How many filters `layer` has."""
    bench = lesson_bench(model_ref)
    return int(bench.session.structures(layer, Granularity.FILTER).count)


def compare_criteria(model_ref: str, layer: str, sparsity: float = 0.5) -> CriteriaResult:
    """Prune `sparsity` of `layer`'s filters by each criterion in turn (the other layers
    untouched) and measure the accuracy on the whole evaluation set."""
    offered = {spec.name for spec in iter_criteria(Granularity.FILTER)}
    missing = [c for c in CRITERIA if c not in offered]
    if missing:
        raise PlanError(f"criteria {missing} cannot score filters")
    bench = lesson_bench(model_ref)
    session = bench.session
    baseline = evaluate(session.model, bench.eval_data).metric
    runs = []
    for name in CRITERIA:
        get_criterion(name)  # a registered criterion, or a clear error
        entry = LayerPlan(Granularity.FILTER, name, sparsity=sparsity)
        keep, _, _ = session.preview(layer, entry)
        dim = session.layers[session.layer_names.index(layer)].out_dim
        kept = keep.movedim(dim, 0).reshape(keep.shape[dim], -1).any(dim=1)
        removed = tuple(int(i) for i in torch.nonzero(~kept).flatten())
        scores = session.scores(layer, Granularity.FILTER, name).scores
        session.apply(session.stamp(Plan({layer: entry})))
        accuracy = evaluate(session.model, bench.eval_data).metric
        runs.append(CriterionRun(name, tuple(float(s) for s in scores), removed, accuracy))
    session.apply(session.stamp(Plan()))
    overlaps = []
    for a, b in itertools.combinations(runs, 2):
        first, second = set(a.removed), set(b.removed)
        union = first | second
        overlaps.append(Overlap(a.criterion, b.criterion, len(first & second),
                                len(first & second) / len(union) if union else 1.0))
    return CriteriaResult(layer, len(runs[0].scores), sparsity, baseline, tuple(runs),
                          tuple(overlaps))
