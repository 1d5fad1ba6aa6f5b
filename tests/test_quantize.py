"""Quantization that covers convolutions: static int8 (FX, calibrated) and group-wise int4
weight-only, each through a real file that reloads; recorded and drawn as techniques."""

from __future__ import annotations

import contextlib
import functools
import io
import json
from pathlib import Path

import pytest
import torch
import torch.ao.nn.quantized as nnq
from fixtures.models import ZOO
from fixtures.sessions import pruned_bench
from safetensors.torch import load as st_load
from torch import Tensor, nn

from pruneviz.cli import main
from pruneviz.core.plan import Plan
from pruneviz.data.samples import load_sample
from pruneviz.data.tensors import TensorData, load_digits
from pruneviz.errors import ModelError
from pruneviz.measure.compression import (
    INT4,
    INT8_STATIC,
    measure_model,
    quantize_int4,
    quantize_static_int8,
    stored_params,
    technique_name,
)
from pruneviz.measure.metrics import evaluate
from pruneviz.measure.quantize import (
    EAGER,
    FX,
    GROUP_SCALE,
    PACKED,
    dequantize_groups,
    group_layout,
    int4_file,
    int4_weights,
    load_int4,
    load_static_int8,
    pack_int4,
    quantize_groups,
    unpack_int4,
)
from pruneviz.measure.storage import dense_bytes
from pruneviz.output.tradeoff_figures import TECHNIQUE_STYLES, tradeoff_scatter
from pruneviz.workflows.experiments import STORAGE_ONLY, ExperimentLog, technique_family
from pruneviz.workflows.techniques import BOTH, record_technique
from pruneviz.workflows.workbench import Workbench


@functools.cache
def _data() -> TensorData:
    return load_digits("test")


def _model(name: str) -> nn.Module:
    return load_sample(name).model.eval()


def _out(model: nn.Module, x: Tensor) -> Tensor:
    with torch.inference_mode():
        out: Tensor = model.eval()(x)
    return out


def _fp32_file(model: nn.Module) -> int:
    return len(dense_bytes(model.state_dict()))


# -- static int8 -----------------------------------------------------------------------------------
def test_static_int8_quantizes_the_cnn_convolutions_and_its_file_reloads(tmp_path: Path
                                                                          ) -> None:
    model = _model("digits_cnn")
    x = _data().x
    quantized, saved = quantize_static_int8(model, x[:256], x[:64])
    assert quantized.flow == FX
    assert quantized.layers == ("conv1", "conv2", "fc")
    assert quantized.notes == ()
    modules = dict(quantized.model.named_modules())
    for name in ("conv1", "conv2"):  # int8 convolutions (fused with their ReLU)
        assert isinstance(modules[name], nnq.Conv2d), type(modules[name])
        assert modules[name].weight().dtype == torch.qint8
        assert modules[name].weight().qscheme() == torch.per_channel_affine  # as torch stores
        assert modules[name].weight().q_per_channel_scales().numel() == (32 if name ==
                                                                         "conv1" else 64)
        assert bool((modules[name].weight().q_per_channel_zero_points() == 0).all())
    assert isinstance(modules["fc"], nnq.Linear)
    assert not any(type(m) in (nn.Conv2d, nn.Linear) for m in quantized.model.modules())
    # a real file: written, read back from disk into a fresh architecture, same outputs
    path = tmp_path / "cnn.int8.safetensors"
    path.write_bytes(saved)
    reloaded = load_static_int8(path, load_sample("digits_cnn").model, x[:1])
    assert torch.equal(_out(reloaded, x[:500]), _out(quantized.model, x[:500]))
    assert st_load(saved)["conv2.weight"].dtype == torch.int8
    assert len(saved) <= 0.3 * _fp32_file(model)
    # the metric stays within a point of the float model's
    assert abs(evaluate(quantized.model, _data()).metric
               - evaluate(model, _data()).metric) <= 0.01
    assert torch.equal(model.state_dict()["conv1.weight"],
                       load_sample("digits_cnn").model.state_dict()["conv1.weight"])


