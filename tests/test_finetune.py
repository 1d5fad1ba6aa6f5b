"""Fine-tuning: pruned entries stay exactly zero, schedules only raise sparsity, the run
is deterministic, cancel keeps the best weights, regularisers push towards zero."""

from __future__ import annotations

import threading

import pytest
import torch
from fixtures.models import ZOO, assert_bit_identical, snapshot
from fixtures.sessions import bench_for, session_and_data

from pruneviz.core.granularity import Granularity
from pruneviz.core.plan import LayerPlan, Plan
from pruneviz.core.session import PruningSession
from pruneviz.data.samples import load_sample
from pruneviz.errors import PlanError
from pruneviz.measure.metrics import count_params, evaluate
from pruneviz.workflows.finetune import (
    REFERENCES,
    FinetuneRecipe,
    PruneSpec,
    Record,
    Regularizer,
    finetune,
    split_validation,
)
from pruneviz.workflows.schedules import Schedule
from pruneviz.workflows.workbench import open_workbench


def zoo_session(name: str = "conv_bn") -> tuple[PruningSession, object]:
    return session_and_data(name, samples=96, batch=4, named=False)


def test_masked_finetuning_keeps_pruned_entries_exactly_zero() -> None:
    session, data = zoo_session("conv_bn")
    plan, _ = session.uniform_plan(0.6, "filter", "l1")
    session.apply(plan)
    masks = session.keep_masks()
    assert masks
    result = finetune(session, data, FinetuneRecipe(epochs=3, lr=1e-2, batch_size=16))
    params = dict(session.model.named_parameters())
    for name, keep in masks.items():
        pruned = params[name].detach()[~keep]
        assert torch.equal(pruned, torch.zeros_like(pruned)), name  # +0.0, not -0.0
        assert not torch.signbit(pruned).any(), name
        kept = params[name].detach()[keep]
        assert not torch.equal(kept, session.original(name)[keep].mul(0)), name
    assert result.steps > 0
    assert session.plan == plan  # the plan still says what is pruned


def test_training_changes_the_kept_weights() -> None:
    session, data = zoo_session("mlp")
    plan, _ = session.uniform_plan(0.5, "unstructured", "l1")
    session.apply(plan)
    before = snapshot(session.model)
    finetune(session, data, FinetuneRecipe(epochs=2, lr=1e-2, batch_size=16))
    after = snapshot(session.model)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_the_same_seed_gives_the_same_weights() -> None:
    states = []
    for _ in range(2):
        session, data = zoo_session("mlp")
        session.apply(session.uniform_plan(0.5, "unstructured", "l1")[0])
        finetune(session, data, FinetuneRecipe(epochs=2, lr=1e-2, batch_size=16, seed=3))
        states.append(snapshot(session.model))
    assert_bit_identical(states[0], states[1])


def test_a_schedule_only_raises_sparsity_and_ends_at_its_final_value() -> None:
    session, data = zoo_session("mlp")
    schedule = Schedule("poly", final=0.8, initial=0.2, begin_step=0, end_step=20, frequency=5)
    records: list[Record] = []
    result = finetune(session, data, FinetuneRecipe(epochs=6, lr=1e-2, batch_size=16),
                      schedule=schedule, prune=PruneSpec("unstructured", "l1"),
                      progress=records.append)
    events = [r for r in records if r.event and r.event.startswith("pruned")]
    assert [r.step for r in events] == [s for s, _ in schedule.events(result.steps)]
    sparsities = [r.sparsity for r in events]
    assert sparsities == sorted(sparsities)
    weights = [layer.weight for layer in session.layers]
    params = dict(session.model.named_parameters())
    for name in weights:
        zero = float((params[name] == 0).float().mean())
        assert zero == pytest.approx(0.8, abs=0.02), name
    # earlier pruned entries stayed pruned: the final masks contain every event's
    assert result.best_step > max(s for s, _ in schedule.events(result.steps))


