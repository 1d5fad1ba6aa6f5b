"""Sparse deployment: CSR layers equal their dense originals, choices follow the timings
recorded, only eligible layers are touched, and the input model is never changed."""

from __future__ import annotations

import copy

import pytest
import torch
from fixtures.models import ZOO, assert_bit_identical, snapshot
from safetensors.torch import load
from torch import Tensor, nn

from pruneviz.errors import ModelError
from pruneviz.measure.sparse import (
    CSR,
    DENSE,
    TOLERANCE,
    SparseConv1x1,
    SparseDeployment,
    SparseLinear,
    deployed_state,
    deployed_state_bytes,
    relative_difference,
    sparse_deploy,
)
from pruneviz.measure.storage import dense_bytes

HUGE_MARGIN = 1e9  # any measured layer is converted: tests the mechanism, not the timing
# (with 6 rounds or more: fewer give no interval, and then nothing is converted)


def _sparsify(module: nn.Module, sparsity: float, seed: int = 0) -> nn.Module:
    """Zero a random `sparsity` fraction of `module.weight` in place; return the module."""
    generator = torch.Generator().manual_seed(seed)
    weight = module.weight
    assert isinstance(weight, Tensor)
    with torch.no_grad():
        order = torch.randperm(weight.numel(), generator=generator)
        weight.view(-1)[order[: round(sparsity * weight.numel())]] = 0.0
    return module


def _close(output: Tensor, reference: Tensor) -> None:
    assert output.shape == reference.shape
    assert output.dtype == reference.dtype
    assert relative_difference(output, reference) <= TOLERANCE


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(24,), (5, 24), (2, 3, 24), (1, 24)])
def test_sparse_linear_equals_dense(bias: bool, dtype: torch.dtype,
                                    shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    dense = _sparsify(nn.Linear(24, 40, bias=bias, dtype=dtype), 0.8)
    sparse = SparseLinear.from_dense(dense)
    x = torch.randn(shape, dtype=dtype)
    with torch.inference_mode():
        _close(sparse(x), dense(x))
    assert sparse.nnz == int(torch.count_nonzero(dense.weight))
    back = sparse.to_dense()
    assert_bit_identical(snapshot(back), snapshot(dense))


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(3, 16, 5, 7), (1, 16, 4, 4), (16, 3, 3), (2, 16, 1, 1)])
def test_sparse_conv1x1_equals_dense(per_sample: bool, bias: bool,
                                     shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    dense = _sparsify(nn.Conv2d(16, 12, 1, bias=bias), 0.7)
    sparse = SparseConv1x1.from_dense(dense, per_sample=per_sample)
    x = torch.randn(shape)
    with torch.inference_mode():
        out = sparse(x)
        _close(out, dense(x))
    assert out.is_contiguous()
    assert sparse.nnz == int(torch.count_nonzero(dense.weight))
    assert_bit_identical(snapshot(sparse.to_dense()), snapshot(dense))


def test_sparse_linear_refuses_wrong_width() -> None:
    sparse = SparseLinear.from_dense(nn.Linear(8, 3))
    with pytest.raises(ValueError, match=r"\(\.\.\., 8\), got \(4, 6\)"):
        sparse(torch.randn(4, 6))  # 24 values: reshaping to (-1, 8) would "work"


def test_sparse_linear_output_is_contiguous_like_dense() -> None:
    dense = _sparsify(nn.Linear(8, 6), 0.5)
    out = SparseLinear.from_dense(dense)(torch.randn(4, 8))
    assert out.is_contiguous()
    out.view(2, 12)  # a dense Linear's output allows view(); so must ours


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(8, 8, 3, padding=1),
        nn.Conv2d(8, 8, 1, groups=2),
        nn.Conv2d(8, 8, 1, stride=2),
        nn.Conv2d(8, 8, 1, padding=1),
    ],
    ids=["3x3", "grouped", "strided", "padded"],
)
def test_conv1x1_refuses_convs_that_are_not_matmuls(conv: nn.Conv2d) -> None:
    with pytest.raises(ValueError, match="1x1 Conv2d"):
        SparseConv1x1.from_dense(conv)


class _Mixed(nn.Module):
    """Eligible and ineligible layers, all 95% sparse."""

    def __init__(self) -> None:
        super().__init__()
        self.conv3x3 = nn.Conv2d(8, 16, 3, padding=1)
        self.grouped = nn.Conv2d(16, 16, 1, groups=2)
        self.strided = nn.Conv2d(16, 16, 1, stride=2)
        self.padded = nn.Conv2d(16, 16, 1, padding=1)
        self.pointwise = nn.Conv2d(16, 16, 1)
        self.dense_fc = nn.Linear(16, 16)  # left at 0% sparsity
        self.fc = nn.Linear(16, 5)
        for name in ("conv3x3", "grouped", "strided", "padded", "pointwise", "fc"):
            _sparsify(getattr(self, name), 0.95 if name != "fc" else 0.6)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.conv3x3(x))
        x = self.pointwise(self.padded(self.strided(self.grouped(x))))
        return self.fc(torch.relu(self.dense_fc(x.mean(dim=(2, 3)))))


