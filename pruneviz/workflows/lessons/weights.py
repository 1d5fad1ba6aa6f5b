"""Lesson 1's measurements: one layer's weights, what zeroing its smallest ones costs, and
the whole model's accuracy as ever more of all its weights are zeroed (no retraining)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt

from pruneviz.core.granularity import Granularity
from pruneviz.core.plan import LayerPlan, Plan
from pruneviz.measure.metrics import evaluate
from pruneviz.workflows.lessons.copies import open_copy

CURVE_LEVELS: tuple[float, ...] = (0.0, 0.1, 0.2, 1 / 3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
LAYER_FRACTIONS: tuple[float, ...] = (0.5, 0.8, 0.95)


@dataclass(frozen=True)
class LayerWeights:
    """A prunable layer's weights: its name, shape and values (as a float array)."""

    layer: str
    shape: tuple[int, ...]
    values: npt.NDArray[np.float64]


@dataclass(frozen=True)
class LayerZeroed:
    """One layer with its smallest-|w| weights zeroed (unstructured, l1), the rest intact."""

    layer: str
    fraction: float  # asked
    baseline_accuracy: float
    accuracy: float
    samples: int
    zeroed: int  # weights of the layer set to zero
    layer_weights: int
    model_params: int  # every parameter of the model (weights, biases, norms)
    threshold: float  # |w| below it was zeroed
    values: npt.NDArray[np.float64]  # the layer's original weights
    kept: npt.NDArray[np.bool_]  # True where a weight was kept

    @property
    def share_of_model(self) -> float:
        """The zeroed weights as a fraction of all the model's parameters."""
        return self.zeroed / self.model_params


@dataclass(frozen=True)
class ModelCurve:
    """The model's accuracy with the same fraction of every layer's weights zeroed by
    magnitude (unstructured, l1), at each level, without retraining."""

    levels: tuple[float, ...]
    accuracies: tuple[float, ...]
    removed: tuple[float, ...]  # the measured fraction of all prunable weights zeroed
    samples: int
    prunable_weights: int
    model_params: int

    def accuracy_at(self, level: float) -> float:
        """The accuracy measured at `level` (one of `levels`)."""
        return self.accuracies[self.levels.index(level)]


@cache
def layer_names(ref: str) -> tuple[str, ...]:
    """The model's prunable layers, in model order."""
    return tuple(open_copy(ref).session.layer_names)


@cache
def layer_weights(ref: str, layer: str) -> LayerWeights:
    """The original weights of one prunable layer (kept per process: do not change them)."""
    session = open_copy(ref).session
    tensor = session.original(session.layer_by_name[layer].weight)
    return LayerWeights(layer, tuple(tensor.shape), tensor.double().numpy().copy())


def zero_layer(ref: str, layer: str, fraction: float) -> LayerZeroed:
    """Zero `fraction` of `layer`'s weights, the smallest |w| first (only that layer), and
    measure the model's accuracy on the evaluation set."""
    copy = open_copy(ref)
    session = copy.session
    baseline = evaluate(session.model, copy.data)
    entry = LayerPlan(Granularity.UNSTRUCTURED, "l1", sparsity=fraction)
    session.apply(session.stamp(Plan().with_layer(layer, entry)))
    after = evaluate(session.model, copy.data)
    values = session.original(session.layer_by_name[layer].weight).double().numpy().copy()
    kept = session.mask(layer).numpy().copy()
    zeroed = int((~kept).sum())
    dropped = np.abs(values[~kept])
    threshold = float(dropped.max()) if zeroed else 0.0
    return LayerZeroed(layer, fraction, baseline.metric, after.metric, after.samples, zeroed,
                       int(values.size), sum(p.numel() for p in session.model.parameters()),
                       threshold, values, kept)


def model_curve(ref: str, levels: tuple[float, ...] = CURVE_LEVELS) -> ModelCurve:
    """The accuracy with each level of every prunable layer's weights zeroed by magnitude
    (the same fraction in each layer), measured without retraining."""
    copy = open_copy(ref)
    session = copy.session
    accuracies, removed = [], []
    samples = 0
    for level in levels:
        plan, _ = session.uniform_plan(level, Granularity.UNSTRUCTURED, "l1")
        session.apply(plan)
        result = evaluate(session.model, copy.data)
        accuracies.append(result.metric)
        samples = result.samples
        counts = session.results()
        removed.append(sum(r.params - r.nonzero for r in counts)
                       / sum(r.params for r in counts))
    prunable = sum(layer.params for layer in session.layers)
    return ModelCurve(tuple(levels), tuple(accuracies), tuple(removed), samples, prunable,
                      sum(p.numel() for p in session.model.parameters()))
