"""Sparse deployment: run mostly-zero Linear and 1x1 Conv2d layers as CSR matmuls where faster.

Zeroed weights do not make dense kernels faster. A Linear layer, or a 1x1 Conv2d with
stride 1, no padding or dilation and one group (a matmul over channels), whose weight is
mostly zero can be run as a CSR sparse x dense product instead. Whether that pays depends on
the layer's shape, its sparsity, the batch and the machine, so `sparse_deploy` decides per
layer by timing both versions on the layer's real input (the one timing routine,
`timing.interleaved_times`), and keeps the dense one unless CSR is measurably faster.

How the CSR product is formed (measured on this project's 2-core machines, torch 2.13 CPU
with MKL, 4096x4096 weight, interleaved medians):

- `W_csr @ x.T` with torch.addmm (bias as a column, fused) is the fast form: it runs
  MKL's sparse x dense kernel, which reads `x.T` (column-major) without a copy.
- `x @ W_csr.T` (dense x sparse, via torch.mm on a CSR copy of `W.T`) has no MKL path
  and was 14-55x slower than `W_csr @ x.T`; a CSC copy transposed fails in inference mode.
- Indices are stored as int32: torch's MKL is the LP64 build, so int64 indices are copied
  to int32 on every call, which made products at batch 1-8 1.6-2.3x slower.
- The result (out, batch) is transposed and made contiguous, as a dense Linear's output is;
  at batch 1 that is free, at batch 128 it cost 5-11% and it is part of what is timed.
- A 1x1 conv has two forms, and neither wins everywhere, so `sparse_deploy` times both:
  one product over all N*H*W positions (input and output copied to and from (C, N*H*W);
  at 90% sparsity 3.6x faster than dense at NCHW 256x1024x1x1, 1.1x at 8x1024x14x14), or
  one product per sample on its (C, H*W) view, no input copy (1.6x at 8x1024x14x14, 0.3x
  at 256x1024x1x1).
"""

from __future__ import annotations

import copy
import math
import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pruneviz.core.layers import eval_mode, output_tensors
from pruneviz.errors import ModelError
from pruneviz.measure.storage import dense_bytes, smallest_index_dtype
from pruneviz.measure.timing import WARMUP, interleaved_times, speedup

CSR = "csr"
DENSE = "dense"
TOLERANCE = 1e-5  # largest allowed max|deployed - dense| / max|dense| on the example
_FLOAT_TYPES = (torch.float32, torch.float64)


def _index_dtype(max_value: int) -> torch.dtype:
    """The int32 MKL wants, or int64 when a value does not fit."""
    return torch.int32 if max_value < 2**31 else torch.int64


class _CSRMatmul(nn.Module):
    """A weight matrix (out, in) held as CSR buffers, applied as `W @ X (+ bias column)`."""

    crow_indices: Tensor
    col_indices: Tensor

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        if weight.dim() != 2:
            raise ValueError(f"weight must be 2-D (out, in), got shape {tuple(weight.shape)}")
        w = weight.detach()
        nz = w != 0
        counts = nz.sum(dim=1)
        index = _index_dtype(max(int(counts.sum()), int(w.shape[1])))
        crow = torch.zeros(w.shape[0] + 1, dtype=torch.int64, device=w.device)
        crow[1:] = torch.cumsum(counts, 0)
        self.register_buffer("crow_indices", crow.to(index))
        self.register_buffer("col_indices", torch.nonzero(nz)[:, 1].to(index).contiguous())
        self.values = nn.Parameter(w[nz].clone(), requires_grad=False)
        self.bias = (
            nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None
        )
        self.shape = (int(w.shape[0]), int(w.shape[1]))
        with warnings.catch_warnings():
            # torch warns once per process that CSR is "beta"; check the parts once here.
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            torch.sparse_csr_tensor(
                self.crow_indices, self.col_indices, self.values.detach(), self.shape,
                check_invariants=True,
            )

    @property
    def nnz(self) -> int:
        """Number of stored (non-zero) weights."""
        return int(self.values.numel())

    def weight_csr(self) -> Tensor:
        """The weight as a torch CSR tensor (built from the buffers, sharing their memory)."""
        # Built per call (about 4 us) so that .to(), load_state_dict() etc. are always seen.
        return torch.sparse_csr_tensor(
            self.crow_indices, self.col_indices, self.values, self.shape,
            check_invariants=False,
        )

    def dense_weight(self) -> Tensor:
        """The weight as a dense (out, in) tensor."""
        with torch.no_grad():
            return self.weight_csr().to_dense()

    def matmul(self, columns: Tensor) -> Tensor:
        """`W @ columns + bias[:, None]` for `columns` of shape (in, m); returns (out, m)."""
        if self.bias is None:
            out: Tensor = torch.sparse.mm(self.weight_csr(), columns)
            return out
        return torch.addmm(self.bias.unsqueeze(1), self.weight_csr(), columns)


