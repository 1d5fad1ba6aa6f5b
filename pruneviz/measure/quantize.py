"""Quantization that covers convolutions, each with a real file that reloads:

- **Static int8** (`static_int8`): Conv and Linear layers run torch's quantized int8
  kernels (fbgemm / oneDNN on x86, QNNPACK on ARM) with activations quantized from
  ranges calibrated on real inputs and weights quantized per output channel,
  symmetrically (zero point 0: a pruned weight stays exactly 0). It uses torch's FX graph
  mode flow (`torch.ao.quantization.quantize_fx.prepare_fx` / `convert_fx` with the
  engine's default QConfigMapping): this torch has no PT2E flow (`quantize_pt2e` moved to
  torchao, not a dependency), and FX fuses Conv+ReLU, folds BatchNorm into the
  convolution and keeps int8 activations from layer to layer, where the eager flow needs
  stubs written into the model. A model torch.fx cannot trace falls back to eager mode,
  each Conv / Linear quantized on its own (int8 in, float out). Layers with no static
  int8 kernel (LSTM, GRU, attention, custom modules) stay float and are named in notes.
- **Weight-only int4** (`int4_weights`): each Linear / Conv weight row (an output's
  inputs, times the kernel for a convolution) is cut into equal groups of at most
  `group_size` weights; each group stores a scale (float16) and 4-bit integers in
  [-7, 7] (symmetric, zero point 0), two to a byte. There is no int4 kernel on CPU torch:
  the model computes with the dequantized weights, so its metric is real and its file is
  real, and its latency is that of the float model — "storage only".

Both files are safetensors: `static_int8_file` / `load_static_int8` and
`int4_file` / `load_int4` write and read them; a loader needs the model's architecture
(any instance: its weights are replaced), as with every pruneviz weight file.
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn
from torch.ao.nn.quantized.modules.utils import WeightedQuantizedModule
from torch.nn.utils import parametrize

from pruneviz.core.blocks import set_module
from pruneviz.errors import ModelError

STATIC_FORMAT = "pruneviz.int8-static/1"
INT4_FORMAT = "pruneviz.int4-weight-only/1"
FX = "fx"  # torch.fx graph mode: fused, int8 from layer to layer
EAGER = "eager"  # each layer wrapped on its own (a model torch.fx cannot trace)
DEFAULT_GROUP_SIZE = 128
INT4_MAX = 7  # symmetric int4: integers in [-7, 7], so that 0 is 0 and -w is -q
# Buffers a weight-only int4 layer stores in place of its float weight.
PACKED = "weight_packed"
GROUP_SCALE = "weight_group_scale"

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_STATIC_KINDS = (nn.Linear, *_CONV)
# Modules with no static int8 kernel: kept float by the flow (dynamic int8 covers RNNs).
_FLOAT_ONLY: tuple[type[nn.Module], ...] = (
    nn.LSTM, nn.GRU, nn.RNN, nn.LSTMCell, nn.GRUCell, nn.RNNCell, nn.MultiheadAttention)
_WEIGHTED_FLOAT: tuple[type[nn.Module], ...] = (
    nn.Linear, *_CONV, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    nn.RNNBase, nn.MultiheadAttention, nn.Embedding)


@dataclass(frozen=True)
class Quantized:
    """A quantized copy of a model: which layers were quantized, and what was left."""

    model: nn.Module
    layers: tuple[str, ...]  # modules quantized
    notes: tuple[str, ...]  # layers left float and why; the flow used
    flow: str  # FX or EAGER for static int8; "int4" for weight-only


def is_static_quantized(module: nn.Module) -> bool:
    """Whether `module` is a quantized Conv / Linear with int8 weights (static or dynamic)."""
    return isinstance(module, WeightedQuantizedModule)


def is_int4_layer(module: nn.Module) -> bool:
    """Whether `module` stores its weight as packed int4 (see `int4_weights`)."""
    return PACKED in module._buffers


def has_static_int8(model: nn.Module) -> bool:
    """Whether any part of `model` is a static int8 module (its file is `static_state`)."""
    return any(is_static_quantized(m)
               and not type(m).__module__.startswith("torch.ao.nn.quantized.dynamic")
               for m in model.modules())


# torch.ao.quantization is deprecated in favour of torchao (not a dependency here); its
# eager dynamic and FX static quantization still work, and these warnings say only that.
_DEPRECATIONS: tuple[tuple[str, type[Warning]], ...] = (
    (r"torch\.ao\.quantization is deprecated", DeprecationWarning),
    (r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other quantized tensor "
     r"creation functions", UserWarning),
    (r"Please use quant_min and quant_max to specify the range for observers", UserWarning),
)


@contextmanager
def _quiet_quantization_deprecations() -> Iterator[None]:
    with warnings.catch_warnings():
        for message, category in _DEPRECATIONS:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


# -- static int8 ---------------------------------------------------------------------------------
def _qconfig_mapping(engine: str) -> Any:
    from torch.ao.quantization import get_default_qconfig_mapping

    mapping = get_default_qconfig_mapping(engine)
    for kind in _FLOAT_ONLY:
        mapping.set_object_type(kind, None)
    return mapping


def _calibrate(model: nn.Module, batches: Iterable[Tensor]) -> None:
    with torch.no_grad():
        for batch in batches:
            model(batch)


def _fx(model: nn.Module, example: Tensor, batches: Iterable[Tensor], engine: str
        ) -> nn.Module:
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    prepared = prepare_fx(model, _qconfig_mapping(engine), (example,))
    _calibrate(prepared, batches)
    return convert_fx(prepared)


def _eager(model: nn.Module, batches: Iterable[Tensor], engine: str) -> nn.Module:
    from torch.ao.quantization import QuantWrapper, convert, get_default_qconfig, prepare

    qconfig = get_default_qconfig(engine)  # type: ignore[no-untyped-call]
    chosen = [name for name, m in model.named_modules() if name and type(m) in _STATIC_KINDS]
    for name in chosen:
        wrapper = QuantWrapper(model.get_submodule(name))
        wrapper.qconfig = qconfig
        set_module(model, name, wrapper)
    prepare(model, inplace=True)  # type: ignore[no-untyped-call]
    _calibrate(model, batches)
    convert(model, inplace=True)  # type: ignore[no-untyped-call]
    return model


def _float_left(model: nn.Module) -> list[tuple[str, str]]:
    """(name, type) of the weighted modules still float in a quantized model."""
    left: list[tuple[str, str]] = []
    for name, module in model.named_modules():
        if isinstance(module, _WEIGHTED_FLOAT) and not is_static_quantized(module):
            if any(name.startswith(p + ".") for p, _ in left):
                continue  # inside a module already named (attention's out_proj)
            left.append((name or "(the model)", type(module).__name__))
    return left


def _why_float(kind: str, flow: str) -> str:
    if kind in ("LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"):
        return (f"static int8 has no {kind} kernel (dynamic int8 quantizes its weights; "
                "int4 weight-only stores Linear and Conv layers only)")
    if kind == "MultiheadAttention":
        return "attention reads its projections' weights directly"
    if flow == EAGER:
        return "only plain Conv1d/2d/3d and Linear layers are quantized when the model " \
               "cannot be traced"
    return f"torch has no static int8 kernel for a {kind} on this path"


def _static(model: nn.Module, example: Tensor, batches: list[Tensor], engine: str,
            flow: str | None) -> tuple[nn.Module, str, str | None]:
    """(quantized model, flow used, why FX was not used) — FX unless it fails or `flow`
    says EAGER. `model` is changed (a copy is passed)."""
    fallback: str | None = None
    if flow in (None, FX):
        pristine = copy.deepcopy(model)
        try:
            return _fx(model, example, batches, engine), FX, None
        except Exception as exc:  # torch.fx fails on many kinds of Python: any is reported
            if flow == FX:
                raise ModelError(f"torch.fx could not quantize this model again "
                                 f"({type(exc).__name__}: {exc})") from exc
            fallback = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            model = pristine
    return _eager(model, batches, engine), EAGER, fallback


def static_int8(model: nn.Module, calibration: Tensor, *, engine: str,
                batch_size: int = 64, flow: str | None = None) -> Quantized:
    """A copy of `model` (CPU, eval mode) with its Conv and Linear layers statically
    quantized to int8: activation ranges observed on `calibration` (real inputs, run in
    batches of `batch_size`), weights per output channel, symmetric (zero point 0), run
    with the quantized `engine` (see the module docstring for the flow). `flow` forces
    FX or EAGER (a loader rebuilding a saved file's model). `model` is not changed.
    """
    if calibration.shape[0] == 0:
        raise ModelError("static int8 quantization needs calibration inputs; none were given")
    if not any(type(m) in _STATIC_KINDS for m in model.modules()):
        raise ModelError("the model has no nn.Conv1d/2d/3d or nn.Linear layer, the layers "
                         "static int8 quantization converts; it would not change anything")
    copied = copy.deepcopy(model).cpu().eval()
    data = calibration.detach().cpu()
    batches = [data[i:i + batch_size] for i in range(0, data.shape[0], batch_size)]
    previous = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = engine
        with _quiet_quantization_deprecations():
            quantized, used, fallback = _static(copied, data[:1], batches, engine, flow)
    except ModelError:
        raise
    except Exception as exc:  # the user's model failed in a calibration pass
        raise ModelError(f"static int8 quantization failed on this model ({engine} engine): "
                         f"{type(exc).__name__}: {exc}") from exc
    finally:
        torch.backends.quantized.engine = previous
    quantized.eval()
    layers = tuple(name for name, m in quantized.named_modules() if is_static_quantized(m))
    if not layers:
        raise ModelError("static int8 quantization converted no layer of this model")
    notes = [f"{name} ({kind}) left float: {_why_float(kind, used)}"
             for name, kind in _float_left(quantized)]
    if fallback is not None:
        notes.insert(0, f"torch.fx could not trace the model ({fallback}): each Conv and "
                     "Linear was quantized on its own, int8 in and float out, so "
                     "activations between layers stay float")
    return Quantized(quantized, layers, tuple(notes), used)


def _exact(scales: Tensor) -> Tensor:
    """Scales in float32 where that holds them exactly (observers compute them in
    float32), else in float64."""
    narrow = scales.to(torch.float32)
    return narrow if torch.equal(narrow.to(scales.dtype), scales) else scales


def _flatten(key: str, value: Any, out: dict[str, Tensor]) -> None:
    """A state-dict value as plain tensors: a quantized tensor as its integers, scale(s),
    zero point(s) (and axis); packed parameters (a tuple) item by item."""
    if isinstance(value, Tensor):
        t = value.detach().cpu()
        if not t.is_quantized:
            out[key] = t
            return
        out[key] = t.int_repr()
        if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            out[f"{key}._scale"] = _exact(t.q_per_channel_scales())
            out[f"{key}._zero_point"] = t.q_per_channel_zero_points().to(torch.int32)
            out[f"{key}._axis"] = torch.tensor([t.q_per_channel_axis()], dtype=torch.int32)
        else:
            out[f"{key}._scale"] = _exact(torch.tensor([t.q_scale()], dtype=torch.float64))
            out[f"{key}._zero_point"] = torch.tensor([t.q_zero_point()], dtype=torch.int32)
    elif isinstance(value, tuple | list):
        for i, item in enumerate(value):
            _flatten(f"{key}.{i}", item, out)
    # anything else (a dtype, None) is not data: the rebuilt architecture has it


def static_state(model: nn.Module) -> dict[str, Tensor]:
    """The tensors a static int8 model's file holds: its state dict with every quantized
    tensor as int8/uint8 integers plus float64 scales and int64 zero points."""
    out: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        _flatten(key, value, out)
    return out


def _rebuild(key: str, template: Any, stored: Mapping[str, Tensor]) -> Any:
    """The state-dict value `template` (the rebuilt model's) made of the stored tensors."""
    if isinstance(template, Tensor):
        if key not in stored:
            raise KeyError(key)
        values = stored[key]
        if not template.is_quantized:
            return values.to(template.dtype)
        if template.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            return torch._make_per_channel_quantized_tensor(
                values, stored[f"{key}._scale"].to(torch.float64),
                stored[f"{key}._zero_point"].to(torch.int64),
                int(stored[f"{key}._axis"][0]))
        return torch._make_per_tensor_quantized_tensor(
            values, float(stored[f"{key}._scale"][0]), int(stored[f"{key}._zero_point"][0]))
    if isinstance(template, tuple | list):
        return type(template)(
            None if item is None else _rebuild(f"{key}.{i}", item, stored)
            for i, item in enumerate(template))
    return template


def _file(state: dict[str, Tensor], metadata: dict[str, str]) -> bytes:
    return st_save({k: v.contiguous() for k, v in state.items()}, metadata=metadata)


def static_int8_file(quantized: Quantized, engine: str) -> bytes:
    """The bytes of the static int8 model's safetensors file (`static_state`, with the
    flow and engine in its metadata, which `load_static_int8` needs)."""
    return _file(static_state(quantized.model),
                 {"format": STATIC_FORMAT, "flow": quantized.flow, "engine": engine})


def _read(source: bytes | Path, wanted: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    data = source.read_bytes() if isinstance(source, Path) else source
    try:
        tensors = st_load(data)
        length = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + length])
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"not a safetensors file: {exc}") from exc
    metadata = header.get("__metadata__") or {}
    if metadata.get("format") != wanted:
        raise ModelError(f"this file is not a {wanted} file (its format tag is "
                         f"{metadata.get('format')!r}); it was not written by this pruneviz")
    return tensors, metadata