def test_only_eligible_sparse_layers_are_converted() -> None:
    torch.manual_seed(0)
    model = _Mixed().eval()
    x = torch.randn(2, 8, 6, 6)
    dep = sparse_deploy(model, x, runs=6, margin=HUGE_MARGIN)
    assert [layer.name for layer in dep.layers] == ["pointwise", "fc"]
    assert dep.converted == ["pointwise", "fc"]
    deployed = dep.model
    assert isinstance(deployed, _Mixed)
    for name in ("conv3x3", "grouped", "strided", "padded"):
        assert type(getattr(deployed, name)) is nn.Conv2d, name
    assert type(deployed.dense_fc) is nn.Linear  # 0% sparse: below the pre-filter
    assert isinstance(deployed.pointwise, SparseConv1x1)
    assert isinstance(deployed.fc, SparseLinear)
    with torch.inference_mode():
        _close(deployed(x), model(x))


def test_zero_sparsity_layer_is_never_converted_even_with_min_sparsity_zero() -> None:
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), _sparsify(nn.Linear(16, 4), 0.9))
    dep = sparse_deploy(model, torch.randn(3, 16), runs=6, margin=HUGE_MARGIN)
    assert dep.converted == ["2"]
    assert type(dep.model[0]) is nn.Linear
    # With the pre-filter off, the dense layer is measured and the margin decides.
    dep0 = sparse_deploy(model, torch.randn(3, 16), min_sparsity=0.0, runs=2, margin=1e-9)
    assert [layer.name for layer in dep0.layers] == ["0", "2"]
    assert dep0.converted == []


def test_input_model_is_unchanged_and_outputs_equal() -> None:
    entry = ZOO["mlp"]
    model = entry.build()
    for module in model.modules():
        if isinstance(module, nn.Linear):
            _sparsify(module, 0.9)
    model.train()
    before = snapshot(model)
    x = entry.example(batch=8)
    dep = sparse_deploy(model, x, runs=6, margin=HUGE_MARGIN)
    assert_bit_identical(snapshot(model), before)
    assert model.training
    assert all(type(m) is not SparseLinear for m in model.modules())
    assert len(dep.converted) == 3
    with torch.inference_mode():
        model.eval()
        _close(dep.model(x), model(x))


def test_big_sparse_layer_choice_follows_recorded_timings() -> None:
    torch.manual_seed(0)
    layer = _sparsify(nn.Linear(2048, 2048), 0.95)
    model = nn.Sequential(layer, nn.ReLU(), nn.Linear(2048, 10))
    x = torch.randn(4, 2048)
    margin = 0.9
    dep = sparse_deploy(model, x, margin=margin)
    assert len(dep.layers) == 1
    record = dep.layers[0]
    assert record.name == "0"
    assert record.type == "Linear"
    assert record.sparsity == pytest.approx(0.95, abs=1e-6)
    assert record.dense_ms > 0
    assert record.sparse_ms > 0
    # CSR only when the lower end of its speed-up's interval clears 1 / margin
    assert record.chosen == (CSR if record.speedup_low * margin > 1 else DENSE)
    assert isinstance(dep.model[0], SparseLinear) == (record.chosen == CSR)
    with torch.inference_mode():
        _close(dep.model(x), model(x))


def test_attention_out_proj_is_left_dense() -> None:
    entry = ZOO["attention"]
    model = entry.build()
    for module in model.modules():
        if isinstance(module, nn.Linear):
            _sparsify(module, 0.9)
    x = entry.example(batch=4)
    dep = sparse_deploy(model, x, runs=6, margin=HUGE_MARGIN)
    # MultiheadAttention applies out_proj's weight itself: its forward never runs.
    assert dep.converted == ["fc"]
    assert type(dep.model.attn.out_proj) is type(model.attn.out_proj)
    with torch.inference_mode():
        _close(dep.model(x), model(x))


def test_shared_and_root_layers_are_replaced_everywhere() -> None:
    shared = _sparsify(nn.Linear(8, 8), 0.9)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    x = torch.randn(2, 8)
    dep = sparse_deploy(model, x, runs=6, margin=HUGE_MARGIN)
    assert dep.model[0] is dep.model[2]
    assert isinstance(dep.model[0], SparseLinear)
    root = sparse_deploy(shared, x, runs=6, margin=HUGE_MARGIN)
    assert isinstance(root.model, SparseLinear)
    assert root.layers[0].name == "Linear"
    with torch.inference_mode():
        _close(dep.model(x), model(x))
        _close(root.model(x), shared(x))


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = _sparsify(nn.Linear(6, 4), 0.9)
        self.b = _sparsify(nn.Linear(5, 4), 0.9)

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return self.a(x), {"sum": self.a(x) + self.b(y)}