class SparseLinear(_CSRMatmul):
    """A Linear whose weight is stored as CSR and applied as a CSR x dense product (MKL)."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None) -> None:
        super().__init__(weight, bias)
        self.out_features, self.in_features = self.shape

    @classmethod
    def from_dense(cls, linear: nn.Linear) -> SparseLinear:
        """The CSR version of `linear` (its exact non-zero weights and bias)."""
        return cls(linear.weight, linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        """`x @ W.T + b` for `x` of shape (..., in_features)."""
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"expected input of shape (..., {self.in_features}), got "
                             f"{tuple(x.shape)}")
        flat = x.reshape(-1, self.in_features)
        out = self.matmul(flat.t()).t().contiguous()
        return out.reshape(*x.shape[:-1], self.out_features)

    def to_dense(self) -> nn.Linear:
        """An equivalent dense nn.Linear (for checking; a -0.0 weight comes back as 0.0)."""
        dense = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                          dtype=self.values.dtype)
        with torch.no_grad():
            dense.weight.copy_(self.dense_weight())
            if self.bias is not None and dense.bias is not None:
                dense.bias.copy_(self.bias)
        return dense

    def extra_repr(self) -> str:
        """in/out features and non-zero count, as in print(model)."""
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, nnz={self.nnz}")


class SparseConv1x1(_CSRMatmul):
    """A 1x1, stride-1, unpadded, ungrouped Conv2d stored as CSR: a matmul over channels.

    `per_sample` picks the form: one CSR product per sample on its (C, H*W) view, or
    (default) one product over the input copied to (C, N*H*W).
    """

    def __init__(self, weight: Tensor, bias: Tensor | None = None, *,
                 per_sample: bool = False) -> None:
        if weight.dim() != 4 or tuple(weight.shape[2:]) != (1, 1):
            raise ValueError(f"weight must have shape (out, in, 1, 1), got {tuple(weight.shape)}")
        super().__init__(weight.reshape(weight.shape[0], weight.shape[1]), bias)
        self.out_channels, self.in_channels = self.shape
        self.per_sample = per_sample

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, *, per_sample: bool = False) -> SparseConv1x1:
        """The CSR version of `conv`; raises ValueError if it is not a plain 1x1 conv."""
        if not _is_pointwise(conv):
            raise ValueError(
                f"only a 1x1 Conv2d with stride 1, no padding or dilation and groups=1 is a "
                f"matmul over channels; got {conv}"
            )
        return cls(conv.weight, conv.bias, per_sample=per_sample)

    def forward(self, x: Tensor) -> Tensor:
        """The convolution of `x` of shape (N, C, H, W) or (C, H, W)."""
        if x.dim() == 3:
            c, h, w = x.shape
            return self.matmul(x.reshape(c, h * w)).view(self.out_channels, h, w)
        n, c, h, w = x.shape
        if self.per_sample:
            samples = x.reshape(n, c, h * w)
            outs = [self.matmul(samples[i]) for i in range(n)]
            if not outs:
                return x.new_empty(0, self.out_channels, h, w)
            return torch.stack(outs).view(n, self.out_channels, h, w)
        columns = x.transpose(0, 1).reshape(c, n * h * w)  # a view when n == 1 or h*w == 1
        out = self.matmul(columns).view(self.out_channels, n, h, w)
        return out.transpose(0, 1).contiguous()

    def to_dense(self) -> nn.Conv2d:
        """An equivalent dense nn.Conv2d (for checking; a -0.0 weight comes back as 0.0)."""
        dense = nn.Conv2d(self.in_channels, self.out_channels, 1, bias=self.bias is not None,
                          dtype=self.values.dtype)
        with torch.no_grad():
            dense.weight.copy_(self.dense_weight().view(self.out_channels, self.in_channels, 1, 1))
            if self.bias is not None and dense.bias is not None:
                dense.bias.copy_(self.bias)
        return dense

    def extra_repr(self) -> str:
        """Channels and non-zero count, as in print(model)."""
        return (f"{self.in_channels}, {self.out_channels}, kernel_size=(1, 1), "
                f"bias={self.bias is not None}, nnz={self.nnz}, per_sample={self.per_sample}")


@dataclass(frozen=True)
class LayerDeployment:
    """One measured layer: its sparsity, dense and CSR latency on its real input, the choice."""

    name: str
    type: str
    sparsity: float
    dense_ms: float
    sparse_ms: float
    chosen: str  # "csr" or "dense"
    speedup_low: float = 0.0  # lower end of the 95% interval of dense / CSR per round

    @property
    def speedup(self) -> float:
        """dense_ms / sparse_ms: above 1 when CSR is faster."""
        return self.dense_ms / self.sparse_ms if self.sparse_ms > 0 else math.inf


@dataclass(frozen=True)
class SparseDeployment:
    """A deployed copy of a model and the measurement behind each layer's choice."""

    model: nn.Module
    layers: list[LayerDeployment]

    @property
    def converted(self) -> list[str]:
        """Names of the layers that now run as CSR."""
        return [layer.name for layer in self.layers if layer.chosen == CSR]