def load_static_int8(source: bytes | Path, architecture: nn.Module, example: Tensor
                     ) -> nn.Module:
    """The static int8 model of a file `static_int8_file` wrote: `architecture` (the float
    model, any weights) quantized again by the file's flow on `example` — which gives the
    same modules — then loaded with the file's integers, scales and zero points."""
    tensors, metadata = _read(source, STATIC_FORMAT)
    engine = metadata.get("engine", "x86")
    if engine not in [str(e) for e in torch.backends.quantized.supported_engines]:
        raise ModelError(f"this file's int8 model runs on the {engine} quantized engine, "
                         "which this PyTorch build does not have")
    skeleton = static_int8(architecture, example, engine=engine,
                           flow=metadata.get("flow", FX)).model
    try:
        template = skeleton.state_dict()
        state = copy.copy(template)  # keeps its _metadata: quantized modules read versions
        for key, value in template.items():
            state[key] = _rebuild(key, value, tensors)
        with _quiet_quantization_deprecations():
            skeleton.load_state_dict(state)
    except (KeyError, RuntimeError) as exc:
        raise ModelError(f"the static int8 file does not fit this architecture (missing or "
                         f"misshapen {exc}); load it into the model it was made from") from exc
    return skeleton.eval()


# -- weight-only int4 ----------------------------------------------------------------------------
def group_layout(row: int, group_size: int) -> tuple[int, int]:
    """(weights per group, groups per row) for rows of `row` weights: the fewest groups of
    at most `group_size`, all equal, the row padded with zeros (less than one weight per
    group) — a 288-weight row is three groups of 96, not 128 + 128 + 32."""
    if group_size < 1:
        raise ValueError(f"the group size must be at least 1, got {group_size}")
    groups = math.ceil(row / group_size)
    return math.ceil(row / groups), groups


