"""Model introspection: which weights are prunable, their names, shapes, MACs and BatchNorms."""

from __future__ import annotations

import math

import pytest
import torch
import torchinfo
from fixtures.models import ZOO, NoPrunable, ZooEntry
from torch import nn

from pruneviz import ModelError, PrunableLayer, find_prunable_layers, fingerprint
from pruneviz.core.criteria import structures_for
from pruneviz.core.granularity import Granularity
from pruneviz.core.layers import check_finite

# name -> (type, shape) for every prunable weight of every zoo model, in module order.
EXPECTED: dict[str, list[tuple[str, str, tuple[int, ...]]]] = {
    "mlp": [("fc1", "Linear", (16, 12)), ("fc2", "Linear", (8, 16)), ("fc3", "Linear", (4, 8))],
    "conv_bn": [("conv1", "Conv2d", (8, 3, 3, 3)), ("conv2", "Conv2d", (16, 8, 3, 3)),
                ("fc", "Linear", (5, 16))],
    "grouped": [("grouped", "Conv2d", (8, 2, 3, 3)), ("depthwise", "Conv2d", (8, 1, 3, 3)),
                ("pointwise", "Conv2d", (8, 8, 1, 1)), ("fc", "Linear", (3, 8))],
    "residual": [("stem", "Conv2d", (8, 2, 3, 3)), ("conv1", "Conv2d", (8, 8, 3, 3)),
                 ("conv2", "Conv2d", (8, 8, 3, 3)), ("fc", "Linear", (4, 8))],
    "lstm": [("lstm.weight_ih_l0", "LSTM", (32, 6)), ("lstm.weight_hh_l0", "LSTM", (32, 8)),
             ("fc", "Linear", (3, 8))],
    "gru": [("gru.weight_ih_l0", "GRU", (24, 6)), ("gru.weight_hh_l0", "GRU", (24, 8)),
            ("fc", "Linear", (3, 8))],
    "attention": [("attn", "MultiheadAttention", (24, 8)),
                  ("attn.out_proj", "NonDynamicallyQuantizableLinear", (8, 8)),
                  ("fc", "Linear", (3, 8))],
    "decoder": [("fc", "Linear", (32, 6)), ("deconv1", "ConvTranspose2d", (8, 4, 2, 2)),
                ("deconv2", "ConvTranspose2d", (4, 1, 2, 2))],
    "conv1d": [("conv1", "Conv1d", (8, 3, 3)), ("conv2", "Conv1d", (8, 8, 3)),
               ("fc", "Linear", (2, 8))],
}

# Hand-computed weight MACs per sample (weight elements x positions each is used at).
HAND_MACS: dict[str, dict[str, int]] = {
    "mlp": {"fc1": 12 * 16, "fc2": 16 * 8, "fc3": 8 * 4},
    "conv_bn": {"conv1": 8 * 3 * 9 * 64, "conv2": 16 * 8 * 9 * 64, "fc": 16 * 5},
    "grouped": {"grouped": 8 * 2 * 9 * 36, "depthwise": 8 * 1 * 9 * 36,
                "pointwise": 8 * 8 * 36, "fc": 8 * 3},
    "lstm": {"lstm.weight_ih_l0": 32 * 6 * 5, "lstm.weight_hh_l0": 32 * 8 * 5, "fc": 8 * 3},
    "gru": {"gru.weight_ih_l0": 24 * 6 * 5, "gru.weight_hh_l0": 24 * 8 * 5, "fc": 8 * 3},
    # q, k and v projections of 5 tokens each; the output projection of 5 tokens.
    "attention": {"attn": 3 * 8 * 8 * 5, "attn.out_proj": 8 * 8 * 5, "fc": 8 * 3},
    # A transposed conv uses each weight once per *input* position (2x2, then 4x4).
    "decoder": {"fc": 6 * 32, "deconv1": 8 * 4 * 4 * 4, "deconv2": 4 * 1 * 4 * 16},
    "conv1d": {"conv1": 8 * 3 * 3 * 14, "conv2": 8 * 8 * 3 * 14, "fc": 8 * 2},
}


def _layers(entry: ZooEntry) -> list[PrunableLayer]:
    return find_prunable_layers(entry.build(), entry.example())