def _is_pointwise(module: nn.Module) -> bool:
    """True for a Conv2d that is a plain matmul over channels."""
    return (
        type(module) is nn.Conv2d
        and tuple(module.kernel_size) == (1, 1)
        and tuple(module.stride) == (1, 1)
        and module.padding in ((0, 0), "valid")
        and tuple(module.dilation) == (1, 1)
        and module.groups == 1
    )


def _eligible(module: nn.Module) -> bool:
    """Exactly nn.Linear or a pointwise nn.Conv2d, float on the CPU, with no hooks of its own.

    Subclasses are left alone (they may override forward, like MultiheadAttention's
    out_proj, which is used through its weight), and so are modules with hooks, which a
    replacement would silently drop.
    """
    if not (type(module) is nn.Linear or _is_pointwise(module)):
        return False
    weight = module.weight
    return (
        isinstance(weight, Tensor)
        and weight.dtype in _FLOAT_TYPES
        and weight.device.type == "cpu"
        and not module._forward_hooks
        and not module._forward_pre_hooks
    )


def _sparse_forms(module: nn.Module) -> list[nn.Module]:
    """The CSR replacements of an eligible module, one per way of forming the product."""
    if isinstance(module, nn.Linear):
        return [SparseLinear.from_dense(module)]
    if isinstance(module, nn.Conv2d):
        return [SparseConv1x1.from_dense(module, per_sample=p) for p in (False, True)]
    raise TypeError(f"no CSR replacement for {type(module).__name__}")


def _sparsity(weight: Tensor) -> float:
    """Fraction of exactly-zero elements."""
    numel = weight.numel()
    return 1.0 - int(torch.count_nonzero(weight)) / numel if numel else 0.0