def quantize_groups(rows: Tensor, group: int) -> tuple[Tensor, Tensor]:
    """(int8 integers in [-7, 7] of shape (out, groups * group), scales (out, groups)) of
    the (out, row) weights `rows` in groups of `group` (zero-padded at the row's end).

    A group's scale is max|w| / 7, stored in float16 and rounded up where float16 would
    round it down, so no weight is clipped and |w - q·scale| <= scale / 2; float32 where
    float16 cannot hold a scale. An all-zero group has scale 0 and integers 0."""
    out, row = rows.shape
    groups = math.ceil(row / group)
    padded = torch.zeros(out, groups * group, dtype=torch.float32)
    padded[:, :row] = rows.detach().float().cpu()
    blocks = padded.reshape(out, groups, group)
    exact = blocks.abs().amax(dim=2) / INT4_MAX
    scales = exact.to(torch.float16)
    if torch.isfinite(scales).all() and bool(((scales > 0) | (exact == 0)).all()):
        low = scales.float() < exact
        scales[low] = torch.nextafter(scales[low], torch.full_like(scales[low], math.inf))
    else:  # outside float16's range
        scales = exact.clone()
    divisor = scales.float().clamp_min(torch.finfo(torch.float32).tiny)[:, :, None]
    q = torch.round(blocks / divisor).clamp(-INT4_MAX, INT4_MAX).to(torch.int8)
    return q.reshape(out, groups * group), scales


