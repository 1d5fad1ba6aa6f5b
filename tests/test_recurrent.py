"""Recurrent stacks (pruneviz/core/recurrent.py): multi-layer and bidirectional
LSTM/GRU/RNN hidden units, coupled across gates, directions and the next layer's inputs;
masked units compute what removing them does, and slim removes them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from fixtures import zoo
from torch import Tensor, nn

from pruneviz.core.granularity import Granularity
from pruneviz.core.plan import LayerPlan, Plan
from pruneviz.core.recurrent import GATES
from pruneviz.core.session import PruningSession
from pruneviz.core.slim import max_abs_diff, slim
from pruneviz.errors import ModelError, PlanError
from pruneviz.measure.metrics import evaluate
from pruneviz.workflows.finetune import FinetuneRecipe, finetune
from pruneviz.workflows.workbench import open_workbench

TOLERANCE = 1e-5

# name -> (builder, the recurrent module's name)
STACKS: dict[str, Callable[[], nn.Module]] = {
    "stacked_lstm": lambda: zoo.stacked_lstm(8, 16, 3, 4),  # 3 layers, batch_first
    "bilstm": zoo.bilstm,  # 2 layers, bidirectional
    "stacked_gru": zoo.stacked_gru,  # 2 layers, no biases
    "birnn_seq_first": zoo.birnn_seq_first,  # 2 layers, bidirectional tanh, batch_first=False
    "gru_state_head": zoo.gru_state_head,  # 2 layers, the head reads h_n[-1]
}


def _sequences(batch: int = 6, seed: int = 3) -> Tensor:
    return torch.randn(batch, 5, 8, generator=torch.Generator().manual_seed(seed))


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return STACKS[name]().eval()


def _rnn(model: nn.Module) -> nn.RNNBase:
    found = [m for m in model.modules() if isinstance(m, nn.RNNBase)]
    assert len(found) == 1
    return found[0]


def _rnn_name(model: nn.Module) -> str:
    return next(n for n, m in model.named_modules() if isinstance(m, nn.RNNBase))


def _suffixes(rnn: nn.RNNBase) -> tuple[str, ...]:
    return ("", "_reverse") if rnn.bidirectional else ("",)


def _relative_diff(a: nn.Module, b: nn.Module, x: Tensor) -> float:
    with torch.inference_mode():
        scale = float(a(x).abs().max())
    assert scale > 0
    return max_abs_diff(a, b, x) / scale


@pytest.mark.parametrize("name", STACKS)
def test_one_group_of_hidden_units_per_layer(name: str) -> None:
    model = _model(name)
    rnn, prefix = _rnn(model), _rnn_name(model)
    session = PruningSession(model, _sequences(2))
    groups = sorted((g.root, g.size, g.unit, g.unsupported) for g in session.groups)
    assert groups == [(f"{prefix}.weight_ih_l{layer}", rnn.hidden_size, "hidden unit", None)
                      for layer in range(rnn.num_layers)]
    for layer in range(rnn.num_layers):
        expected = {f"{prefix}.weight_{k}_l{layer}{sfx}" for k in ("ih", "hh")
                    for sfx in _suffixes(rnn)}
        if layer + 1 < rnn.num_layers:
            expected |= {f"{prefix}.weight_ih_l{layer + 1}{sfx}" for sfx in _suffixes(rnn)}
        else:
            expected.add("fc")  # the head reads the last layer's units
        assert set(session.coupled_with(f"{prefix}.weight_ih_l{layer}")) == expected
    assert not session.uncoupled_structured()


@pytest.mark.parametrize("name", STACKS)
def test_filter_plan_masks_whole_units_in_every_gate_and_direction(name: str) -> None:
    model = _model(name)
    rnn, prefix = _rnn(model), _rnn_name(model)
    session = PruningSession(model, _sequences(2))
    plan, skipped = session.uniform_plan(0.25, "filter", "l1")
    assert set(skipped) == {"fc"}  # the classes
    session.apply(plan)
    units = session.pruned_units()
    size, gates, directions = rnn.hidden_size, GATES[type(rnn)], len(_suffixes(rnn))
    params = dict(session.model.named_parameters())
    for layer in range(rnn.num_layers):
        gid = session.group_of(f"{prefix}.weight_ih_l{layer}")
        assert gid is not None
        pruned = set(units[gid.id])
        assert len(pruned) == size // 4
        kept = [u for u in range(size) if u not in pruned]
        for sfx in _suffixes(rnn):
            for kind in ("ih", "hh"):
                w = params[f"{prefix}.weight_{kind}_l{layer}{sfx}"].view(gates, size, -1)
                assert not w[:, sorted(pruned)].any()  # every gate's row of a pruned unit
                assert w[:, kept].abs().sum(-1).gt(0).all()
                if rnn.bias:
                    b = params[f"{prefix}.bias_{kind}_l{layer}{sfx}"].view(gates, size)
                    assert not b[:, sorted(pruned)].any()
            hh = params[f"{prefix}.weight_hh_l{layer}{sfx}"]
            assert not hh[:, sorted(pruned)].any()  # the unit's recurrent column
            reader = (params[f"{prefix}.weight_ih_l{layer + 1}{sfx}"]
                      if layer + 1 < rnn.num_layers else params["fc.weight"])
            # forward unit u and backward unit u: columns u and hidden_size + u
            cols = [d * size + u for d in range(directions) for u in pruned]
            assert not reader[:, cols].any()
            assert reader[:, [d * size + u for d in range(directions) for u in kept]].any(0).all()


@pytest.mark.parametrize("name", STACKS)
def test_masked_units_slim_to_the_same_function(name: str) -> None:
    model = _model(name)
    rnn, prefix = _rnn(model), _rnn_name(model)
    session = PruningSession(model, _sequences(2))
    session.apply(session.uniform_plan(0.25, "filter", "l1")[0])
    x = _sequences(16, seed=11)
    result = slim(session)
    assert _relative_diff(session.model, result.model, x) <= TOLERANCE
    slimmed = _rnn(result.model)
    kept = rnn.hidden_size - rnn.hidden_size // 4
    assert slimmed.hidden_size == kept
    directions = len(_suffixes(rnn))
    gates = GATES[type(rnn)]
    for layer in range(rnn.num_layers):
        inputs = rnn.input_size if layer == 0 else directions * kept
        for sfx in _suffixes(rnn):
            w = dict(slimmed.named_parameters())
            assert tuple(w[f"weight_ih_l{layer}{sfx}"].shape) == (gates * kept, inputs)
            assert tuple(w[f"weight_hh_l{layer}{sfx}"].shape) == (gates * kept, kept)
    # The kernels' flat weight list is the module's own parameters again.
    assert all(a is getattr(slimmed, n)
               for a, n in zip(slimmed._flat_weights, slimmed._flat_weights_names, strict=True))
    per_layer = gates * kept * (kept + (2 if rnn.bias else 0))
    expected = directions * (gates * kept * rnn.input_size
                             + (rnn.num_layers - 1) * gates * kept * directions * kept
                             + rnn.num_layers * per_layer)
    assert sum(p.numel() for p in slimmed.parameters()) == expected
    assert result.params < sum(p.numel() for p in model.parameters())
    assert result.removed[f"{prefix}.weight_ih_l0"] == gates * (rnn.hidden_size // 4)
    # Other batch sizes, and training mode (dropout 0), run too.
    with torch.no_grad():
        assert result.model(_sequences(1)).shape == model(_sequences(1)).shape
    assert torch.equal(session.model.state_dict()[f"{prefix}.weight_ih_l0"],
                       session.model.get_parameter(f"{prefix}.weight_ih_l0"))


def test_original_stays_bit_exact_through_apply_and_slim() -> None:
    model = _model("bilstm")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    session = PruningSession(model, _sequences(2))
    session.apply(session.uniform_plan(0.5, "filter", "l1")[0])
    slim(session)
    session.reset()
    for key, value in session.model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_layers_losing_different_counts_cannot_be_slimmed() -> None:
    model = _model("stacked_gru")
    session = PruningSession(model, _sequences(2))
    session.apply(session.stamp(Plan({
        "rnn.weight_ih_l0": LayerPlan(Granularity.FILTER, "l1", sparsity=0.5),
        "rnn.weight_ih_l1": LayerPlan(Granularity.FILTER, "l1", sparsity=0.25)})))
    with pytest.raises(ModelError, match=r"keep 8, 12 hidden units.*one hidden_size"):
        slim(session)


def test_lstm_with_projections_is_refused_with_the_reason() -> None:
    session = PruningSession(zoo.projected_lstm().eval(), _sequences(2))
    assert session.groups
    assert all(g.unsupported and "proj_size=8" in g.unsupported for g in session.groups)
    plan, skipped = session.uniform_plan(0.25, "filter", "l1")
    assert "proj_size=8" in skipped["rnn.weight_ih_l1"]
    assert not plan.layers
    with pytest.raises(PlanError, match="proj_size=8"):
        session.apply(session.stamp(Plan({
            "rnn.weight_hh_l0": LayerPlan(Granularity.FILTER, "l1", sparsity=0.25)})))


def test_reading_a_lower_layers_final_state_is_refused() -> None:
    # Its readers would be coupled with the last layer's units (one traced node).
    session = PruningSession(zoo.lstm_all_states_head().eval(), _sequences(2))
    assert len(session.groups) == 2
    assert all(g.unsupported and "h_n[0]" in g.unsupported for g in session.groups)
    _, skipped = session.uniform_plan(0.25, "filter", "l1")
    assert "h_n[0]" in skipped["rnn.weight_ih_l0"]
    # Reading only the last layer's state stays coupled (see gru_state_head above).
    assert not any(g.unsupported for g in PruningSession(
        zoo.gru_state_head().eval(), _sequences(2)).groups)


def _gate_rows_pruned(model: nn.Module, share: float) -> nn.Module:
    """A copy with `share` of the rows of every recurrent weight matrix zeroed by their L1
    norm, matrix by matrix (with the rows' biases): each gate row pruned on its own, as a
    filter plan did before hidden units were coupled."""
    pruned = copy.deepcopy(model)
    params = dict(pruned.named_parameters())
    with torch.no_grad():
        for name, w in params.items():
            if ".weight_ih" in name or ".weight_hh" in name:
                rows = w.abs().sum(1).argsort()[:round(share * w.shape[0])]
                w[rows] = 0
                params[name.replace(".weight_", ".bias_")][rows] = 0
    return pruned


def test_digits_lstm_unit_plan_loses_far_less_than_pruning_gate_rows() -> None:
    bench = open_workbench("sample:digits_lstm")
    session, data = bench.session, bench.full_data
    baseline = evaluate(session.model, data).metric
    rows = evaluate(_gate_rows_pruned(session.model, 0.25), data).metric
    session.apply(session.uniform_plan(0.25, "filter", "l1")[0])
    units = evaluate(session.model, data).metric
    # Measured: 97.8% -> 76.9% (whole units) against 18.9% (gate rows on their own).
    assert baseline > 0.95
    assert units - rows > 0.4
    assert bench.train_data is not None
    finetune(session, bench.train_data, FinetuneRecipe(epochs=3, lr=1e-3))
    tuned = evaluate(session.model, data).metric
    assert tuned > units + 0.1  # measured: 94.2% after 3 epochs
    result = slim(session)
    assert _relative_diff(session.model, result.model, data.x) <= TOLERANCE
    assert result.model.lstm.hidden_size == 48
    assert evaluate(result.model, data).metric == pytest.approx(tuned, abs=1e-9)


def test_bidirectional_lstm_read_directly_by_a_gru() -> None:
    torch.manual_seed(0)
    session = PruningSession(zoo.BiLSTMIntoGRU().eval(), _sequences(2))
    # The LSTM's last layer's unit u is the GRU's input features u and 12 + u.
    assert session.coupled_with("lstm.weight_ih_l1") == [
        "lstm.weight_ih_l1", "lstm.weight_hh_l1", "lstm.weight_ih_l1_reverse",
        "lstm.weight_hh_l1_reverse", "gru.weight_ih_l0"]
    session.apply(session.uniform_plan(0.5, "filter", "l1")[0])
    result = slim(session)
    x = _sequences(16, seed=5)
    assert _relative_diff(session.model, result.model, x) <= TOLERANCE
    model = result.model
    assert (model.lstm.hidden_size, model.gru.input_size, model.gru.hidden_size) == (6, 12, 5)