@pytest.mark.parametrize("entry", ZOO.values(), ids=ZOO.keys())
def test_names_types_and_shapes(entry: ZooEntry) -> None:
    model = entry.build()
    layers = find_prunable_layers(model, entry.example())
    assert [(layer.name, layer.type, layer.shape) for layer in layers] == EXPECTED[entry.name]
    params = dict(model.named_parameters())
    for layer in layers:
        # The name points at a real parameter of that shape.
        assert tuple(params[layer.weight].shape) == layer.shape
        assert layer.params == math.prod(layer.shape)
        if layer.bias is not None:
            assert params[layer.bias].shape[0] == layer.out_structures
        assert layer.macs >= 0


@pytest.mark.parametrize("entry", ZOO.values(), ids=ZOO.keys())
def test_macs_share_sums_to_one(entry: ZooEntry) -> None:
    layers = _layers(entry)
    assert sum(layer.macs_share for layer in layers) == pytest.approx(1.0, abs=1e-12)
    total = sum(layer.macs for layer in layers)
    for layer in layers:
        assert layer.macs_share == pytest.approx(layer.macs / total)


@pytest.mark.parametrize("name", HAND_MACS)
def test_macs_by_hand(name: str) -> None:
    macs = {layer.name: layer.macs for layer in _layers(ZOO[name])}
    assert macs == HAND_MACS[name]


def test_macs_do_not_depend_on_the_batch_size() -> None:
    entry = ZOO["conv_bn"]
    one = find_prunable_layers(entry.build(), entry.example(batch=1))
    many = find_prunable_layers(entry.build(), entry.example(batch=7))
    assert [layer.macs for layer in one] == [layer.macs for layer in many]


@pytest.mark.parametrize("name", ["mlp", "conv_bn", "grouped", "residual", "conv1d"])
def test_macs_match_torchinfo(name: str) -> None:
    """torchinfo counts bias additions too; ours are weight MACs only."""
    entry = ZOO[name]
    model = entry.build()
    example = entry.example(batch=1)
    ours = {layer.module_name: layer for layer in find_prunable_layers(model, example)}
    modules = dict(model.named_modules())
    summary = torchinfo.summary(model, input_data=example, verbose=0)
    checked = 0
    for info in summary.summary_list:
        matches = [n for n, m in modules.items() if m is info.module and n in ours]
        if not matches:
            continue
        layer = ours[matches[0]]
        module = info.module
        out_numel = math.prod(info.output_size)
        positions = out_numel // layer.out_structures
        bias = module.bias.numel() if getattr(module, "bias", None) is not None else 0
        assert layer.macs == info.macs - bias * positions, layer.name
        checked += 1
    assert checked == len(ours)


def test_lstm_has_one_layer_per_matrix_with_its_bias() -> None:
    layers = {layer.name: layer for layer in _layers(ZOO["lstm"])}
    ih = layers["lstm.weight_ih_l0"]
    assert (ih.module_name, ih.param_name, ih.bias) == ("lstm", "weight_ih_l0", "lstm.bias_ih_l0")
    hh = layers["lstm.weight_hh_l0"]
    assert (hh.param_name, hh.bias) == ("weight_hh_l0", "lstm.bias_hh_l0")
    assert ih.bn is None
    assert hh.bn is None
    assert ih.out_structures == 32
    assert ih.in_structures == 6


def test_attention_gives_in_proj_and_out_proj() -> None:
    layers = _layers(ZOO["attention"])
    by_param = {(layer.module_name, layer.param_name): layer for layer in layers}
    in_proj = by_param[("attn", "in_proj_weight")]
    assert in_proj.weight == "attn.in_proj_weight"
    assert in_proj.bias == "attn.in_proj_bias"
    out_proj = by_param[("attn.out_proj", "weight")]
    assert out_proj.bias == "attn.out_proj.bias"


@pytest.mark.filterwarnings("ignore:LSTM with projections")
def test_multi_layer_lstm_names_every_matrix() -> None:
    torch.manual_seed(0)
    lstm = nn.LSTM(4, 6, num_layers=2, batch_first=True, proj_size=3)
    names = [layer.name for layer in find_prunable_layers(lstm, torch.randn(2, 5, 4))]
    assert names == [
        "weight_ih_l0", "weight_hh_l0", "weight_hr_l0",
        "weight_ih_l1", "weight_hh_l1", "weight_hr_l1",
    ]