def pack_int4(q: Tensor) -> Tensor:
    """int8 values in [-8, 7] as 4-bit two's complement, two per byte (the first in the
    low nibble; an odd count gets a zero nibble): 0 packs to 0, so zeros stay sparse."""
    flat = q.reshape(-1).to(torch.int16)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    nibbles = (flat & 0xF).reshape(-1, 2)
    return (nibbles[:, 0] | (nibbles[:, 1] << 4)).to(torch.uint8)


def unpack_int4(packed: Tensor, count: int) -> Tensor:
    """The first `count` int8 values of `pack_int4`'s bytes."""
    data = packed.reshape(-1).to(torch.int16)
    nibbles = torch.stack([data & 0xF, data >> 4], dim=1).reshape(-1)[:count]
    return torch.where(nibbles >= 8, nibbles - 16, nibbles).to(torch.int8)


def dequantize_groups(q: Tensor, scales: Tensor, row: int) -> Tensor:
    """(out, row) float32 weights of `quantize_groups`' integers and scales."""
    out, groups = scales.shape
    blocks = q.reshape(out, groups, -1).float() * scales.float()[:, :, None]
    return blocks.reshape(out, -1)[:, :row]


def _install_int4(module: nn.Module, packed: Tensor, scales: Tensor, dtype: torch.dtype,
                  shape: torch.Size) -> None:
    """Make `module` store `packed` and `scales` in place of its weight (buffers), and
    compute with their dequantized weight (a buffer not saved)."""
    row = math.prod(shape[1:])
    out, groups = scales.shape
    group = math.ceil(row / groups)
    q = unpack_int4(packed, out * groups * group)
    weight = dequantize_groups(q, scales, row).reshape(shape).to(dtype)
    if "weight" in module._parameters:
        del module._parameters["weight"]
    module.register_buffer(PACKED, packed)
    module.register_buffer(GROUP_SCALE, scales)
    module.register_buffer("weight", weight, persistent=False)