def _validate_options(min_sparsity: float, runs: int, margin: float) -> None:
    """Raise ValueError for options outside their ranges, quoting the bad value."""
    if not 0.0 <= min_sparsity <= 1.0:
        raise ValueError(f"min_sparsity must be between 0 and 1, got {min_sparsity!r}")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be an integer of at least 1, got {runs!r}")
    if not (math.isfinite(margin) and margin > 0.0):
        raise ValueError(f"margin must be a positive finite number, got {margin!r}")


def _run(model: nn.Module, example: Tensor | tuple[Tensor, ...]) -> Any:
    """One forward pass on `example` (a tensor, or a tuple of positional tensors)."""
    return model(*example) if isinstance(example, tuple) else model(example)


def _capture_inputs(
    model: nn.Module, modules: list[nn.Module], example: Tensor | tuple[Tensor, ...]
) -> tuple[dict[int, list[Tensor]], Any]:
    """Run `example` once (eval, inference mode); each module's input tensors, and the output."""
    inputs: dict[int, list[Tensor]] = {id(m): [] for m in modules}

    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        if args and isinstance(args[0], Tensor):
            inputs[id(module)].append(args[0].detach().clone())

    handles = [m.register_forward_pre_hook(hook) for m in modules]
    try:
        with eval_mode(model), torch.inference_mode():
            output = _run(model, example)
    finally:
        for handle in handles:
            handle.remove()
    return inputs, output


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    """Put `new` at dotted module path `path` (not the root) of `model`."""
    parent_name, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)


def relative_difference(output: Any, reference: Any) -> float:
    """Largest max|output - reference| / max|reference| over the tensors of two outputs."""
    outs, refs = output_tensors(output), output_tensors(reference)
    if len(outs) != len(refs) or any(a.shape != b.shape for a, b in zip(outs, refs, strict=True)):
        return math.inf
    worst = 0.0
    for a, b in zip(outs, refs, strict=True):
        if not b.is_floating_point():
            worst = max(worst, 0.0 if torch.equal(a, b) else math.inf)
            continue
        if b.numel() == 0:
            continue
        scale = float(b.abs().max())
        diff = float((a.to(b.dtype) - b).abs().max())
        worst = max(worst, diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf))
    return worst


def sparse_deploy(
    model: nn.Module,
    example: Tensor | tuple[Tensor, ...],
    *,
    min_sparsity: float = 0.5,
    runs: int = 15,
    margin: float = 0.9,
    progress: Callable[[int, int], None] | None = None,
) -> SparseDeployment:
    """A copy of `model` with each mostly-zero layer run as CSR where measured faster.

    Every exactly-nn.Linear and pointwise nn.Conv2d (see `_eligible`) whose sparsity is at
    least `min_sparsity` (a cheap pre-filter) and which runs on `example` is timed dense and
    as CSR on its own captured input (`timing.interleaved_times`: `runs` interleaved rounds
    after warm-up; for a conv, `sparse_ms` is the faster of SparseConv1x1's two forms); CSR
    replaces it only if the lower end of the 95% interval of its per-round speed-up over
    dense (`timing.speedup`) is above 1 / `margin`: measurably faster, by the margin (below
    6 rounds there is no interval, and nothing is converted). The input model
    is never changed. `layers` lists every layer timed, kept dense or not; a layer that does
    not run on `example` (e.g. MultiheadAttention's out_proj) is not timed and stays dense.
    `progress(done, total)` is called after each timed layer. Raises ModelError if the
    deployed copy fails on `example` or its output differs from the dense model's by more
    than TOLERANCE (relative to the output's largest magnitude).
    """
    _validate_options(min_sparsity, runs, margin)
    deployed = copy.deepcopy(model)
    paths: dict[int, list[str]] = {}
    for name, module in deployed.named_modules(remove_duplicate=False):
        paths.setdefault(id(module), []).append(name)
    candidates: list[tuple[str, nn.Module, float]] = []
    for name, module in deployed.named_modules():
        if _eligible(module):
            sparsity = _sparsity(module.weight)
            if sparsity >= min_sparsity:
                candidates.append((name, module, sparsity))
    inputs, reference = _capture_inputs(deployed, [m for _, m, _ in candidates], example)
    measured = [(n, m, s) for n, m, s in candidates if inputs[id(m)]]
    layers: list[LayerDeployment] = []
    for done, (name, module, sparsity) in enumerate(measured, start=1):
        forms = _sparse_forms(module)
        times = interleaved_times([module, *forms], inputs.pop(id(module)), runs=runs,
                                  warmup=WARMUP)
        dense_ms = statistics.median(times[0])
        form_ms = [statistics.median(t) for t in times[1:]]
        sparse_ms = min(form_ms)
        best = form_ms.index(sparse_ms)
        sparse = forms[best]
        sparse.train(module.training)
        gain = speedup(times[best + 1], times[0])
        # CSR only when the interval says it is faster, by at least the margin's worth.
        chosen = CSR if gain.low * margin > 1.0 else DENSE
        layers.append(LayerDeployment(name or type(module).__name__, type(module).__name__,
                                      sparsity, dense_ms, sparse_ms, chosen, gain.low))
        if chosen == CSR:
            if not name:  # the model is itself one layer
                deployed = sparse
            for path in paths[id(module)]:
                if path:
                    _replace(deployed, path, sparse)
        if progress is not None:
            progress(done, len(measured))
    if any(layer.chosen == CSR for layer in layers):
        _check_outputs(deployed, example, reference)
    return SparseDeployment(deployed, layers)