EXPECTED_BN = {
    "conv_bn": {"conv1": "bn1", "conv2": "bn2"},
    "residual": {"stem": "stem_bn", "conv1": "bn1", "conv2": "bn2"},
}


@pytest.mark.parametrize("entry", ZOO.values(), ids=ZOO.keys())
def test_batchnorm_detection(entry: ZooEntry) -> None:
    found = {layer.name: layer.bn for layer in _layers(entry) if layer.bn is not None}
    assert found == EXPECTED_BN.get(entry.name, {})


def test_batchnorm_after_an_activation_is_not_linked() -> None:
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Flatten())
    layers = find_prunable_layers(model, torch.randn(1, 2, 5, 5))
    assert layers[0].bn is None


def test_batchnorm_without_affine_is_not_linked() -> None:
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4, affine=False))
    assert find_prunable_layers(model, torch.randn(1, 2, 5, 5))[0].bn is None


def test_batchnorm1d_after_linear_is_linked() -> None:
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    layers = find_prunable_layers(model, torch.randn(3, 5))
    assert [layer.bn for layer in layers] == ["1", None]


def test_no_prunable_layer_raises() -> None:
    with pytest.raises(ModelError, match="no prunable layers"):
        find_prunable_layers(NoPrunable(), torch.randn(2, 3, 4))


def test_model_failing_on_the_example_raises_a_clear_error() -> None:
    entry = ZOO["conv_bn"]
    with pytest.raises(ModelError) as info:
        find_prunable_layers(entry.build(), torch.randn(2, 5, 8, 8))  # 5 channels, not 3
    message = str(info.value)
    assert "(1, 5, 8, 8)" in message  # the shape of the sample that was run
    assert "RuntimeError" in message
    assert "input shape" in message


def test_tracing_leaves_the_model_as_it_was() -> None:
    entry = ZOO["conv_bn"]
    model = entry.build().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    find_prunable_layers(model, entry.example())
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model._forward_hooks
    assert not model.bn1._forward_pre_hooks
    assert not model.conv1._forward_hooks


def test_structures_of_grouped_conv_use_full_channel_numbers() -> None:
    layers = {layer.name: layer for layer in _layers(ZOO["grouped"])}
    grouped = layers["grouped"]  # (8, 2, 3, 3), groups=2: filters 0-3 read inputs 0-1
    channels = structures_for(grouped, Granularity.CHANNEL)
    assert channels.count == grouped.in_structures == 4
    keep = channels.expand(torch.tensor([True, False, False, False]))
    assert keep.shape == grouped.shape
    assert keep[:4, 0].all()
    assert not keep[:4, 1].any()
    assert not keep[4:].any()
    # each channel's vector holds exactly its own weights, in flat order
    weight = torch.arange(grouped.params, dtype=torch.float32).view(grouped.shape)
    rows = channels.vectors(weight)
    for channel in range(4):
        one = torch.zeros(4, dtype=torch.bool)
        one[channel] = True
        assert rows[channel].tolist() == weight[channels.expand(one)].tolist()
    depthwise = structures_for(layers["depthwise"], Granularity.CHANNEL)
    assert depthwise.count == 8
    assert depthwise.expand(torch.arange(8) == 3)[:, 0, 0, 0].tolist() == [
        i == 3 for i in range(8)]
    filters = structures_for(grouped, Granularity.FILTER)
    assert filters.count == grouped.out_structures == 8
    assert filters.expand(torch.arange(8) < 2)[:, 1, 2, 0].tolist() == [
        i < 2 for i in range(8)]


def test_fingerprint_depends_on_shapes_not_values() -> None:
    entry = ZOO["mlp"]
    assert fingerprint(entry.build(seed=0)) == fingerprint(entry.build(seed=5))
    assert fingerprint(entry.build()) != fingerprint(ZOO["conv_bn"].build())
    assert fingerprint(entry.build()) != fingerprint(entry.build().double())


def test_check_finite_names_the_tensor() -> None:
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.bias[1] = float("inf")
    with pytest.raises(ModelError, match=r"bias \(0 NaN, 1 inf\)"):
        check_finite(model)