def _int4_skip(name: str, module: nn.Module, shared: set[int]) -> str | None:
    if parametrize.is_parametrized(module):
        return "its weight is parametrized"
    weight = module._parameters.get("weight")
    if weight is None:
        return "it has no weight of its own"
    if id(weight) in shared:
        return "its weight is shared with another layer"
    return None


def int4_weights(model: nn.Module, group_size: int = DEFAULT_GROUP_SIZE) -> Quantized:
    """A copy of `model` whose Linear and Conv1d/2d/3d weights are stored as group-wise
    int4 (see `quantize_groups`, groups of at most `group_size` weights along each output's
    inputs) and computed with dequantized; everything else stays as it is. Notes say which
    layers used smaller groups and which were left float. `model` is not changed."""
    if isinstance(group_size, bool) or group_size < 1:
        raise ModelError(f"the int4 group size must be a whole number of at least 1, got "
                         f"{group_size!r}")
    seen: set[int] = set()
    shared: set[int] = set()
    for _, param in model.named_parameters(remove_duplicate=False):
        (shared if id(param) in seen else seen).add(id(param))
    copied = copy.deepcopy(model)
    layers: list[str] = []
    notes: list[str] = []
    small: list[str] = []
    originals = dict(model.named_modules())
    for name, module in copied.named_modules():
        if not isinstance(module, (nn.Linear, *_CONV)):
            continue
        why = _int4_skip(name, originals[name], shared)
        if why is not None:
            notes.append(f"{name or '(the model)'} left float: {why}")
            continue
        weight = module.weight.detach()
        row = math.prod(weight.shape[1:])
        group, _ = group_layout(row, group_size)
        q, scales = quantize_groups(weight.reshape(weight.shape[0], -1), group)
        _install_int4(module, pack_int4(q).to(weight.device), scales.to(weight.device),
                      weight.dtype, weight.shape)
        layers.append(name)
        if group != group_size:
            small.append(f"{name} {group}")
    if not layers:
        raise ModelError("the model has no nn.Linear or nn.Conv1d/2d/3d weight that int4 "
                         "weight-only quantization can store"
                         + (f" ({'; '.join(notes)})" if notes else ""))
    for name, kind in _float_left(copied):
        if kind == "MultiheadAttention":
            notes.append(f"{name} (MultiheadAttention): its packed q/k/v projection left "
                         "float; int4 weight-only stores Linear and Conv layers only (its "
                         "out_proj is a Linear)")
        elif kind not in ("Linear", "Conv1d", "Conv2d", "Conv3d"):
            notes.append(f"{name} ({kind}) left float: int4 weight-only stores Linear and "
                         "Conv layers only")
    if small:
        notes.insert(0, f"groups smaller than {group_size} where a row (an output's inputs) "
                     f"divides into fewer weights — weights per group: {', '.join(small)}")
    notes.insert(0, "storage only: no int4 kernel on CPU torch, the model computes with its "
                 "dequantized weights, so its latency is not measured")
    return Quantized(copied, tuple(layers), tuple(notes), f"int4 g={group_size}")