def test_static_int8_keeps_pruned_weights_exactly_zero() -> None:
    bench = pruned_bench("sample:digits_cnn", "unstructured", 0.7)
    pruned = bench.session.model
    x = _data().x
    quantized, _ = quantize_static_int8(pruned, x[:128], x[:8])
    modules = dict(quantized.model.named_modules())
    for name in ("conv1", "conv2", "fc"):
        zero = pruned.get_submodule(name).weight == 0
        weight = modules[name].weight()
        assert bool(zero.any())
        assert bool((weight.q_per_channel_zero_points() == 0).all())
        assert bool((weight.int_repr()[zero] == 0).all()), name
    counts = stored_params(quantized.model)
    assert counts.total - counts.nonzero >= sum(
        int((p == 0).sum()) for n, p in pruned.named_parameters() if n.endswith("weight"))


def test_static_int8_of_an_lstm_quantizes_the_linear_and_names_the_lstm() -> None:
    model = _model("digits_lstm")
    x = _data().x
    quantized, saved = quantize_static_int8(model, x[:128], x[:16])
    assert quantized.layers == ("fc",)
    assert any(n.startswith("lstm (LSTM) left float") for n in quantized.notes), \
        quantized.notes
    assert isinstance(quantized.model.get_submodule("lstm"), nn.LSTM)
    reloaded = load_static_int8(saved, _model("digits_lstm"), x[:1])
    assert torch.equal(_out(reloaded, x[:64]), _out(quantized.model, x[:64]))