def test_tuple_example_and_structured_outputs() -> None:
    model = _TwoInputs()
    example = (torch.randn(3, 6), torch.randn(3, 5))
    dep = sparse_deploy(model, example, runs=6, margin=HUGE_MARGIN)
    assert dep.converted == ["a", "b"]
    with torch.inference_mode():
        out, ref = dep.model(*example), model(*example)
    assert relative_difference(out, ref) <= TOLERANCE
    assert relative_difference(out, (ref[0] + 1, ref[1])) > TOLERANCE


def test_progress_is_reported_per_measured_layer() -> None:
    model = nn.Sequential(_sparsify(nn.Linear(8, 8), 0.9), _sparsify(nn.Linear(8, 3), 0.9))
    calls: list[tuple[int, int]] = []
    sparse_deploy(model, torch.randn(2, 8), runs=1, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 2), (2, 2)]


class _DoubledLinear(nn.Linear):
    """A Linear subclass with its own forward: replacing it would lose the doubling."""

    def forward(self, x: Tensor) -> Tensor:
        return 2 * super().forward(x)


def test_subclasses_and_hooked_layers_are_left_alone() -> None:
    hooked = _sparsify(nn.Linear(8, 8), 0.9)
    hooked.register_forward_hook(lambda module, args, out: out + 1)
    model = nn.Sequential(_sparsify(_DoubledLinear(8, 8), 0.9), hooked,
                          _sparsify(nn.Linear(8, 2), 0.9))
    x = torch.randn(3, 8)
    dep = sparse_deploy(model, x, runs=6, margin=HUGE_MARGIN)
    assert dep.converted == ["2"]
    assert type(dep.model[0]) is _DoubledLinear
    assert type(dep.model[1]) is nn.Linear
    with torch.inference_mode():
        _close(dep.model(x), model(x))


class _Noisy(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x + torch.rand_like(x)


class _ReadsWeight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = _sparsify(nn.Linear(8, 8), 0.9)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x) + x @ self.fc.weight


@pytest.mark.parametrize("model", [nn.Sequential(_sparsify(nn.Linear(8, 8), 0.9), _Noisy()),
                                   _ReadsWeight()], ids=["noisy", "reads-weight"])
def test_deployment_that_changes_outputs_is_refused(model: nn.Module) -> None:
    with pytest.raises(ModelError, match="sparse-deployed model"):
        sparse_deploy(model, torch.randn(2, 8), runs=6, margin=HUGE_MARGIN)


@pytest.mark.parametrize(
    ("option", "value"),
    [("min_sparsity", 1.5), ("min_sparsity", -0.1), ("runs", 0), ("margin", 0.0),
     ("margin", float("nan"))],
)
def test_bad_options_are_refused(option: str, value: float) -> None:
    model = nn.Linear(4, 4)
    with pytest.raises(ValueError, match=option):
        sparse_deploy(model, torch.randn(1, 4), **{option: value})  # type: ignore[arg-type]


def test_deployed_state_is_a_loadable_csr_file() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(_sparsify(nn.Linear(300, 200), 0.9), nn.ReLU(),
                          _sparsify(nn.Linear(200, 10, bias=False), 0.9), nn.Linear(10, 3))
    x = torch.randn(5, 300)
    dep = sparse_deploy(model, x, runs=6, margin=HUGE_MARGIN)
    assert dep.converted == ["0", "2"]
    state = deployed_state(dep)
    nnz0 = int(torch.count_nonzero(model[0].weight))
    assert state["0.values"].shape == (nnz0,)
    assert state["0.crow_indices"].dtype == torch.int16  # nnz 6000
    assert state["0.col_indices"].dtype == torch.int16   # columns 0..299
    assert state["2.col_indices"].dtype == torch.uint8   # columns 0..199
    assert "2.bias" not in state
    assert "3.weight" in state
    data = dense_bytes(state)
    assert deployed_state_bytes(dep) == len(data)
    assert len(data) < len(dense_bytes(model.state_dict())) * 0.3
    # Load the file into a deployed copy whose weights were wiped: outputs come back.
    fresh: SparseDeployment = SparseDeployment(copy.deepcopy(dep.model), dep.layers)
    with torch.no_grad():
        for p in fresh.model.parameters():
            p.zero_()
    fresh.model.load_state_dict(load(data))
    assert fresh.model[0].crow_indices.dtype == torch.int32
    with torch.inference_mode():
        _close(fresh.model(x), model(x))