def int4_state(model: nn.Module) -> dict[str, Tensor]:
    """The tensors an int4 model's file holds: its state dict (packed weights and scales
    in place of the quantized layers' weights)."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def int4_file(quantized: Quantized) -> bytes:
    """The bytes of the int4 model's safetensors file: packed uint8 weights, float16
    group scales, the rest as is; the quantized layers' names in its metadata."""
    return _file(int4_state(quantized.model),
                 {"format": INT4_FORMAT, "layers": json.dumps(list(quantized.layers))})


def load_int4(source: bytes | Path, architecture: nn.Module) -> nn.Module:
    """The int4 model of a file `int4_file` wrote: a copy of `architecture` (any weights)
    with the file's layers stored as int4 and dequantized, and its other tensors loaded."""
    tensors, metadata = _read(source, INT4_FORMAT)
    model = copy.deepcopy(architecture)
    try:
        for name in json.loads(metadata.get("layers", "[]")):
            module = model.get_submodule(name)
            prefix = f"{name}." if name else ""
            weight = module.get_parameter("weight")
            _install_int4(module, tensors[prefix + PACKED].to(weight.device),
                          tensors[prefix + GROUP_SCALE].to(weight.device), weight.dtype,
                          weight.shape)
        model.load_state_dict(tensors)
    except (KeyError, AttributeError, RuntimeError, ValueError) as exc:
        raise ModelError(f"the int4 file does not fit this architecture ({exc}); load it "
                         "into the model it was made from") from exc
    return model


def same_outputs(a: nn.Module, b: nn.Module, example: Tensor) -> bool:
    """Whether two models give identical outputs on `example` (a saved file's check)."""
    with torch.no_grad():
        was = a.training, b.training
        a.eval()
        b.eval()
        try:
            return bool(torch.equal(a(example), b(example)))
        finally:
            a.train(was[0])
            b.train(was[1])


__all__ = [
    "DEFAULT_GROUP_SIZE",
    "EAGER",
    "FX",
    "INT4_FORMAT",
    "STATIC_FORMAT",
    "Quantized",
    "dequantize_groups",
    "group_layout",
    "has_static_int8",
    "int4_file",
    "int4_state",
    "int4_weights",
    "is_int4_layer",
    "is_static_quantized",
    "load_int4",
    "load_static_int8",
    "pack_int4",
    "quantize_groups",
    "same_outputs",
    "static_int8",
    "static_int8_file",
    "static_state",
    "unpack_int4",
]