def test_cancel_keeps_the_best_weights_so_far() -> None:
    session, data = zoo_session("mlp")
    session.apply(session.uniform_plan(0.5, "unstructured", "l1")[0])
    cancel = threading.Event()
    seen: list[Record] = []

    def progress(record: Record) -> None:
        seen.append(record)
        if sum(r.metric is not None for r in seen) == 2:
            cancel.set()

    result = finetune(session, data, FinetuneRecipe(epochs=50, lr=1e-2, batch_size=16),
                      progress=progress, cancel=cancel)
    assert result.stopped == "cancelled"
    assert result.steps < 50 * 6
    assert result.best_metric is not None
    assert_bit_identical(result.state, snapshot(session.model))


def test_early_stopping_watches_the_validation_split() -> None:
    session, data = zoo_session("mlp")
    session.apply(session.uniform_plan(0.5, "unstructured", "l1")[0])
    result = finetune(session, data, FinetuneRecipe(epochs=200, lr=5e-2, batch_size=16,
                                                    patience=2))
    assert result.stopped == "early"
    evaluated = [r for r in result.history if r.metric is not None]
    assert len(evaluated) < 200
    best = max(r.metric for r in evaluated if r.metric is not None)
    assert result.best_metric == best


@pytest.mark.parametrize("kind", list(Regularizer))
def test_regularisers_push_their_targets_towards_zero(kind: Regularizer) -> None:
    sums = {}
    for strength in (0.0, 0.05):
        session, data = zoo_session("conv_bn")
        finetune(session, data, FinetuneRecipe(epochs=4, lr=1e-2, batch_size=16,
                                               regularizer=kind, strength=strength))
        model = session.model.requires_grad_(False)
        if kind is Regularizer.BN_L1:
            sums[strength] = sum(float(m.weight.abs().sum()) for m in model.modules()
                                 if isinstance(m, torch.nn.BatchNorm2d))
        elif kind is Regularizer.L1:
            sums[strength] = sum(float(dict(model.named_parameters())[layer.weight].abs().sum())
                                 for layer in session.layers)
        else:
            sums[strength] = sum(float(dict(model.named_parameters())[layer.weight].flatten(1)
                                       .norm(dim=1).sum()) for layer in session.layers)
    assert sums[0.05] < sums[0.0]


def test_bn_l1_without_batchnorm_is_refused() -> None:
    session, data = zoo_session("mlp")
    with pytest.raises(PlanError, match="BatchNorm"):
        finetune(session, data, FinetuneRecipe(epochs=1, regularizer="bn_l1"))


def test_distillation_needs_a_teacher_and_trains_with_one() -> None:
    session, data = zoo_session("mlp")
    teacher = ZOO["mlp"].build()
    with pytest.raises(PlanError, match="teacher"):
        finetune(session, data, FinetuneRecipe(epochs=1, distill=0.5))
    session.apply(session.uniform_plan(0.5, "unstructured", "l1")[0])
    result = finetune(session, data, FinetuneRecipe(epochs=2, distill=0.5, batch_size=16),
                      teacher=teacher)
    assert result.steps > 0
    assert all(r.loss == r.loss for r in result.history if r.step)  # finite, logged


def test_validation_split_is_seeded_and_disjoint() -> None:
    bench = open_workbench("sample:digits_mlp")
    train, val = split_validation(bench.train_data, 0.15, 0)
    again, _ = split_validation(bench.train_data, 0.15, 0)
    assert torch.equal(train.x, again.x)
    assert len(train) + len(val) == len(bench.train_data)
    assert len(val) == round(0.15 * len(bench.train_data))


def test_bad_recipes_are_refused() -> None:
    for kwargs in ({"epochs": 0}, {"lr": 0.0}, {"val_fraction": 1.0}, {"distill": 2.0},
                   {"regularizer": "l3"}):
        with pytest.raises((PlanError, ValueError)):
            FinetuneRecipe(**kwargs)  # type: ignore[arg-type]


def test_sparsity_is_measured_in_the_records() -> None:
    session, data = zoo_session("mlp")
    session.apply(session.uniform_plan(0.5, "unstructured", "l1")[0])
    result = finetune(session, data, FinetuneRecipe(epochs=1, batch_size=16))
    assert result.history[-1].sparsity == pytest.approx(count_params(session.model).sparsity)