class _Untraceable(nn.Module):
    """A CNN torch.fx cannot trace: Python control flow on a tensor's value."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 64, 10)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.conv(x))
        if float(h.mean()) > 1e9:  # data-dependent: fx cannot trace this branch
            h = h * 0
        out: Tensor = self.fc(h.flatten(1))
        return out


def test_a_model_fx_cannot_trace_is_quantized_layer_by_layer_and_says_so() -> None:
    torch.manual_seed(0)
    model = _Untraceable().eval()
    x = _data().x
    quantized, saved = quantize_static_int8(model, x[:64], x[:8])
    assert quantized.flow == EAGER
    assert quantized.layers == ("conv.module", "fc.module")
    assert "torch.fx could not trace the model" in quantized.notes[0]
    torch.manual_seed(1)
    reloaded = load_static_int8(saved, _Untraceable(), x[:1])
    assert torch.equal(_out(reloaded, x[:64]), _out(quantized.model, x[:64]))
    error = (_out(quantized.model, x[:64]) - _out(model, x[:64])).abs().max()
    assert float(error) < 0.1 * float(_out(model, x[:64]).abs().max())


def test_static_int8_refuses_a_model_with_nothing_to_quantize() -> None:
    with pytest.raises(ModelError, match=r"no nn\.Conv1d/2d/3d or nn\.Linear"):
        quantize_static_int8(nn.Sequential(nn.ReLU()), _data().x[:8], _data().x[:8])


def test_a_static_int8_file_for_another_model_is_refused() -> None:
    x = _data().x
    _, saved = quantize_static_int8(_model("digits_mlp"), x[:64], x[:8])
    with pytest.raises(ModelError, match="does not fit this architecture"):
        load_static_int8(saved, _model("digits_cnn"), x[:1])
    with pytest.raises(ModelError, match=r"not a pruneviz\.int4-weight-only/1 file"):
        load_int4(saved, _model("digits_mlp"))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_fixture_architecture_quantizes_and_its_files_reload(name: str) -> None:
    entry = ZOO[name]
    model = entry.build().eval()
    x = entry.data().x
    static, saved = quantize_static_int8(model, x, x[:8])  # checks the reload itself
    assert static.layers
    assert torch.equal(_out(load_static_int8(saved, entry.build(), x[:1]), x),
                       _out(static.model, x))
    int4, saved4 = quantize_int4(model, x[:8], group_size=16)
    assert torch.equal(_out(load_int4(saved4, entry.build()), x), _out(int4.model, x))
    recurrent = [n for n, m in model.named_modules() if isinstance(m, nn.RNNBase)]
    for layer in recurrent:  # left float, and said so, by both
        assert any(n.startswith(f"{layer} (") for n in static.notes), static.notes
        assert any(n.startswith(f"{layer} (") for n in int4.notes), int4.notes


# -- int4 weight-only ------------------------------------------------------------------------------
def test_int4_pack_and_unpack_round_trip_exactly() -> None:
    q = torch.arange(-8, 8, dtype=torch.int8).repeat(5)[:77]  # every value, odd count
    packed = pack_int4(q)
    assert packed.dtype == torch.uint8
    assert packed.numel() == 39
    assert torch.equal(unpack_int4(packed, 77), q)
    assert torch.equal(pack_int4(torch.zeros(6, dtype=torch.int8)),
                       torch.zeros(3, dtype=torch.uint8))  # zeros pack to zero bytes
    assert pack_int4(torch.tensor([1, -1], dtype=torch.int8)).tolist() == [0xF1]


def test_int4_group_error_is_at_most_half_a_scale_and_zeros_stay_zero() -> None:
    torch.manual_seed(0)
    rows = torch.randn(16, 300) * torch.logspace(-3, 1, 16)[:, None]
    rows[rows.abs() < 0.3 * rows.abs().mean()] = 0.0
    rows[3] = 0.0  # an all-zero row
    group, groups = group_layout(300, 128)
    assert (group, groups) == (100, 3)
    q, scales = quantize_groups(rows, group)
    assert scales.dtype == torch.float16
    assert scales.shape == (16, 3)
    assert int(q.abs().max()) <= 7
    back = dequantize_groups(q, scales, 300)
    bound = scales.float().repeat_interleave(group, dim=1)[:, :300] / 2
    assert bool(((back - rows).abs() <= bound * (1 + 1e-6)).all())
    assert bool((back[rows == 0] == 0).all())
    assert bool((back[3] == 0).all())
    assert group_layout(288, 128) == (96, 3)
    assert group_layout(9, 128) == (9, 1)
    assert group_layout(1009, 128) == (127, 8)


def test_int4_of_the_cnn_stores_packed_weights_in_a_file_that_reloads(tmp_path: Path) -> None:
    model = _model("digits_cnn")
    x = _data().x
    quantized, saved = quantize_int4(model, x[:64])
    assert quantized.layers == ("conv1", "conv2", "fc")
    assert quantized.notes[0].startswith("storage only")
    assert "conv1 9, conv2 96" in quantized.notes[1]  # smaller groups, said
    tensors = st_load(saved)
    assert tensors[f"conv2.{PACKED}"].dtype == torch.uint8
    assert tensors[f"conv2.{PACKED}"].numel() == 64 * 288 // 2
    assert tensors[f"conv2.{GROUP_SCALE}"].shape == (64, 3)
    assert "conv2.weight" not in tensors
    assert len(saved) <= 0.17 * _fp32_file(model)
    path = tmp_path / "cnn.int4.safetensors"
    path.write_bytes(saved)
    reloaded = load_int4(path, load_sample("digits_cnn").model)
    for name, value in quantized.model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], value), name
    assert torch.equal(_out(reloaded, x[:300]), _out(quantized.model, x[:300]))
    # each dequantized weight is within half a group scale of the original
    weight = model.get_submodule("conv2").weight.detach().reshape(64, -1)
    deq = quantized.model.get_submodule("conv2").weight.reshape(64, -1)
    scale = tensors[f"conv2.{GROUP_SCALE}"].float().repeat_interleave(96, dim=1)
    assert bool(((deq - weight).abs() <= scale / 2 * (1 + 1e-6)).all())
    measured = measure_model(quantized.model, _data(), technique=technique_name(
        INT4, pruned=False), latency=False, saved=saved)
    assert measured.sizes.dense == len(saved)
    assert measured.latency is None
    assert abs(measured.evaluation.metric - evaluate(model, _data()).metric) <= 0.02


def test_int4_keeps_pruned_weights_zero_and_leaves_the_lstm_float() -> None:
    bench = pruned_bench("sample:digits_mlp", "unstructured", 0.8)
    pruned = bench.session.model
    quantized = int4_weights(pruned, group_size=32)
    for name in ("fc1", "fc2", "fc3"):
        zero = pruned.get_submodule(name).weight == 0
        assert bool((quantized.model.get_submodule(name).weight[zero] == 0).all())
    lstm = int4_weights(_model("digits_lstm"))
    assert lstm.layers == ("fc",)
    assert any(n.startswith("lstm (LSTM) left float") for n in lstm.notes), lstm.notes
    reloaded = load_int4(int4_file(lstm), _model("digits_lstm"))
    x = _data().x[:32]
    assert torch.equal(_out(reloaded, x), _out(lstm.model, x))


def test_int4_says_what_is_wrong() -> None:
    with pytest.raises(ModelError, match="group size"):
        int4_weights(_model("digits_mlp"), group_size=0)
    with pytest.raises(ModelError, match=r"no nn\.Linear or nn\.Conv"):
        int4_weights(nn.Sequential(nn.LSTM(4, 4)))


def test_a_bad_file_is_refused_with_a_message() -> None:
    with pytest.raises(ModelError, match="not a safetensors file"):
        load_int4(b"not a file at all", _model("digits_mlp"))
    quantized = int4_weights(_model("digits_mlp"))
    with pytest.raises(ModelError, match="does not fit this architecture"):
        load_int4(int4_file(quantized), _model("digits_cnn"))


# -- recorded, drawn, offered ----------------------------------------------------------------------
def test_technique_names_and_families() -> None:
    assert technique_name(INT8_STATIC, pruned=False) == "int8-static"
    assert technique_name(INT8_STATIC, pruned=True) == "prune+int8-static"
    assert technique_name(INT4, pruned=False) == "int4-w g=128"
    assert technique_name(INT4, pruned=True, group_size=64) == "prune+int4-w g=64"
    assert technique_family("prune+int4-w g=64") == "prune+int4-w"
    for family in ("int8-static", "prune+int8-static", "int4-w", "prune+int4-w"):
        assert family in TECHNIQUE_STYLES
    symbols = [style[1] for style in TECHNIQUE_STYLES.values()]
    assert len(set(symbols)) == len(symbols)  # each family its own marker


@pytest.fixture(scope="module")
def recorded() -> tuple[Workbench, ExperimentLog]:
    bench = pruned_bench("sample:digits_cnn", "unstructured", 0.5)
    log = ExperimentLog(bench.eval_data.higher_is_better)
    log.record(bench.baseline, bench.session.stamp(Plan()), "baseline")
    record_technique(bench, log, INT8_STATIC, apply_to=BOTH, runs=2)
    record_technique(bench, log, INT4, apply_to=BOTH, runs=2, group_size=64)
    return bench, log


def test_record_technique_measures_static_int8_and_int4_alone_and_pruned(
        recorded: tuple[Workbench, ExperimentLog]) -> None:
    bench, log = recorded
    rows = list(log)
    assert [e.technique for e in rows] == [
        "prune", "int8-static", "prune+int8-static", "int4-w g=64", "prune+int4-w g=64"]
    baseline = rows[0]
    for e in rows[1:3]:  # timed against the unpruned model
        assert e.latency_ms is not None
        assert e.latency_device == "cpu"
        assert e.size_dense_bytes <= 0.3 * baseline.size_dense_bytes
    for e in rows[3:]:  # storage only: said, not timed
        assert e.latency_ms is None
        assert e.latency_device == STORAGE_ONLY
        assert e.storage_only
        assert e.size_dense_bytes <= 0.2 * baseline.size_dense_bytes
    assert rows[2].params_nonzero < rows[1].params_nonzero
    assert rows[4].params_nonzero < rows[3].params_nonzero
    assert Plan.from_json(rows[2].plan_json).key() == bench.session.stamp(
        bench.session.plan).key()
    assert rows[2].to_row()["latency_device"] == "cpu"
    assert rows[4].to_row()["latency_device"] == STORAGE_ONLY
    # the session's model is untouched and still on its plan
    assert not any(isinstance(m, nnq.Conv2d) for m in bench.model.modules())


def test_static_int8_and_int4_are_drawn_with_their_own_markers(
        recorded: tuple[Workbench, ExperimentLog]) -> None:
    _, log = recorded
    rows = list(log)
    fig = tradeoff_scatter(rows, x_field="size_dense_bytes", x_title="file",
                           metric_name="accuracy", higher_is_better=True, baseline=rows[0])
    by_name = {t.name: t for t in fig.data}
    for family, ids in [("int8-static", [1]), ("prune+int8-static", [2]),
                        ("int4-w", [3]), ("prune+int4-w", [4])]:
        name, symbol, colour = TECHNIQUE_STYLES[family]
        trace = by_name[name]
        assert [row[0] for row in trace.customdata] == ids
        assert trace.marker.symbol == symbol
        assert trace.marker.color == colour
    assert "storage only" in by_name[TECHNIQUE_STYLES["int4-w"][0]].customdata[0][2]
    assert fig.layout.meta["techniques"]["3"] == "int4-w g=64"
    assert fig.layout.meta["storage_only_ids"] == [3, 4]
    latency = tradeoff_scatter(rows, x_field="latency_ms", x_title="latency",
                               metric_name="accuracy", higher_is_better=True,
                               baseline=rows[0])
    assert {"1", "2"} <= set(latency.layout.meta["techniques"])
    assert not {"3", "4"} & set(latency.layout.meta["techniques"])
    assert "2 int4 weight-only point(s) not shown: storage only" in \
        latency.layout.title.subtitle.text


# -- the command line ------------------------------------------------------------------------------
def test_cli_evaluate_measures_static_int8_and_int4_of_the_pruned_cnn(tmp_path: Path
                                                                       ) -> None:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["evaluate", "sample:digits_cnn", "--sparsity", "0.5", "--int8-static",
                     "--int4", "--int4-group", "64", "--latency", "--json",
                     "--quantized-out", str(tmp_path / "q")])
    assert code == 0
    printed = json.loads(buffer.getvalue())
    combined = printed["combined"]
    assert printed["written"] == {
        "int8-static.safetensors": str(tmp_path / "q" / "int8-static.safetensors"),
        "int4-w.safetensors": str(tmp_path / "q" / "int4-w.safetensors")}
    # the written files are the measured models: reloaded, they score what was printed
    data = _data()
    static_model = load_static_int8(tmp_path / "q" / "int8-static.safetensors",
                                    load_sample("digits_cnn").model, data.x[:1])
    int4_model = load_int4(tmp_path / "q" / "int4-w.safetensors",
                           load_sample("digits_cnn").model)
    assert evaluate(static_model, data).metric == combined[0]["metric"]
    assert evaluate(int4_model, data).metric == combined[1]["metric"]
    assert (tmp_path / "q" / "int8-static.safetensors").stat().st_size == \
        combined[0]["size_dense_bytes"]
    conv2 = int4_model.get_submodule("conv2").weight
    assert float((conv2 == 0).float().mean()) >= 0.5  # the pruned half stays zero
    assert [c["technique"] for c in combined] == ["prune+int8-static", "prune+int4-w g=64"]
    static, int4 = combined
    assert static["latency_ms"] is not None
    assert int4["latency_ms"] is None
    assert int4["notes"][0].startswith("storage only")
    assert static["size_dense_bytes"] < 0.3 * 85_984
    assert int4["size_dense_bytes"] < static["size_dense_bytes"]


@pytest.mark.parametrize(("args", "message"), [
    (["--int4", "--int4-group", "0"], "--int4-group must be a whole number of at least 1"),
    (["--quantized-out", "somewhere"], "--quantized-out writes the files of --int8-static"),
])
def test_cli_refuses_bad_quantization_options(args: list[str], message: str) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["evaluate", "sample:digits_mlp", *args])
    assert code != 0
    assert message in err.getvalue()


def test_cli_never_writes_over_a_quantized_file(tmp_path: Path) -> None:
    (tmp_path / "int4-w.safetensors").write_bytes(b"mine")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["evaluate", "sample:digits_mlp", "--int4", "--quantized-out",
                     str(tmp_path)])
    assert code != 0
    assert "already exists" in err.getvalue()
    assert (tmp_path / "int4-w.safetensors").read_bytes() == b"mine"
