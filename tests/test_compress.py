"""int8 quantization and low-rank factorization: real, measured, and combinable with pruning."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from fixtures.sessions import pruned_bench
from safetensors.torch import load as st_load
from torch import Tensor, nn

from pruneviz.core.layers import find_prunable_layers
from pruneviz.core.plan import Plan
from pruneviz.data.samples import load_sample
from pruneviz.data.tensors import TensorData, load_digits
from pruneviz.errors import ModelError, PlanError, PrunevizError
from pruneviz.measure import compression as compress
from pruneviz.measure.compression import (
    INT8,
    SVD,
    LowRankLinear,
    count_macs,
    low_rank,
    measure_model,
    quantize_dynamic_int8,
    stored_params,
    stored_sizes,
    stored_state,
    technique_name,
)
from pruneviz.measure.metrics import count_params, evaluate
from pruneviz.measure.storage import dense_bytes, file_sizes
from pruneviz.workflows.experiments import ExperimentLog
from pruneviz.workflows.techniques import (
    APPLY_TO,
    BOTH,
    CURRENT_PLAN,
    ORIGINAL_MODEL,
    record_technique,
)
from pruneviz.workflows.workbench import Workbench


@functools.cache
def _data() -> TensorData:
    return load_digits("test")


@functools.cache
def _model(name: str) -> nn.Module:
    """A sample's model, eval mode; tests copy it before changing it."""
    return load_sample(name).model.eval()


def _x(n: int = 64) -> Tensor:
    return _data().x[:n]


def _out(model: nn.Module, x: Tensor) -> Tensor:
    with torch.inference_mode():
        out: Tensor = model.eval()(x)
    return out


def _pruned(name: str, sparsity: float = 0.5) -> nn.Module:
    """A sample model with `sparsity` of every layer's weights (lowest |w|) zeroed."""
    return pruned_bench(f"sample:{name}", "unstructured", sparsity).session.model.eval()


def _quantized_modules(model: nn.Module) -> list[str]:
    return [type(m).__name__ for m in model.modules() if compress._is_quantized(m)]


# -- int8 ------------------------------------------------------------------------------------------
def test_int8_mlp_computes_what_the_float_model_computes_within_quantization_error() -> None:
    model = _model("digits_mlp")
    quantized = quantize_dynamic_int8(model)
    assert _quantized_modules(quantized) == ["Linear", "Linear", "Linear"]
    x = _x(256)
    ref, out = _out(model, x), _out(quantized, x)
    scale = ref.abs().max().item()
    assert (out - ref).abs().max().item() < 0.05 * scale
    assert (out.argmax(1) == ref.argmax(1)).float().mean().item() >= 0.97
    assert all(isinstance(m, nn.Linear) for m in model.modules() if "Linear" in type(m).__name__)


def test_int8_weight_file_is_about_four_times_smaller_on_a_linear_model() -> None:
    model = _model("digits_mlp")
    quantized = quantize_dynamic_int8(model)
    float_bytes = stored_sizes(model).dense
    int8_bytes = stored_sizes(quantized).dense
    assert float_bytes == len(dense_bytes(model.state_dict()))  # the app's own dense file
    assert 3.5 < float_bytes / int8_bytes < 4.1


def test_int8_file_holds_the_integers_scales_and_biases_that_rebuild_the_weights() -> None:
    quantized = quantize_dynamic_int8(_model("digits_lstm"))
    state = stored_state(quantized)
    loaded = st_load(dense_bytes(state))
    for module_name, module in quantized.named_modules():
        if not compress._is_quantized(module):
            continue
        weights, biases = compress._quantized_tensors(module)
        for name, weight in weights.items():
            key = f"{module_name}.{name}"
            assert loaded[key].dtype == torch.int8
            rebuilt = (loaded[key].float() - loaded[f"{key}_zero_point"].float()) * \
                loaded[f"{key}_scale"]
            assert torch.equal(rebuilt, weight.dequantize())
        for name, bias in biases.items():
            assert torch.equal(loaded[f"{module_name}.{name}"], bias)


def test_int8_of_a_pruned_model_keeps_every_zero_weight_zero() -> None:
    pruned = _pruned("digits_mlp")
    quantized = quantize_dynamic_int8(pruned)
    for name in ("fc1", "fc2", "fc3"):
        float_weight = pruned.get_submodule(name).weight.detach()
        q_weight = quantized.get_submodule(name).weight()
        zeros = float_weight == 0
        assert zeros.float().mean().item() == pytest.approx(0.5, abs=0.01)
        assert torch.all(q_weight.dequantize()[zeros] == 0), name
        assert torch.all(q_weight.int_repr()[zeros] == q_weight.q_zero_point()), name
    float_counts, int8_counts = count_params(pruned), stored_params(quantized)
    assert int8_counts.total == float_counts.total
    assert int8_counts.nonzero <= float_counts.nonzero
    # the sparse encoding of the int8 file profits from the zeros too
    sizes = stored_sizes(quantized)
    assert sizes.sparse < 0.8 * sizes.dense


