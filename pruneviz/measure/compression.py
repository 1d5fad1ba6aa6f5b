"""Other compressions next to pruning: int8 and int4 quantization, low-rank factorization.

Both return a transformed *copy* of a model (the session's model is never changed), so
they combine with pruning by being applied to the pruned model:

- `quantize_dynamic_int8`: nn.Linear, nn.LSTM and nn.GRU weights stored as int8 with a
  scale (activations quantized on the fly at run time). A pruned weight is zero, and
  zero is exactly representable (symmetric quantization), so it stays zero.
- `quantize_static_int8` and `quantize_int4` (quantize.py): Conv and Linear layers too,
  statically quantized to int8 with real int8 kernels, or stored as group-wise int4
  weights (storage only: no int4 kernel on CPU); each checked through a real file that
  reloads to the same outputs.
- `low_rank`: each plain nn.Linear replaced by two smaller ones from a truncated SVD of
  its weight, W ≈ (U_r √S_r)(√S_r V_rᵀ), where that stores fewer weights.

`measure_model` measures such a model the way the rest of pruneviz measures a pruned one
— task metric on the evaluation data, stored parameters, weight MACs counted on a real
forward pass, bytes of its real weight files, latency timed against the unpruned model —
so that every technique is a point on the same Trade-offs chart.
"""

from __future__ import annotations

import copy
import gzip
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.ao.nn.quantized as nnq
from torch import Tensor, nn
from torch.ao.nn.quantized.dynamic.modules.rnn import RNNBase as QuantizedRNNBase
from torch.nn.utils import parametrize

from pruneviz.core.blocks import set_module
from pruneviz.core.layers import eval_mode, model_device
from pruneviz.data.tensors import TensorData
from pruneviz.errors import ModelError, PlanError
from pruneviz.measure.meter import PRUNE, Report, latency_batch
from pruneviz.measure.metrics import (
    Latency,
    ParamCounts,
    evaluate,
    measure_latency,
)
from pruneviz.measure.quantize import (
    DEFAULT_GROUP_SIZE,
    Quantized,
    _quiet_quantization_deprecations,
    has_static_int8,
    int4_file,
    int4_weights,
    is_int4_layer,
    is_static_quantized,
    load_int4,
    load_static_int8,
    same_outputs,
    static_int8,
    static_int8_file,
    static_state,
)
from pruneviz.measure.storage import FileSizes, dense_bytes, sparse_size
from pruneviz.measure.timing import Speedup, time_against

INT8 = "int8"  # dynamic int8: Linear / LSTM / GRU weights, activations quantized on the fly
INT8_STATIC = "int8-static"  # static int8: Conv / Linear, calibrated activations
INT4 = "int4-w"  # weight-only int4, group-wise: storage only
SVD = "svd"
KINDS: tuple[str, ...] = (INT8, INT8_STATIC, INT4, SVD)
# Techniques with no kernel of their own on CPU: latency not measured ("storage only").
STORAGE_ONLY: tuple[str, ...] = (INT4,)

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_QCONV = (nnq.Conv1d, nnq.Conv2d, nnq.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
           nnq.ConvTranspose1d, nnq.ConvTranspose2d, nnq.ConvTranspose3d)
# Module types dynamic quantization converts (nn.RNN has no dynamic int8 version).
_QUANTIZABLE: tuple[type[nn.Module], ...] = (nn.Linear, nn.LSTM, nn.GRU)
_PREFERRED_ENGINES = ("x86", "fbgemm", "qnnpack", "onednn")