def _check_outputs(deployed: nn.Module, example: Tensor | tuple[Tensor, ...],
                   reference: Any) -> None:
    """Raise ModelError if the deployed model fails, or its output is not the dense one."""
    try:
        with eval_mode(deployed), torch.inference_mode():
            output = _run(deployed, example)
    except Exception as exc:
        raise ModelError(
            f"the sparse-deployed model failed on the example ({type(exc).__name__}: {exc}); "
            f"the model may use a layer's weight outside that layer's forward. Deploy it dense"
        ) from exc
    diff = relative_difference(output, reference)
    if diff > TOLERANCE:
        raise ModelError(
            f"the sparse-deployed model's output differs from the dense model's by {diff:.3g} "
            f"(relative; allowed {TOLERANCE:g}); the model may use a layer's weight outside its "
            f"forward, or not be deterministic. Deploy it dense"
        )


def csr_candidate(module: nn.Module) -> bool:
    """True for a layer that can run as CSR (see `_eligible`): a plain nn.Linear or
    pointwise nn.Conv2d, float on the CPU, with no hooks of its own."""
    return _eligible(module)


def weight_sparsity(weight: Tensor) -> float:
    """Fraction of exactly-zero elements of `weight`."""
    return _sparsity(weight)


def deployed_state(dep: SparseDeployment) -> dict[str, Tensor]:
    """The deployed model's state dict, each CSR index buffer cast to its smallest int type.

    CSR layers appear as `<layer>.crow_indices`, `.col_indices`, `.values` (and `.bias`);
    dense layers as usual. `dep.model.load_state_dict(...)` takes it back (indices are
    widened again on copy).
    """
    state = {k: v.detach() for k, v in dep.model.state_dict().items()}
    for name, module in dep.model.named_modules():
        if isinstance(module, _CSRMatmul):
            prefix = f"{name}." if name else ""
            crow = f"{prefix}crow_indices"
            col = f"{prefix}col_indices"
            state[crow] = state[crow].to(smallest_index_dtype(module.nnz))
            state[col] = state[col].to(smallest_index_dtype(max(module.shape[1] - 1, 0)))
    return state


def deployed_state_bytes(dep: SparseDeployment) -> int:
    """Size in bytes of `deployed_state(dep)` written as one safetensors file.

    This is the file of the model as deployed: CSR layers store row pointers, column
    indices (smallest integer type) and values; layers kept dense are stored dense, even if
    mostly zero (pruneviz.measure.storage.sparse_bytes, which picks the smallest encoding for every
    tensor, gives the smallest file for the same weights).
    """
    return len(dense_bytes(deployed_state(dep)))