def test_int8_quantizes_an_lstm_and_a_gru() -> None:
    model = _model("digits_lstm")
    quantized = quantize_dynamic_int8(model)
    assert _quantized_modules(quantized) == ["LSTM", "Linear"]
    x = _x(256)
    ref, out = _out(model, x), _out(quantized, x)
    assert (out.argmax(1) == ref.argmax(1)).float().mean().item() >= 0.97
    assert stored_params(quantized).total == count_params(model).total

    torch.manual_seed(0)
    gru = nn.Sequential(nn.GRU(8, 16, num_layers=2, batch_first=True, bidirectional=True))
    q_gru = quantize_dynamic_int8(gru)
    assert _quantized_modules(q_gru) == ["GRU"]
    seq = torch.randn(4, 5, 8)
    assert (q_gru(seq)[0] - gru(seq)[0]).abs().max().item() < 0.05
    assert stored_params(q_gru).total == count_params(gru).total


def test_int8_leaves_the_original_and_attention_out_proj_alone() -> None:
    class Attend(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x: Tensor) -> Tensor:
            out: Tensor = self.head(self.attn(x, x, x, need_weights=False)[0])
            return out

    torch.manual_seed(0)
    model = Attend().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantized = quantize_dynamic_int8(model)
    assert _quantized_modules(quantized) == ["Linear"]  # head only
    assert type(quantized.get_submodule("attn.out_proj")).__name__ == \
        "NonDynamicallyQuantizableLinear"
    x = torch.randn(2, 4, 8)
    assert (quantized(x) - model(x)).abs().max().item() < 0.05
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_int8_explains_a_model_with_nothing_to_quantize() -> None:
    with pytest.raises(ModelError, match=r"no nn\.Linear, nn\.LSTM or nn\.GRU"):
        quantize_dynamic_int8(_model("digits_autoencoder"))


def test_int8_without_a_quantized_engine_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compress, "_supported_engines", lambda: ["none"])
    with pytest.raises(PrunevizError, match="not available in this PyTorch build"):
        quantize_dynamic_int8(_model("digits_mlp"))


