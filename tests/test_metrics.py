"""Measurements: evaluation against a hand computation, parameter counts, latency, eval mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fixtures.models import ZOO
from torch import nn

from pruneviz import DataError, Plan, TensorData, count_params, evaluate, measure_latency
from pruneviz.core.layers import eval_mode
from pruneviz.data.tasks import Task


@pytest.mark.parametrize("batch_size", [1, 7, 48, 1000])
def test_evaluate_matches_a_manual_accuracy(batch_size: int) -> None:
    entry = ZOO["conv_bn"]
    model = entry.build()
    data = entry.data(samples=48)
    with torch.no_grad():
        logits = model(data.x)
    accuracy = float((logits.argmax(dim=1) == data.y).float().mean())
    loss = float(F.cross_entropy(logits, data.y))
    result = evaluate(model, data, batch_size=batch_size)
    assert result.metric_name == "accuracy"
    assert result.samples == 48
    assert result.metric == pytest.approx(accuracy, abs=1e-12)
    assert result.loss == pytest.approx(loss, rel=1e-5)
    assert 0 < result.metric < 1  # random labels: neither all right nor all wrong


def test_evaluate_reconstruction_is_mean_squared_error() -> None:
    entry = ZOO["decoder"]
    model = entry.build()
    data = entry.data(samples=20)
    with torch.no_grad():
        mse = float(F.mse_loss(model(data.x), data.y))
    result = evaluate(model, data, batch_size=6)
    assert result.metric_name == "mse"
    assert result.metric == pytest.approx(mse, rel=1e-5)
    assert result.loss == pytest.approx(mse, rel=1e-5)


def test_evaluate_sees_pruning() -> None:
    entry = ZOO["mlp"]
    model = entry.build()
    data = entry.data()
    with torch.no_grad():
        model.fc3.weight.zero_()
        model.fc3.bias.copy_(torch.tensor([0.0, 0.0, 5.0, 0.0]))  # always predicts class 2
    result = evaluate(model, data)
    assert result.metric == pytest.approx(float((data.y == 2).float().mean()))


def test_empty_data_is_refused() -> None:
    with pytest.raises(DataError, match="empty"):
        TensorData(torch.zeros(0, 12), torch.zeros(0, dtype=torch.long), Task.CLASSIFICATION)


def test_mismatched_and_non_finite_data_are_refused() -> None:
    with pytest.raises(DataError, match="3 inputs but 2 targets"):
        TensorData(torch.zeros(3, 12), torch.zeros(2, dtype=torch.long), Task.CLASSIFICATION)
    x = torch.zeros(3, 12)
    x[1, 4] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        TensorData(x, torch.zeros(3, dtype=torch.long), Task.CLASSIFICATION)
    data = ZOO["mlp"].data(samples=5)
    with pytest.raises(DataError, match="batch size"):
        next(data.batches(0))


def test_batches_cover_the_data_in_order() -> None:
    data = ZOO["mlp"].data(samples=10)
    batches = list(data.batches(4))
    assert [len(x) for x, _ in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([x for x, _ in batches]), data.x)
    assert torch.equal(torch.cat([y for _, y in batches]), data.y)
    assert len(data.head(3)) == 3
    assert len(data.head(100)) == 10


def test_count_params() -> None:
    model = ZOO["conv_bn"].build()
    total = sum(p.numel() for p in model.parameters())
    counts = count_params(model)
    assert counts.total == total
    assert counts.nonzero == total  # random weights
    with torch.no_grad():
        model.conv2.weight[:4] = 0.0  # 4 filters of 8*3*3
        model.fc.bias.zero_()
    counts = count_params(model)
    assert counts.total == total
    assert counts.nonzero == total - 4 * 72 - 5
    assert counts.sparsity == pytest.approx((4 * 72 + 5) / total)
    buffers = sum(b.numel() for b in model.buffers())
    assert buffers > 0  # BN statistics are buffers, not parameters, and are not counted
    assert count_params(nn.ReLU()).sparsity == 0.0


def test_measure_latency_fields() -> None:
    entry = ZOO["conv_bn"]
    model = entry.build().train()
    example = entry.example(batch=5)
    latency = measure_latency(model, example, runs=9, warmup=1)
    assert latency.batch_size == 5
    assert latency.runs == 9
    assert latency.threads == torch.get_num_threads()
    assert 0 < latency.p10_ms <= latency.median_ms <= latency.p90_ms
    assert latency.p90_ms < 10_000
    assert model.training  # restored


def test_measure_latency_refuses_zero_runs() -> None:
    entry = ZOO["mlp"]
    with pytest.raises(ValueError, match="runs"):
        measure_latency(entry.build(), entry.example(), runs=0)


@pytest.mark.parametrize("training", [True, False])
def test_eval_mode_restores_the_training_flag(training: bool) -> None:
    model = ZOO["conv_bn"].build().train(training)
    with eval_mode(model) as inside:
        assert inside is model
        assert not model.training
        assert not model.bn1.training
    assert model.training == training
    assert model.bn1.training == training
    with pytest.raises(RuntimeError, match="boom"), eval_mode(model):
        raise RuntimeError("boom")
    assert model.training == training


def test_evaluate_restores_the_training_flag_and_keeps_bn_statistics() -> None:
    entry = ZOO["conv_bn"]
    model = entry.build().train()
    running_mean = model.bn1.running_mean.clone()
    evaluate(model, entry.data())
    assert model.training
    assert torch.equal(model.bn1.running_mean, running_mean)  # ran in eval mode


def test_a_timing_against_a_reference_times_both_models_run_for_run() -> None:
    from torch import nn

    from pruneviz.measure.timing import time_against

    small = nn.Linear(8, 8).eval()
    big = nn.Sequential(*[nn.Linear(256, 256) for _ in range(8)]).eval()
    x_small = torch.randn(64, 8)
    with pytest.raises(ValueError, match="runs"):
        time_against([small], small, x_small, runs=0)
    # Same input shape for both: wrap the small model to take 256 features.
    narrow = nn.Sequential(nn.Linear(256, 8)).eval()
    x = torch.randn(64, 256)
    timing = time_against([narrow], big, x, runs=9, warmup=1)
    fast, slow = timing.candidates[0], timing.reference
    assert fast.runs == slow.runs == 9 == timing.speedups[0].pairs
    assert fast.batch_size == slow.batch_size == 64
    assert fast.p10_ms <= fast.median_ms <= fast.p90_ms
    assert slow.median_ms > fast.median_ms  # 8 big layers vs one narrow one


# -- the Meter's cache: per plan and weights ----------------------------------------------------
def test_meter_measures_new_weights_afresh_and_serves_the_same_ones_from_its_cache(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import pruneviz.measure.meter as meter_module
    from pruneviz.core.session import PruningSession
    from pruneviz.measure.meter import Meter
    from pruneviz.measure.metrics import EvalResult

    calls = []

    def counted(model: nn.Module, data: TensorData) -> EvalResult:
        calls.append(1)
        return evaluate(model, data)

    monkeypatch.setattr(meter_module, "evaluate", counted)
    entry = ZOO["mlp"]
    data = entry.data()
    session = PruningSession(entry.build(), entry.example(), name="mlp")
    meter = Meter(session, data)
    plan, _ = session.uniform_plan(0.5)
    session.apply(plan)
    first = meter.report()
    assert meter.report() == first
    assert len(calls) == 1
    original = {k: v.clone() for k, v in session.model.state_dict().items()}
    session.apply(session.stamp(Plan()))
    session.rebase({k: v * 2 for k, v in entry.build().state_dict().items()})
    session.apply(plan)
    changed = meter.report()  # the same plan on other weights: measured, with no clear()
    assert len(calls) == 2
    assert changed.evaluation == evaluate(session.model, data)
    assert changed.evaluation != first.evaluation
    session.apply(session.stamp(Plan()))
    session.rebase(entry.build().state_dict())  # the first weights again, bit for bit
    session.apply(plan)
    assert meter.report() == first
    assert len(calls) == 2
    assert all(torch.equal(v, original[k]) for k, v in session.model.state_dict().items())