def technique_name(kind: str, *, pruned: bool, rank: float | Mapping[str, int] | None = None,
                   group_size: int | None = None) -> str:
    """The label of a combination: "int8", "prune+int8", "int8-static", "int4-w g=128",
    "prune+int4-w g=128", "svd r=50%", "prune+svd r=50%".

    `kind` is one of KINDS; `rank` (SVD only) is the fraction of full rank, or the explicit
    ranks per layer (then "svd r=custom"); `group_size` (INT4 only) is the largest group.
    """
    if kind in (INT8, INT8_STATIC):
        name = kind
    elif kind == INT4:
        name = f"{INT4} g={DEFAULT_GROUP_SIZE if group_size is None else group_size}"
    elif kind == SVD:
        if rank is None:
            raise ValueError("an SVD technique needs its rank")
        amount = f"{rank * 100:.4g}%" if isinstance(rank, int | float) else "custom"
        name = f"{SVD} r={amount}"
    else:
        raise ValueError(f"unknown technique {kind!r}; allowed: {', '.join(KINDS)}")
    return f"{PRUNE}+{name}" if pruned else name


# -- dynamic int8 quantization -----------------------------------------------------------------
def _supported_engines() -> list[str]:
    return [str(e) for e in torch.backends.quantized.supported_engines]


