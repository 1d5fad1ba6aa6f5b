"""Lesson 3's measurements: every prunable layer pruned alone at a ladder of levels (the
sensitivity engine, unstructured by magnitude), with each layer's parameter count."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from pruneviz.core.granularity import Granularity
from pruneviz.workflows.lessons.copies import open_copy
from pruneviz.workflows.sensitivity import SensitivityRun

LEVELS: tuple[float, ...] = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95)


@dataclass(frozen=True)
class LayerCurve:
    """One layer pruned alone: its weights, the accuracy at each level, the drop at the
    highest level and over the curve."""

    layer: str
    params: int  # the layer's weights
    accuracies: tuple[float, ...]  # at LayerSensitivity.levels

    def drop(self, baseline: float) -> float:
        """Accuracy lost at the highest level (points of a fraction, >= 0 is worse)."""
        return baseline - self.accuracies[-1]

    def mean_drop(self, baseline: float) -> float:
        """Accuracy lost on average over the levels."""
        return sum(baseline - a for a in self.accuracies) / len(self.accuracies)


@dataclass(frozen=True)
class LayerSensitivity:
    """Every prunable layer's curve, in model order, and the unpruned accuracy."""

    levels: tuple[float, ...]
    baseline: float
    samples: int
    curves: tuple[LayerCurve, ...]

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(c.layer for c in self.curves)

    def ranking(self) -> tuple[LayerCurve, ...]:
        """Most sensitive first: the largest mean drop over the levels (then the drop at
        the highest level)."""
        return tuple(sorted(self.curves, key=lambda c: (-c.mean_drop(self.baseline),
                                                        -c.drop(self.baseline))))

    @property
    def most_sensitive(self) -> str:
        return self.ranking()[0].layer


@cache
def layer_params(ref: str) -> tuple[tuple[str, int], ...]:
    """Each prunable layer's name and weight count, in model order."""
    return tuple((layer.name, layer.params) for layer in open_copy(ref).session.layers)


def layer_sensitivity(ref: str, levels: tuple[float, ...] = LEVELS) -> LayerSensitivity:
    """Prune each layer alone (unstructured, l1) at each level and measure the accuracy on
    the evaluation set (`sensitivity.SensitivityRun`)."""
    copy = open_copy(ref)
    session = copy.session
    result = SensitivityRun(session, copy.data, criterion="l1",
                            granularity=Granularity.UNSTRUCTURED, levels=levels).run()
    params = {layer.name: layer.params for layer in session.layers}
    curves = tuple(
        LayerCurve(item.key, params[item.key], tuple(p.metric for p in result.curve(item.key)))
        for item in result.items)
    return LayerSensitivity(result.levels, result.baseline.metric, result.samples, curves)