def test_rebase_takes_new_originals_and_going_back_is_bit_exact() -> None:
    session, _ = zoo_session("conv_bn")
    pristine = snapshot(session.model)
    plan, _ = session.uniform_plan(0.5, "filter", "l1")
    session.apply(plan)
    trained = {k: v * 1.5 if v.is_floating_point() else v for k, v in pristine.items()}
    session.rebase(trained)
    assert session.plan == plan  # re-applied on the new weights
    for name, keep in session.keep_masks().items():
        assert torch.equal(dict(session.model.named_parameters())[name].detach()[~keep],
                           torch.zeros(int((~keep).sum())))
    session.rebase(pristine)
    session.apply(session.stamp(Plan()))
    assert_bit_identical(pristine, snapshot(session.model))


def test_keep_masks_cover_the_channels_a_filter_plan_feeds() -> None:
    session, _ = zoo_session("conv_bn")
    session.apply(session.stamp(Plan({"conv1": LayerPlan("filter", "l1", sparsity=0.5)})))
    masks = session.keep_masks()
    # conv1's filters, the BatchNorm entries they feed, and conv2's input channels
    assert {"conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight"} <= set(masks)
    pruned_filters = (~masks["conv1.weight"]).flatten(1).all(dim=1)
    assert int(pruned_filters.sum()) == 4
    assert torch.equal(~masks["bn1.weight"], pruned_filters)
    assert torch.equal((~masks["conv2.weight"]).transpose(0, 1).flatten(1).all(dim=1),
                       pruned_filters)


@pytest.mark.slow
@pytest.mark.parametrize("key", list(REFERENCES))
def test_reference_recipes_reach_their_sparsity_and_recover(key: str) -> None:
    # The acceptance targets themselves (within 1 / 0.5 point) are checked by
    # benchmarks/finetune.py: a training trajectory depends on the CPU's float order, so a
    # test pins what holds on any machine — the exact sparsity, and a clear recovery.
    spec = REFERENCES[key]
    bench = bench_for(spec.model)
    session = bench.session
    before = evaluate(session.model, bench.eval_data).metric
    collapsed = bench_for(spec.model).session
    collapsed.apply(spec.prune.plan(collapsed, spec.schedule.final))
    right_after = evaluate(collapsed.model, bench.eval_data).metric
    teacher = load_sample(spec.model).model if spec.distill_from_unpruned else None
    finetune(session, bench.train_data, spec.recipe, schedule=spec.schedule, prune=spec.prune,
             teacher=teacher)
    after = evaluate(session.model, bench.eval_data).metric
    assert after >= right_after + 0.3
    assert after >= before - 3 * spec.tolerance
    params = dict(session.model.named_parameters())
    if spec.prune.granularity is Granularity.UNSTRUCTURED:
        weights = [params[layer.weight] for layer in session.layers]
        zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
        assert zeros == pytest.approx(spec.schedule.final, abs=0.005)
    else:
        units = sum(g.size for g in session.groups if not g.unsupported)
        pruned = sum(len(u) for u in session.pruned_units().values())
        # one global ranking of channel units (each group keeps at least one)
        assert pruned == pytest.approx(spec.schedule.final * units, rel=0.05)


@pytest.mark.parametrize("criterion", ["l1", "taylor"])
def test_the_session_ends_holding_the_trained_weights_under_the_same_decisions(
        criterion: str) -> None:
    session, data = zoo_session("conv_bn")
    plan, _ = session.uniform_plan(0.5, "filter", criterion)
    session.apply(plan)
    masks = session.keep_masks()
    result = finetune(session, data, FinetuneRecipe(epochs=2, lr=1e-2, batch_size=16))
    assert_bit_identical(result.state, snapshot(session.model))
    after = session.keep_masks()
    assert set(after) == set(masks)
    for name, keep in masks.items():
        assert torch.equal(after[name], keep), name
    params = dict(session.model.named_parameters())
    for r in session.results():
        assert r.nonzero == int(torch.count_nonzero(params[session.layer_by_name[r.name].weight]))
    # a new plan afterwards is decided on the trained weights' own scores
    session.apply(session.uniform_plan(0.25, "unstructured", "l1")[0])
    for r in session.results():
        assert r.nonzero == int(torch.count_nonzero(params[session.layer_by_name[r.name].weight]))