def _quantized_engine() -> str:
    """The quantized engine to run int8 kernels with, switching from 'none' if need be."""
    engine = str(torch.backends.quantized.engine)
    supported = _supported_engines()
    if engine != "none" and engine in supported:
        return engine
    for candidate in _PREFERRED_ENGINES:
        if candidate in supported:
            torch.backends.quantized.engine = candidate
            return candidate
    raise ModelError(
        "dynamic int8 quantization is not available in this PyTorch build (no quantized "
        f"engine; supported: {', '.join(supported) or 'none'}); install a CPU build of "
        "PyTorch for x86 or ARM to compare int8 models"
    )


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` with every nn.Linear, nn.LSTM and nn.GRU dynamically quantized to
    int8 weights (per-tensor symmetric scale: zero weights stay exactly zero); other layers
    (convolutions, norms) stay float. The copy is in eval mode; `model` is not changed.

    Linears that attention modules read functionally (MultiheadAttention's out_proj) are
    left float, as torch does. Quantized kernels run on the CPU only, so the copy is on the
    CPU whatever device `model` is on (`measure_model` measures it there).
    """
    engine = _quantized_engine()
    copied = copy.deepcopy(model).cpu().eval()
    if not any(type(m) in _QUANTIZABLE for m in copied.modules()):
        raise ModelError(
            "the model has no nn.Linear, nn.LSTM or nn.GRU layer, the layers dynamic int8 "
            "quantization converts; it would not change anything"
        )
    with _quiet_quantization_deprecations():
        from torch.ao.quantization import quantize_dynamic

        try:
            quantized = quantize_dynamic(  # type: ignore[no-untyped-call]
                copied, set(_QUANTIZABLE), dtype=torch.qint8, inplace=True)
        except (RuntimeError, AssertionError, ValueError, NotImplementedError) as exc:
            raise ModelError(
                f"dynamic int8 quantization failed on this model ({engine} engine): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    assert isinstance(quantized, nn.Module)
    return quantized


# -- static int8 and weight-only int4 (quantize.py), each through a file that reloads -----------
def _checked(quantized: Quantized, saved: bytes, reloaded: nn.Module, example: Tensor,
             what: str) -> tuple[Quantized, bytes]:
    if not same_outputs(quantized.model, reloaded, example):
        raise ModelError(f"the {what} file, reloaded, does not give the outputs of the "
                         f"{what} model it was saved from; it is not usable")
    return quantized, saved


def quantize_static_int8(model: nn.Module, calibration: Tensor, example: Tensor
                         ) -> tuple[Quantized, bytes]:
    """A static int8 copy of `model` (Conv and Linear layers with int8 kernels on the CPU,
    activations calibrated on the `calibration` inputs, weights per output channel with
    zero point 0, see quantize.static_int8) and the bytes of its safetensors file — saved,
    reloaded into `model`'s architecture and checked to give the same outputs on
    `example`. Layers left float are named in the notes. `model` is not changed."""
    engine = _quantized_engine()
    with _quiet_quantization_deprecations():
        quantized = static_int8(model, calibration, engine=engine)
        saved = static_int8_file(quantized, engine)
        reloaded = load_static_int8(saved, model, example[:1].cpu())
        return _checked(quantized, saved, reloaded, example.cpu(), "static int8")


def quantize_int4(model: nn.Module, example: Tensor, group_size: int = DEFAULT_GROUP_SIZE
                  ) -> tuple[Quantized, bytes]:
    """A copy of `model` with Linear and Conv weights stored as group-wise int4 (groups of
    at most `group_size`, see quantize.int4_weights) and the bytes of its safetensors
    file — saved, reloaded and checked to give the same outputs on `example`."""
    quantized = int4_weights(model, group_size)
    saved = int4_file(quantized)
    example = example.to(model_device(quantized.model))
    return _checked(quantized, saved, load_int4(saved, model), example, "int4")


def _qparams(name: str, weight: Tensor) -> dict[str, Tensor]:
    """An int8 weight as plain tensors: its integers, scale(s) and zero point(s)."""
    scheme = weight.qscheme()
    if scheme in (torch.per_channel_affine, torch.per_channel_symmetric):
        scale = weight.q_per_channel_scales().to(torch.float32)
        zero = weight.q_per_channel_zero_points().to(torch.int32)
    else:
        scale = torch.tensor([weight.q_scale()], dtype=torch.float32)
        zero = torch.tensor([weight.q_zero_point()], dtype=torch.int32)
    return {name: weight.int_repr(), f"{name}_scale": scale, f"{name}_zero_point": zero}


def _quantized_tensors(module: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(weights as quantized tensors, biases) of a dynamically quantized module."""
    # torch's quantized modules are not annotated: what they return is checked here.
    found: dict[str, dict[str, Any]] = {}
    if is_static_quantized(module):  # int8 Linear (dynamic or static) or convolution
        quantized: Any = module
        bias = quantized.bias()
        found = {"weights": {"weight": quantized.weight()},
                 "biases": {} if bias is None else {"bias": bias}}
    else:
        assert isinstance(module, QuantizedRNNBase)
        found = {"weights": dict(module.get_weight()),  # type: ignore[no-untyped-call]
                 "biases": dict(module.get_bias())}  # type: ignore[no-untyped-call]
    weights = {k: v for k, v in found["weights"].items() if isinstance(v, Tensor)}
    biases = {k: v.detach() for k, v in found["biases"].items() if isinstance(v, Tensor)}
    return weights, biases


def _is_quantized(module: nn.Module) -> bool:
    return is_static_quantized(module) or isinstance(module, QuantizedRNNBase)


def stored_state(model: nn.Module) -> dict[str, Tensor]:
    """The tensors a weight file of `model` holds: its state dict for a float model; for a
    quantized one, each int8 weight as its int8 integers plus `_scale` and `_zero_point`
    tensors (what safetensors can store, and all that is needed to rebuild it); for a
    static int8 model, `quantize.static_state`. (An int4 model's state is its own: packed
    weights and scales are its buffers.)"""
    if has_static_int8(model):
        return static_state(model)
    state: dict[str, Tensor] = {}

    def walk(module: nn.Module, prefix: str) -> None:
        if _is_quantized(module):
            weights, biases = _quantized_tensors(module)
            for name, weight in weights.items():
                state.update(_qparams(prefix + name, weight))
            for name, bias in biases.items():
                state[prefix + name] = bias.detach()
            return
        for name, param in module._parameters.items():
            if param is not None:
                state[prefix + name] = param.detach()
        for name, buffer in module._buffers.items():
            if buffer is not None and name not in module._non_persistent_buffers_set:
                state[prefix + name] = buffer.detach()
        for name, child in module._modules.items():
            if child is not None:
                walk(child, f"{prefix}{name}.")

    walk(model, "")
    return state


def stored_params(model: nn.Module) -> ParamCounts:
    """Weights and biases `model` stores, and how many are not zero: its parameters, and
    for quantized layers their int8 weights (zero when the integer is the zero point) and
    float biases. Scales and zero points are not counted: they are per tensor or row."""
    total = 0
    nonzero = 0
    seen: set[int] = set()  # a shared parameter is stored once
    with torch.no_grad():
        for module in model.modules():
            if _is_quantized(module):
                weights, biases = _quantized_tensors(module)
                tensors = [w.dequantize() for w in weights.values()] + list(biases.values())
            else:
                tensors = [p for p in module.parameters(recurse=False) if id(p) not in seen]
                seen.update(id(p) for p in tensors)
                if is_int4_layer(module):  # its weight as stored, dequantized
                    tensors.append(module.get_buffer("weight"))
            for t in tensors:
                total += t.numel()
                nonzero += int(torch.count_nonzero(t))
    return ParamCounts(total, nonzero)


def stored_sizes(model: nn.Module, gzip_level: int = 6) -> FileSizes:
    """Bytes of `model`'s weights (see `stored_state`) as a dense safetensors file, in the
    sparse encoding, and gzipped — the files themselves, written in memory."""
    state = stored_state(model)
    dense = dense_bytes(state)
    return FileSizes(len(dense), sparse_size(state), len(gzip.compress(dense, gzip_level)))


# -- low-rank factorization ----------------------------------------------------------------------
class LowRankLinear(nn.Module):
    """y = up(down(x)): a Linear of rank `rank` as two, in→rank (no bias), rank→out."""

    def __init__(self, in_features: int, out_features: int, rank: int, *, bias: bool = True,
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False, device=device, dtype=dtype)
        self.up = nn.Linear(rank, out_features, bias=bias, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        """What the factorized Linear computes (exactly it at full rank, up to rounding)."""
        out: Tensor = self.up(self.down(x))
        return out

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int) -> LowRankLinear:
        """The best rank-`rank` approximation of `linear` (truncated SVD, in float64), the
        singular values split evenly between the two factors; the bias is kept as is."""
        weight = linear.weight.detach()
        if not 1 <= rank <= min(weight.shape):
            raise PlanError(f"rank {rank} is outside 1..{min(weight.shape)} for a "
                            f"{weight.shape[1]}→{weight.shape[0]} Linear")
        u, s, vh = torch.linalg.svd(weight.to(torch.float64), full_matrices=False)
        root = s[:rank].sqrt()
        factored = cls(linear.in_features, linear.out_features, rank,
                       bias=linear.bias is not None, device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            factored.down.weight.copy_((root[:, None] * vh[:rank]).to(weight.dtype))
            factored.up.weight.copy_((u[:, :rank] * root[None, :]).to(weight.dtype))
            if linear.bias is not None and factored.up.bias is not None:
                factored.up.bias.copy_(linear.bias.detach())
        factored.train(linear.training)
        return factored


@dataclass(frozen=True)
class LowRank:
    """A factorized copy of a model, which Linears were factorized and which were not."""

    model: nn.Module
    ranks: dict[str, int]  # module name -> rank kept
    skipped: dict[str, str]  # module name -> why it was left as it is

    @property
    def notes(self) -> tuple[str, ...]:
        """One sentence per skipped layer, for the user."""
        return tuple(f"{name} left as it is: {why}" for name, why in self.skipped.items())

    def check_changed(self) -> None:
        """Refuse a factorization that factorized nothing, saying why each layer was left."""
        if not self.ranks:
            reasons = "; ".join(self.notes) or "the model has no nn.Linear layer"
            raise ModelError(f"no Linear layer was factorized ({reasons}); choose a lower "
                             "rank, or a model with larger Linear layers")


def rank_for(fraction: float, in_features: int, out_features: int) -> int:
    """The rank kept for `fraction` of full rank (min(in, out)): at least that, at least 1."""
    full = min(in_features, out_features)
    return max(1, min(full, math.ceil(fraction * full - 1e-9)))


def _called_as_modules(model: nn.Module, example: Tensor) -> set[int]:
    """Ids of the Linear modules whose forward runs on `example` (others are read
    functionally, or unused)."""
    called: set[int] = set()
    handles = [
        m.register_forward_hook(lambda module, _inp, _out: called.add(id(module)))
        for m in model.modules() if isinstance(m, nn.Linear)
    ]
    try:
        with eval_mode(model), torch.no_grad():
            model(example[:1])
    except Exception as exc:  # any failure of the user's model, reported
        raise ModelError(f"the model failed on the example input of shape "
                         f"{tuple(example.shape)}: {type(exc).__name__}: {exc}") from exc
    finally:
        for handle in handles:
            handle.remove()
    return called


def _why_not(name: str, module: nn.Linear, shared: set[int], called: set[int] | None
             ) -> str | None:
    if type(module) is not nn.Linear:
        return (f"a {type(module).__name__}, not a plain nn.Linear (attention reads its "
                "weight directly)")
    if parametrize.is_parametrized(module):
        return "its weight is parametrized"
    if id(module.weight) in shared:
        return "its weight is shared with another layer"
    if called is not None and id(module) not in called:
        return "its forward never runs (its weight is read directly, or it is unused)"
    if not name:
        return "it is the whole model"
    return None


def low_rank(
    model: nn.Module,
    rank: float | Mapping[str, int],
    *,
    layers: Sequence[str] | None = None,
    example: Tensor | None = None,
    only_if_smaller: bool = True,
) -> LowRank:
    """A copy of `model` with plain nn.Linear modules replaced by `LowRankLinear`s.

    `rank` is a fraction of each layer's full rank (0 < rank <= 1, see `rank_for`), for
    every plain Linear or those named in `layers`; or explicit ranks {module name: rank},
    for those layers only. A layer is skipped (and said why in `LowRank.skipped`) when
    its factors would not store fewer weights than it (unless `only_if_smaller` is
    False), when it is not a plain nn.Linear (MultiheadAttention's out_proj), its weight
    is shared or parametrized, or — with an `example` batch — its forward never runs.
    `model` is not changed.
    """
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    if isinstance(rank, Mapping):
        if layers is not None:
            raise ValueError("give layers either as explicit ranks or in `layers`, not both")
        wanted = list(rank)
    else:
        if isinstance(rank, bool) or not 0.0 < float(rank) <= 1.0:
            raise PlanError(f"the rank fraction must be above 0 and at most 1 (100%), got "
                            f"{rank!r}")
        wanted = list(layers) if layers is not None else list(linears)
    unknown = [name for name in wanted if name not in linears]
    if unknown:
        raise ModelError(f"no nn.Linear called {', '.join(map(repr, unknown))} in the model; "
                         f"its Linear layers are: {', '.join(linears) or 'none'}")
    seen: set[int] = set()
    shared: set[int] = set()
    for _, param in model.named_parameters(remove_duplicate=False):
        (shared if id(param) in seen else seen).add(id(param))
    called = _called_as_modules(model, example) if example is not None else None
    copied = copy.deepcopy(model)
    copies = dict(copied.named_modules())
    ranks: dict[str, int] = {}
    skipped: dict[str, str] = {}
    for name in wanted:
        module = linears[name]
        why = _why_not(name, module, shared, called)
        if why is not None:
            skipped[name] = why
            continue
        n_in, n_out = module.in_features, module.out_features
        if isinstance(rank, Mapping):
            r = int(rank[name])
            if not 1 <= r <= min(n_in, n_out):
                raise PlanError(f"rank {r} for {name!r} is outside 1..{min(n_in, n_out)} "
                                f"(its weight is {n_out}x{n_in})")
        else:
            r = rank_for(float(rank), n_in, n_out)
        if only_if_smaller and r * (n_in + n_out) >= n_in * n_out:
            skipped[name] = (f"rank {r} factors store {r * (n_in + n_out):,} weights, not fewer "
                             f"than its {n_out}x{n_in} = {n_in * n_out:,}")
            continue
        target = copies[name]
        assert isinstance(target, nn.Linear)
        set_module(copied, name, LowRankLinear.from_linear(target, r))
        ranks[name] = r
    return LowRank(copied, ranks, skipped)


# -- weight MACs on a real forward pass ----------------------------------------------------------
def _first_tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, nn.utils.rnn.PackedSequence):
        return value.data
    if isinstance(value, tuple | list) and value:
        return _first_tensor(value[0])
    return None


def _weights(module: nn.Module) -> list[Tensor]:
    """The weight tensors (float, dequantized for int8) `module` multiplies its inputs by."""
    if _is_quantized(module):
        return [w.dequantize() for w in _quantized_tensors(module)[0].values()]
    if isinstance(module, nn.RNNBase):
        return [p.detach() for n, p in module.named_parameters(recurse=False)
                if n.startswith("weight_")]
    weight = getattr(module, "weight", None)
    return [weight.detach()] if isinstance(weight, Tensor) else []


def _steps(inputs: tuple[Any, ...], batch_first: bool) -> int:
    if inputs and isinstance(inputs[0], nn.utils.rnn.PackedSequence):
        return int(inputs[0].data.shape[0])
    inp = _first_tensor(inputs)
    if inp is None:
        return 0
    if inp.dim() == 2:
        return int(inp.shape[0])
    return int(inp.shape[1] if batch_first else inp.shape[0])


def _uses(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> list[tuple[Tensor, int]]:
    """(weight, times each of its elements was used) for one call of `module`."""
    out = _first_tensor(output)
    inp = _first_tensor(inputs)
    if isinstance(module, nn.MultiheadAttention):
        if len(inputs) < 2:
            return []
        seq = 1 if module.batch_first and inputs[0].dim() == 3 else 0
        q_len, k_len = int(inputs[0].shape[seq]), int(inputs[1].shape[seq])
        uses: list[tuple[Tensor, int]] = []
        packed = getattr(module, "in_proj_weight", None)
        if isinstance(packed, Tensor):
            e = module.embed_dim
            w = packed.detach()
            uses += [(w[:e], q_len), (w[e:], k_len)]  # queries; keys and values
        else:
            uses += [(module.q_proj_weight.detach(), q_len),
                     (module.k_proj_weight.detach(), k_len),
                     (module.v_proj_weight.detach(), k_len)]
        return [*uses, (module.out_proj.weight.detach(), q_len)]  # applied functionally
    weights = _weights(module)
    if not weights:
        return []
    if isinstance(module, nn.RNNBase | QuantizedRNNBase):
        steps = _steps(inputs, bool(getattr(module, "batch_first", False)))
        return [(w, steps) for w in weights]
    if isinstance(module, nn.Linear | nnq.Linear) and out is not None:
        return [(weights[0], out.numel() // int(module.out_features))]
    if isinstance(module, (*_CONV, *_QCONV)) and out is not None:
        return [(weights[0], out.numel() // module.out_channels)]
    if isinstance(module, _CONV_T) and inp is not None:
        return [(weights[0], inp.numel() // module.in_channels)]
    return []


def count_macs(model: nn.Module, example: Tensor) -> tuple[int, int]:
    """Weight multiply-accumulates per sample on a forward pass of `example`'s first
    sample: all of them, and those with a non-zero weight (zeros skipped).

    Linear, convolution, transposed convolution, RNN/LSTM/GRU and MultiheadAttention
    weights count, float or int8 (an int8 MAC is still a MAC); biases and weight-free
    operations do not — the same rule as the Prune page's MACs.
    """
    dense = 0
    effective = 0.0
    kinds = (nn.Linear, nnq.Linear, *_CONV, *_QCONV, *_CONV_T, nn.RNNBase, QuantizedRNNBase,
             nn.MultiheadAttention)
    inside_attention = {id(m.out_proj) for m in model.modules()
                        if isinstance(m, nn.MultiheadAttention)}

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        nonlocal dense, effective
        for weight, positions in _uses(module, inputs, output):
            n = weight.numel()
            dense += n * positions
            if n:
                effective += int(torch.count_nonzero(weight)) * positions

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, kinds) and id(m) not in inside_attention]
    try:
        with eval_mode(model), torch.no_grad():
            model(example[:1])
    finally:
        for handle in handles:
            handle.remove()
    return dense, round(effective)


# -- measuring a transformed model ---------------------------------------------------------------
def measure_model(
    model: nn.Module,
    data: TensorData,
    *,
    technique: str,
    reference: nn.Module | None = None,
    latency: bool = True,
    latency_batch_size: int = 64,
    runs: int = 20,
    notes: Sequence[str] = (),
    name: str = "",
    plan: Mapping[str, Any] | None = None,
    saved: bytes | None = None,
) -> Report:
    """Measure `model` (any model, float or int8) on `data`: the metric and loss
    (`metrics.evaluate`), stored parameters (`stored_params`), weight MACs (`count_macs`),
    weight file sizes (`stored_sizes`) and, if `latency`, the median latency of a batch of
    `latency_batch_size` real inputs — timed interleaved with `reference` (the unpruned
    model) when given, as the Prune page times a pruned model. `name` and `plan` (the
    model's name and the pruning plan it was made from) are only recorded. `saved` is the
    model's own weight file when it has one (static int8, int4): its bytes are the dense
    size and what is gzipped.

    Everything is measured on `model`'s device (an int8 model is on the CPU): the data is
    moved there, and a `reference` on another device is timed as a copy on it."""
    device = model_device(model)
    data = data.to(device)
    if reference is not None and model_device(reference) != device:
        reference = copy.deepcopy(reference).to(device)
    batch = latency_batch(data, latency_batch_size)
    with _quiet_quantization_deprecations():
        evaluation = evaluate(model, data)
        counts = stored_params(model)
        macs_dense, macs_effective = count_macs(model, batch)
        timed: Latency | None = None
        timed_reference: Latency | None = None
        gain: Speedup | None = None
        if latency and reference is not None:
            timing = time_against([model], reference, batch, runs=runs)
            timed, timed_reference, gain = (timing.candidates[0], timing.reference,
                                            timing.speedups[0])
        elif latency:
            timed = measure_latency(model, batch, runs=runs)
        if saved is None:
            sizes = stored_sizes(model)
        else:
            sizes = FileSizes(len(saved), sparse_size(stored_state(model)),
                              len(gzip.compress(saved, 6)))
    return Report(
        model=name,
        plan=dict(plan or {}),
        technique=technique,
        evaluation=evaluation,
        params_total=counts.total,
        params_nonzero=counts.nonzero,
        macs_dense=macs_dense,
        macs_effective=macs_effective,
        sizes=sizes,
        latency=timed,
        latency_reference=timed_reference,
        latency_speedup=gain,
        notes=tuple(notes),
    )


__all__ = [
    "INT4",
    "INT8",
    "INT8_STATIC",
    "KINDS",
    "PRUNE",
    "STORAGE_ONLY",
    "SVD",
    "LowRank",
    "LowRankLinear",
    "count_macs",
    "low_rank",
    "measure_model",
    "quantize_dynamic_int8",
    "quantize_int4",
    "quantize_static_int8",
    "rank_for",
    "stored_params",
    "stored_sizes",
    "stored_state",
    "technique_name",
]
