"""The Workspace's workflows without Streamlit, on the digits samples: each records real
measurements in the log and leaves the session's plan and weights as it found them."""

from __future__ import annotations

from functools import cache

import pytest
import torch
from torch import Tensor

from pruneviz.core.plan import Plan
from pruneviz.data.sources import Loaded, Source, load_source
from pruneviz.errors import PrunevizError
from pruneviz.measure.compression import INT8
from pruneviz.workflows.allocation import Budget, BudgetKind, Method
from pruneviz.workflows.experiments import ORIGINAL
from pruneviz.workflows.sensitivity import SensitivityRun
from pruneviz.workflows.techniques import BOTH
from pruneviz.workflows.workbench import build_workbench, open_workbench, workbench_for
from pruneviz.workflows.workspace import Workspace

TWEAKED = "tweaked"


@cache
def loaded(name: str = "digits_cnn") -> Loaded:
    """The pristine sample, loaded once (never changed: every workbench copies it)."""
    return load_source(Source(model=f"sample:{name}"))


def fresh(name: str = "digits_cnn") -> Workspace:
    return Workspace(workbench_for(loaded(name)))


def half(space: Workspace, sparsity: float = 0.5) -> Plan:
    plan, _ = space.bench.session.uniform_plan(sparsity, "unstructured", "l1")
    return plan


def tweaked(space: Workspace) -> dict[str, Tensor]:
    """Other weights for the same architecture (as fine-tuning would give)."""
    return {k: v + 0.01 if v.is_floating_point() else v.clone()
            for k, v in space.weights_state(ORIGINAL).items()}


def weights_now(space: Workspace) -> dict[str, Tensor]:
    """The session's original weights (its model with nothing pruned); the plan is kept."""
    session = space.bench.session
    plan = session.plan
    session.apply(session.stamp(Plan()))
    state = {k: v.detach().clone() for k, v in session.model.state_dict().items()}
    session.apply(plan)
    return state