def test_int8_silences_only_the_quantization_deprecations() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantized = quantize_dynamic_int8(_model("digits_lstm"))
        measure_model(quantized, _data().head(64), technique=INT8, latency=False)
        warnings.warn("another warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["another warning"]


# -- low rank --------------------------------------------------------------------------------------
def test_svd_at_full_rank_reproduces_the_outputs() -> None:
    for name in ("digits_mlp", "digits_cnn", "digits_lstm"):
        model = _model(name)
        result = low_rank(model, 1.0, only_if_smaller=False)
        assert result.ranks, name
        assert all(isinstance(result.model.get_submodule(layer), LowRankLinear)
                   for layer in result.ranks)
        x = _x(256)
        assert (_out(result.model, x) - _out(model, x)).abs().max().item() < 1e-5 * max(
            1.0, _out(model, x).abs().max().item()), name


def test_svd_at_lower_rank_stores_fewer_weights_and_approximates_the_layer() -> None:
    model = _model("digits_mlp")
    result = low_rank(model, 0.5)
    assert result.ranks == {"fc1": 32, "fc2": 32, "fc3": 5}
    assert result.skipped == {}
    factored = result.model
    fc1 = factored.get_submodule("fc1")
    assert isinstance(fc1, LowRankLinear)
    assert (fc1.down.weight.shape, fc1.up.weight.shape) == ((32, 64), (128, 32))
    assert fc1.down.bias is None
    assert torch.equal(fc1.up.bias, model.get_submodule("fc1").bias)
    assert count_params(factored).total < count_params(model).total
    # the best rank-32 approximation: its error is the dropped singular values
    weight = model.get_submodule("fc1").weight.detach().double()
    approx = (fc1.up.weight @ fc1.down.weight).double()
    dropped = torch.linalg.svdvals(weight)[32:]
    assert torch.linalg.matrix_norm(weight - approx).item() == pytest.approx(
        dropped.norm().item(), rel=1e-4)
    assert not isinstance(model.get_submodule("fc1"), LowRankLinear)  # original untouched


def test_svd_skips_layers_that_would_not_get_smaller_and_says_why() -> None:
    result = low_rank(_model("digits_mlp"), 0.75)
    assert result.ranks == {"fc3": 8}  # 8 * (64 + 10) = 592 < 640
    assert set(result.skipped) == {"fc1", "fc2"}  # 48 * (64 + 128) = 9,216 > 8,192
    assert result.skipped["fc1"] == ("rank 48 factors store 9,216 weights, not fewer than "
                                     "its 128x64 = 8,192")
    assert result.notes[0] == f"fc1 left as it is: {result.skipped['fc1']}"


def test_svd_rank_options_and_their_errors() -> None:
    model = _model("digits_mlp")
    only = low_rank(model, 0.25, layers=["fc2"])
    assert only.ranks == {"fc2": 16}
    explicit = low_rank(model, {"fc1": 8, "fc3": 2})
    assert explicit.ranks == {"fc1": 8, "fc3": 2}
    assert technique_name(SVD, pruned=False, rank={"fc1": 8}) == "svd r=custom"
    with pytest.raises(PlanError, match="above 0 and at most 1"):
        low_rank(model, 1.5)
    with pytest.raises(PlanError, match="above 0 and at most 1"):
        low_rank(model, 0.0)
    with pytest.raises(PlanError, match=r"outside 1\.\.10"):
        low_rank(model, {"fc3": 11})
    with pytest.raises(ModelError, match=r"no nn\.Linear called 'conv9'.*fc1, fc2, fc3"):
        low_rank(model, {"conv9": 3})


def test_svd_never_replaces_attention_internals_or_shared_or_unused_linears() -> None:
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
            self.wide = nn.Linear(32, 32)
            self.tied = nn.Linear(32, 32)
            self.tied_twin = nn.Linear(32, 32)
            self.tied_twin.weight = self.tied.weight
            self.functional = nn.Linear(32, 32)  # only its weight is read

        def forward(self, x: Tensor) -> Tensor:
            x = self.attn(x, x, x, need_weights=False)[0]
            x = self.tied_twin(self.tied(self.wide(x)))
            out: Tensor = nn.functional.linear(x, self.functional.weight)
            return out

    torch.manual_seed(0)
    model = Mixed().eval()
    x = torch.randn(2, 3, 32)
    result = low_rank(model, 0.25, example=x)
    assert result.ranks == {"wide": 8}
    assert "not a plain nn.Linear" in result.skipped["attn.out_proj"]
    assert "shared" in result.skipped["tied"]
    assert "shared" in result.skipped["tied_twin"]
    assert "forward never runs" in result.skipped["functional"]
    result.model(x)  # still runs
    assert type(result.model.get_submodule("attn.out_proj")).__name__ == \
        "NonDynamicallyQuantizableLinear"


def test_a_factorization_that_changes_nothing_is_refused() -> None:
    result = low_rank(_model("digits_autoencoder"), 0.5)
    assert result.ranks == {}
    with pytest.raises(ModelError, match="no Linear layer was factorized"):
        result.check_changed()
    with pytest.raises(ModelError, match="fc1 left as it is"):
        low_rank(_model("digits_mlp"), 1.0).check_changed()


# -- MACs, parameters, measurement -----------------------------------------------------------------
@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn", "digits_lstm", "digits_resnet",
                                  "digits_autoencoder"])
def test_macs_counted_on_a_forward_pass_match_the_prune_page(name: str) -> None:
    model = _model(name)
    expected = sum(layer.macs for layer in find_prunable_layers(model, _x(2)))
    assert count_macs(model, _x(2)) == (expected, expected)


def test_macs_of_int8_low_rank_and_pruned_models() -> None:
    model = _model("digits_lstm")
    dense, _ = count_macs(model, _x())
    assert count_macs(quantize_dynamic_int8(model), _x())[0] == dense  # same work, in int8
    factored = low_rank(_model("digits_mlp"), 0.5).model
    assert count_macs(factored, _x()) == (64 * 32 + 32 * 128 + 128 * 32 + 32 * 64
                                          + 64 * 5 + 5 * 10,) * 2
    pruned = _pruned("digits_mlp")
    dense, effective = count_macs(pruned, _x())
    assert effective == count_params(pruned).nonzero - sum(
        int(torch.count_nonzero(pruned.get_submodule(n).bias)) for n in ("fc1", "fc2", "fc3"))
    assert effective == pytest.approx(dense / 2, rel=0.01)


