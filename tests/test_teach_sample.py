"""The lesson sample digits_teach: one-shot pruning costs it accuracy gradually, its first
conv and its classifier are more sensitive than its middle conv, and a short masked
fine-tune brings back much of what a 90% prune took. Measured on the shipped weights."""

from __future__ import annotations

from functools import cache

import pytest
import torch
from fixtures.sessions import bench_for

from pruneviz.data.samples import DEFAULT_SAMPLE, load_sample
from pruneviz.measure.metrics import evaluate
from pruneviz.workflows.finetune import FinetuneRecipe, finetune
from pruneviz.workflows.sensitivity import SensitivityRun
from pruneviz.workflows.workbench import Workbench

NAME = "digits_teach"
LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)


@cache
def _baseline() -> float:
    sample = load_sample(NAME)
    return evaluate(sample.model, sample.test_data()).metric


@cache
def _uniform_curve(granularity: str, criterion: str) -> tuple[float, ...]:
    """Test accuracy under a uniform one-shot plan at each of LEVELS."""
    bench = bench_for(NAME)
    session = bench.session
    accuracies = []
    for level in LEVELS:
        session.apply(session.uniform_plan(level, granularity, criterion)[0])
        accuracies.append(evaluate(session.model, bench.full_data).metric)
    return tuple(accuracies)


@cache
def _sensitivity(granularity: str) -> dict[str, dict[float, float]]:
    """Each layer (or coupled group) pruned alone: layer -> {level: test accuracy}."""
    bench = bench_for(NAME)
    run = SensitivityRun(bench.session, bench.full_data, granularity=granularity,
                         levels=(0.0, 0.5, 0.7, 0.9))
    result = run.run()
    assert result.complete
    return {item.key: {p.level: p.metric for p in result.curve(item.key)}
            for item in result.items}


def test_loads_with_high_baseline_and_is_not_the_default() -> None:
    sample = load_sample(NAME)
    assert type(sample.model).__name__ == "DigitsTeachCNN"
    assert sample.card["metrics"]["metric"] == pytest.approx(_baseline(), abs=1e-6)
    assert _baseline() >= 0.95
    assert DEFAULT_SAMPLE == "digits_cnn"


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_uniform_filter_pruning_costs_accuracy_gradually(criterion: str) -> None:
    at10, at30, at50, at70, at90 = _uniform_curve("filter", criterion)
    assert at10 >= _baseline() - 0.02  # no cliff at 10%
    assert at30 >= 0.9
    assert at30 > at50 > at70 > at90  # a decline, step by step
    assert at50 >= 0.8
    assert at70 >= 0.3  # still well above chance
    assert at90 <= 0.2  # collapsed


def test_unstructured_pruning_is_free_up_to_half_then_falls() -> None:
    at10, at30, at50, at70, at90 = _uniform_curve("unstructured", "l1")
    for accuracy in (at10, at30, at50):
        assert accuracy >= _baseline() - 0.03
    assert at50 - at70 >= 0.2
    assert at70 > at90
    assert at90 <= 0.2


def test_first_conv_and_classifier_are_more_sensitive_than_the_middle_conv() -> None:
    weights = _sensitivity("unstructured")
    assert set(weights) == {"conv1", "conv2", "fc"}
    middle = weights["conv2"]
    assert middle[0.7] >= _baseline() - 0.02
    assert weights["conv1"][0.7] <= middle[0.7] - 0.15
    assert weights["conv1"][0.9] <= middle[0.9] - 0.5
    assert weights["fc"][0.9] <= middle[0.9] - 0.2

    filters = _sensitivity("filter")  # the classifier's outputs are not prunable
    assert set(filters) == {"conv1", "conv2"}
    assert filters["conv1"][0.7] <= filters["conv2"][0.7] - 0.2


def _recovered(bench: Workbench, epochs: int) -> tuple[float, float]:
    """(accuracy after the plan applied to `bench`, after a masked fine-tune); checks
    that the pruned weights stayed zero."""
    session = bench.session
    before = evaluate(session.model, bench.full_data).metric
    masks = session.keep_masks()
    assert bench.train_data is not None
    finetune(session, bench.train_data, FinetuneRecipe(epochs=epochs, lr=1e-2,
                                                       patience=epochs))
    params = dict(session.model.named_parameters())
    for name, keep in masks.items():
        assert torch.count_nonzero(params[name][~keep]) == 0, name
    return before, evaluate(session.model, bench.full_data).metric


def test_a_short_masked_finetune_recovers_from_a_uniform_90_percent_prune() -> None:
    bench = bench_for(NAME)
    bench.session.apply(bench.session.uniform_plan(0.9, "unstructured", "l1")[0])
    before, after = _recovered(bench, epochs=5)
    assert before <= 0.2
    assert after >= 0.65
    assert after - before >= 0.6 * (_baseline() - before)  # most of the loss won back


def test_a_short_masked_finetune_recovers_a_global_95_percent_prune() -> None:
    bench = bench_for(NAME)
    bench.session.apply(bench.session.global_plan(0.95, "unstructured", "l1")[0])
    before, after = _recovered(bench, epochs=3)
    assert before <= 0.4
    assert after >= 0.9