def same(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_new_workspace_logs_the_baseline_on_the_original_weights() -> None:
    space = Workspace(open_workbench("sample:digits_mlp"))
    assert [e.label for e in space.log] == ["baseline (unpruned)"]
    assert space.weights == ORIGINAL
    assert space.bench.session.plan.is_empty
    assert space.best_forms == {}
    assert space.last_compression() == []


def test_the_uniform_sweep_records_one_measured_experiment_per_level() -> None:
    space = fresh()
    levels = [0.25, 0.5, 0.75]
    assert space.record_uniform_sweep(levels, "unstructured", "l1") == 3
    swept = list(space.log)[1:]
    assert [e.label for e in swept] == [f"uniform unstructured l1 {v:.0%}" for v in levels]
    baseline = space.log.get(0)
    for experiment, level in zip(swept, levels, strict=True):
        assert experiment.sparsity == pytest.approx(level, abs=0.02)
        assert experiment.params_nonzero < baseline.params_nonzero
        assert 0.0 <= experiment.metric <= 1.0
        assert experiment.latency_ms is not None
        assert experiment.weights == ORIGINAL
    assert swept[0].params_nonzero > swept[1].params_nonzero > swept[2].params_nonzero
    assert space.bench.session.plan.is_empty  # the plan applied before is applied again
    # the same plans on the same weights are the same experiments
    assert space.record_uniform_sweep(levels, "unstructured", "l1") == 3
    assert len(space.log) == 4


def test_switching_weights_and_back_is_bit_exact_and_keeps_the_plan() -> None:
    space = fresh()
    original = weights_now(space)
    other = tweaked(space)
    space.remember_weights(TWEAKED, other)
    plan = half(space)
    space.restore_plan(plan)
    before = space.measure_and_record()
    space.use_weights(TWEAKED)
    assert space.weights == TWEAKED
    assert space.bench.session.plan == plan
    assert same(weights_now(space), other)
    on_tweaked = space.measure_and_record()  # measured afresh, not the other weights' cache
    assert on_tweaked.evaluation.loss != before.evaluation.loss
    assert [e.weights for e in space.log] == [ORIGINAL, ORIGINAL, TWEAKED]
    space.use_weights(ORIGINAL, Plan())
    assert space.bench.session.plan.is_empty
    assert same(weights_now(space), original)
    assert same(original, space.bench.pristine.state_dict())
    with pytest.raises(PrunevizError, match="not kept"):
        space.use_weights("fine-tuned #9")
    assert space.weights == ORIGINAL  # nothing changed


def test_restoring_an_experiment_restores_its_plan_and_weights() -> None:
    space = fresh()
    first = half(space, 0.3)
    space.restore_plan(first)
    space.measure_and_record("first")
    space.remember_weights(TWEAKED, tweaked(space))
    space.use_weights(TWEAKED, half(space, 0.6))
    space.measure_and_record("second")
    space.restore_plan(Plan())
    space.restore_experiment(2)
    assert (space.weights, space.bench.session.plan) == (TWEAKED, space.log.plan(2))
    space.restore_experiment(1)
    assert space.weights == ORIGINAL
    assert space.bench.session.plan == first
    assert same(weights_now(space), space.bench.pristine.state_dict())


def test_the_best_forms_are_measured_on_each_experiments_own_weights() -> None:
    space = fresh()
    space.restore_plan(half(space))
    space.measure_and_record()
    space.remember_weights(TWEAKED, tweaked(space))
    space.use_weights(TWEAKED)
    space.measure_and_record()
    space.use_weights(ORIGINAL)
    space.record_compression(INT8, BOTH)  # not a pruning configuration: no forms
    space.measure_best_forms(runs=2)
    pruning = {e.id for e in space.log if e.is_pruning}
    assert set(space.best_forms) == pruning == {0, 1, 2}
    for form in space.best_forms.values():
        assert form.max_abs_diff <= 1e-4  # computes what the masked model computes
        assert form.latency_ms is not None
    # switching to the tweaked weights for #2 and back left everything as it was
    assert space.weights == ORIGINAL
    assert space.bench.session.plan == space.log.plan(1)
    assert same(weights_now(space), space.bench.pristine.state_dict())


def test_the_budget_comparison_records_every_method() -> None:
    space = fresh()
    bench = space.bench
    result = SensitivityRun(bench.session, bench.eval_data, levels=(0.5, 0.9)).run()
    current = half(space, 0.2)
    space.restore_plan(current)
    compared = space.record_budget_comparison(result, Budget(BudgetKind.SPARSITY, 0.6), 0.95)
    assert [c.outcome.method for c in compared] == list(Method)
    assert [c.experiment.id for c in compared] == [1, 2, 3, 4]
    owl = compared[3].outcome
    assert owl.outlier_ratios is not None
    assert set(owl.outlier_ratios) == set(
        bench.session.layer_names)
    for item in compared:
        assert item.outcome.met
        assert item.experiment.sparsity >= 0.6 - 1e-6
        assert item.experiment.label.startswith(f"{item.outcome.method.value} 60% sparsity")
        assert item.experiment.latency_ms is not None
        assert space.log.plan(item.experiment.id) == item.outcome.plan
    assert bench.session.plan == current


def test_techniques_are_recorded_once_per_plan_and_weights() -> None:
    space = fresh()
    space.restore_plan(half(space))
    recorded = space.record_compression(INT8, BOTH)
    assert [r.experiment.technique for r in recorded] == ["int8", "prune+int8"]
    assert all(r.new and r.experiment.latency_ms is not None for r in recorded)
    assert len(space.log) == 3
    again = space.record_compression(INT8, BOTH)
    assert [r.new for r in again] == [False, False]
    assert len(space.log) == 3
    lines = space.last_compression()
    assert [line.split(" ", 2)[:2] for line, _ in lines] == [["#1", "int8"],
                                                            ["#2", "prune+int8"]]
    assert all("already measured" in line for line, _ in lines)
    assert space.bench.session.plan == half(space)


def test_the_full_evaluation_belongs_to_the_plan_it_measured() -> None:
    source = loaded("digits_cnn")
    space = Workspace(build_workbench(source.name, source.model, source.example_input,
                                      source.eval_data, source.train_data, eval_subset=100))
    assert space.full_evaluation() is None
    result = space.evaluate_full()
    assert space.full_evaluation() == result
    assert result.samples == len(space.bench.full_data)
    space.restore_plan(half(space))
    assert space.full_evaluation() is None  # another plan: not measured yet
    space.restore_plan(Plan())
    assert space.full_evaluation() == result


def test_two_workspaces_on_the_same_model_stay_isolated() -> None:
    one, two = fresh(), fresh()
    pristine = {k: v.clone() for k, v in loaded().model.state_dict().items()}
    one.restore_plan(half(one))
    one.record_uniform_sweep([0.5, 0.8], "unstructured", "l1")
    one.remember_weights(TWEAKED, tweaked(one))
    one.use_weights(TWEAKED)
    assert len(one.log) == 3
    assert len(two.log) == 1
    assert two.bench.session.plan.is_empty
    assert two.weights == ORIGINAL
    assert same(weights_now(two), pristine)
    with pytest.raises(PrunevizError):
        two.weights_state(TWEAKED)
    assert same(loaded().model.state_dict(), pristine)  # the shared load never changes