def test_measurement_values_are_the_real_ones() -> None:
    data = _data()
    model = _model("digits_mlp")
    quantized = quantize_dynamic_int8(model)
    measured = measure_model(quantized, data, technique="int8", reference=model, runs=3)
    assert measured.evaluation == evaluate(quantized, data)
    assert measured.sizes == file_sizes(stored_state(quantized))
    counts = stored_params(quantized)
    assert (measured.params_total, measured.params_nonzero) == (counts.total, counts.nonzero)
    assert (measured.macs_dense, measured.macs_effective) == count_macs(
        quantized, data.x[:1])
    assert measured.latency is not None
    assert measured.latency_reference is not None
    assert (measured.latency.runs, measured.latency.batch_size) == (3, 64)
    assert measured.latency.median_ms > 0
    assert measured.to_dict()["technique"] == "int8"
    factored = low_rank(model, 0.5).model
    plain = measure_model(factored, data, technique="svd r=50%", latency=False)
    assert plain.latency is None
    assert plain.params_total == count_params(factored).total
    assert plain.sizes.dense == len(dense_bytes(factored.state_dict()))


def test_technique_names() -> None:
    assert technique_name(INT8, pruned=False) == "int8"
    assert technique_name(INT8, pruned=True) == "prune+int8"
    assert technique_name(SVD, pruned=False, rank=0.5) == "svd r=50%"
    assert technique_name(SVD, pruned=True, rank=0.125) == "prune+svd r=12.5%"
    with pytest.raises(ValueError, match="unknown technique"):
        technique_name("fp16", pruned=False)


# -- recording points for the Trade-offs chart -----------------------------------------------------
# `bench` (a fresh workbench on digits_mlp) is a fixture in conftest.py.


def _log(bench: Workbench) -> ExperimentLog:
    log = ExperimentLog(bench.eval_data.higher_is_better)
    log.record(bench.baseline, bench.session.stamp(Plan()), "baseline")
    return log


def test_record_technique_measures_alone_and_on_the_pruned_plan(bench: Workbench) -> None:
    log = _log(bench)
    plan, _ = bench.session.uniform_plan(0.5)
    bench.session.apply(plan)
    before = {k: v.clone() for k, v in bench.model.state_dict().items()}
    done = record_technique(bench, log, INT8, apply_to=BOTH, runs=2)
    assert [(r.experiment.id, r.experiment.technique, r.new) for r in done] == [
        (1, "int8", True), (2, "prune+int8", True)]
    assert log.plan(1) == bench.session.stamp(Plan())
    assert log.plan(2) == bench.session.stamp(plan)
    # the session is back on its plan, weights bit for bit
    assert bench.session.plan == plan
    for key, value in bench.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    # the int8 point is the unpruned model quantized, the combined one the pruned model
    alone = quantize_dynamic_int8(bench.pristine)
    assert log.get(1).metric == evaluate(alone, bench.eval_data).metric
    assert log.get(2).metric == evaluate(quantize_dynamic_int8(bench.model),
                                         bench.eval_data).metric
    assert log.get(2).params_nonzero < log.get(1).params_nonzero
    assert log.get(2).size_sparse_bytes < log.get(1).size_sparse_bytes
    assert log.get(1).size_dense_bytes < log.get(0).size_dense_bytes / 3.5
    # measured once: asking again finds them
    again = record_technique(bench, log, INT8, apply_to=CURRENT_PLAN, runs=2)
    assert [(r.experiment.id, r.new) for r in again] == [(2, False)]
    svd = record_technique(bench, log, SVD, apply_to=BOTH, rank=0.25, runs=2)
    assert [r.experiment.technique for r in svd] == ["svd r=25%", "prune+svd r=25%"]
    assert len(log) == 5


def test_record_technique_with_nothing_pruned_measures_the_model_once(bench: Workbench) -> None:
    log = _log(bench)
    done = record_technique(bench, log, SVD, apply_to=BOTH, rank=0.75, runs=2)
    assert [r.experiment.technique for r in done] == ["svd r=75%"]
    assert done[0].notes == ("fc1 left as it is: rank 48 factors store 9,216 weights, not "
                             "fewer than its 128x64 = 8,192",
                             "fc2 left as it is: rank 48 factors store 9,216 weights, not "
                             "fewer than its 64x128 = 8,192")
    with pytest.raises(ModelError, match="no Linear layer was factorized"):
        record_technique(bench, log, SVD, apply_to=BOTH, rank=0.9, runs=2)
    assert len(log) == 2
    assert record_technique(bench, log, INT8, apply_to=CURRENT_PLAN, runs=2)[0] \
        .experiment.technique == "int8"
    assert APPLY_TO == (ORIGINAL_MODEL, CURRENT_PLAN, BOTH)
    with pytest.raises(ValueError, match="apply_to must be one of"):
        record_technique(bench, log, INT8, apply_to="everything")
