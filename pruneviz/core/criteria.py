"""Importance criteria: one signature, one registry.

A criterion scores the structures of one layer — single weights for unstructured and
N:M pruning, output filters/neurons or input channels for structured pruning — and
returns one score per structure; higher means more important, lower is pruned first.

Every criterion has the signature `(ScoreInputs) -> Tensor` and is listed in the
registry under a name; users add their own with `register_criterion`.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pruneviz.core.granularity import Granularity
from pruneviz.core.layers import _CONV, _CONV_T, PrunableLayer, eval_mode
from pruneviz.data.tensors import TensorData
from pruneviz.errors import DataError, ModelError, PlanError
from pruneviz.i18n import N_, _

# ---------------------------------------------------------------------------------------
# Structures: which weights each score covers
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Structures:
    """How the weights of one layer group into the structures a criterion scores.

    For unstructured and N:M granularities every weight is its own structure
    (`dim is None`). Otherwise the structures run along weight dimension `dim`: 0 for
    filters (output rows); 1 for input channels, numbered across a grouped convolution's
    `groups` as `group * per_group + position`. Nothing is stored per weight: `vectors`
    and `expand` reshape and broadcast.
    """

    granularity: Granularity
    shape: tuple[int, ...]
    count: int
    size: int
    dim: int | None
    groups: int = 1

    def vectors(self, tensor: Tensor) -> Tensor:
        """Rows of `tensor` (weight-shaped), one per structure: shape (count, size), each
        row in the weights' flat order."""
        if self.dim is None:
            return tensor.reshape(-1, 1)
        if self.dim == 0:
            return tensor.reshape(self.count, self.size)
        rows, per_group = self.shape[0], self.shape[1]
        grouped = tensor.reshape(self.groups, rows // self.groups, per_group, -1)
        return grouped.transpose(1, 2).reshape(self.count, self.size)

    def expand(self, keep: Tensor) -> Tensor:
        """A weight-shaped boolean mask from a per-structure keep vector (a broadcast
        view: no copy per weight)."""
        if self.dim is None:
            return keep.view(self.shape)
        trailing = [1] * (len(self.shape) - 1)
        if self.dim == 0:
            return keep.view(-1, *trailing).expand(self.shape)
        rows, per_group = self.shape[0], self.shape[1]
        by_group = keep.view(self.groups, per_group)
        if self.groups > 1:
            group_of_row = torch.arange(rows, device=keep.device) // (rows // self.groups)
            by_group = by_group[group_of_row]
        return by_group.view(by_group.shape[0], per_group, *trailing[1:]).expand(self.shape)


def structures_for(layer: PrunableLayer, granularity: Granularity) -> Structures:
    """The structures of `layer` at `granularity` (filters, channels or single weights)."""
    if not granularity.structured:
        n = layer.params
        return Structures(granularity, layer.shape, n, 1, None)
    dim = layer.out_dim if granularity is Granularity.FILTER else layer.in_dim
    count = layer.shape[0] if dim == 0 else layer.shape[1] * layer.groups
    return Structures(granularity, layer.shape, count, layer.params // count, dim,
                      1 if dim == 0 else layer.groups)


# ---------------------------------------------------------------------------------------
# Calibration statistics (for data-driven criteria), computed once per session
# ---------------------------------------------------------------------------------------


@dataclass
class CalibrationStats:
    """Per-layer statistics gathered on calibration batches with the original weights.

    `taylor[name]` is sum over batches of |w * dL/dw| (weight-shaped); `out_*`/`in_*`
    are per output/input channel: fraction of non-positive values (zeros after a ReLU)
    and mean of the positive part. `in_sq[name]` is, per input feature the weight
    multiplies, the sum of its squares over every calibration input (see `input_sq`):
    shape (in_features,) for a Linear, (in_channels, *kernel_size) for a convolution.
    `signed_in[name]` is, for a Linear, per calibration batch and input feature, the sum
    of w * dL/dw over the feature's column, signs kept (batches, in_features): what the
    measured importance of an attention head sums over its output-projection columns
    (heads.head_taylor).
    """

    taylor: dict[str, Tensor]
    out_zero_fraction: dict[str, Tensor]
    out_mean: dict[str, Tensor]
    in_zero_fraction: dict[str, Tensor]
    in_mean: dict[str, Tensor]
    batches: int
    in_sq: dict[str, Tensor] = field(default_factory=dict)
    signed_in: dict[str, Tensor] = field(default_factory=dict)


def _channel_dim(module: nn.Module, tensor: Tensor) -> int:
    return tensor.dim() - 1 if isinstance(module, nn.Linear) else 1


def _per_channel(tensor: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    moved = tensor.detach().movedim(dim, 0).reshape(tensor.shape[dim], -1)
    return (moved <= 0).float().mean(dim=1), moved.clamp(min=0).mean(dim=1)


def input_sq(module: nn.Module, x: Tensor) -> Tensor | None:
    """Per input feature of `module`'s weight, the sum of its squared inputs in batch `x`
    (float64), or None for a module whose weight is not applied to `x` this way.

    Linear: feature j is input column j, summed over every row (and token). Convolution:
    the weight at (channel c, kernel position p) multiplies column (c, p) of the unfolded
    input (`F.unfold`, im2col), i.e. the padded input at positions `o * stride + p *
    dilation` for every output position o; the sum of squares of that column is a
    convolution of the squared, padded input with an all-ones kernel the size of the
    output, its stride and dilation swapped — the same numbers without building the
    unfolded matrix (kernel-size times larger than the input).
    """
    x = x.detach()
    if isinstance(module, nn.Linear):
        return x.double().pow(2).reshape(-1, x.shape[-1]).sum(dim=0)
    if not isinstance(module, _CONV):
        return None
    kernel, stride, dilation = module.kernel_size, module.stride, module.dilation
    dims = len(kernel)
    if x.dim() == dims + 1:  # an unbatched input
        x = x.unsqueeze(0)
    pad = list(module._reversed_padding_repeated_twice)
    if any(pad):
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        x = F.pad(x, pad, mode=mode)
    batch, channels, *spatial = x.shape
    out = [(spatial[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1
           for i in range(dims)]
    squares = x.float().pow(2).reshape(batch * channels, 1, *spatial)
    ones = torch.ones(1, 1, *out, dtype=squares.dtype, device=squares.device)
    conv = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
    sums = conv(squares, ones, stride=dilation, dilation=stride)
    index: tuple[Any, ...] = (..., *(slice(0, k) for k in kernel))
    sums = sums[index]
    return sums.double().reshape(batch, channels, *kernel).sum(dim=0)


def collect_calibration_stats(
    model: nn.Module, layers: list[PrunableLayer], data: TensorData, max_batches: int = 4,
    batch_size: int = 64,
) -> CalibrationStats:
    """Run calibration batches forward and backward; gather Taylor and activation stats.

    Only this thread's passes are counted: the hooks see every pass over `model`, and
    another thread may run it meanwhile (a background measurement, in inference mode,
    whose inference tensors this pass could not then add to in place)."""
    if len(data) == 0:
        raise DataError("the calibration data is empty; data-driven criteria need samples")
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    sums: dict[str, list[Tensor]] = {}
    squares: dict[str, Tensor] = {}
    handles = []
    calibrating = threading.get_ident()

    def add(key: str, zero: Tensor, mean: Tensor) -> None:
        if key in sums:
            sums[key][0] += zero
            sums[key][1] += mean
        else:
            sums[key] = [zero.clone(), mean.clone()]

    def out_hook(name: str, channel_module: nn.Module) -> Any:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            if isinstance(output, Tensor) and threading.get_ident() == calibrating:
                add("out:" + name, *_per_channel(output, _channel_dim(channel_module, output)))

        return hook

    def in_hook(name: str) -> Any:
        def hook(module: nn.Module, inputs: tuple[Any, ...]) -> None:
            if inputs and isinstance(inputs[0], Tensor) and \
                    threading.get_ident() == calibrating:
                add("in:" + name, *_per_channel(inputs[0], _channel_dim(module, inputs[0])))
                sq = input_sq(module, inputs[0])
                if sq is not None:
                    squares[name] = squares[name] + sq if name in squares else sq

        return hook

    for layer in layers:
        module = modules[layer.module_name]
        if not isinstance(module, (nn.Linear, *_CONV, *_CONV_T)):
            continue
        watched = modules[layer.bn] if layer.bn else module
        handles.append(watched.register_forward_hook(out_hook(layer.name, module)))
        handles.append(module.register_forward_pre_hook(in_hook(layer.name)))

    taylor = {layer.name: torch.zeros(layer.shape, device=params[layer.weight].device)
              for layer in layers}
    requires = {name: p.requires_grad for name, p in params.items()}
    linears = {layer.name for layer in layers
               if isinstance(modules[layer.module_name], nn.Linear) and len(layer.shape) == 2}
    signed: dict[str, list[Tensor]] = {name: [] for name in linears}
    batches = 0
    try:
        with eval_mode(model), torch.enable_grad():
            for name in requires:
                params[name].requires_grad_(True)
            for x, y in data.batches(batch_size):
                if batches >= max_batches:
                    break
                model.zero_grad(set_to_none=True)
                loss = data.task.loss(model(x), y)
                loss.backward()  # type: ignore[no-untyped-call]
                for layer in layers:
                    weight = params[layer.weight]
                    if weight.grad is not None:
                        product = weight.detach() * weight.grad
                        taylor[layer.name] += product.abs()
                        if layer.name in linears:
                            signed[layer.name].append(product.sum(dim=0))
                batches += 1
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
        for name, flag in requires.items():
            params[name].requires_grad_(flag)

    def averaged(prefix: str, which: int) -> dict[str, Tensor]:
        return {
            k[len(prefix):]: v[which] / batches for k, v in sums.items() if k.startswith(prefix)
        }

    return CalibrationStats(
        taylor, averaged("out:", 0), averaged("out:", 1), averaged("in:", 0), averaged("in:", 1),
        batches, squares, {name: torch.stack(rows) for name, rows in signed.items() if rows},
    )


# ---------------------------------------------------------------------------------------
# Measured ablation (for whole attention heads)
# ---------------------------------------------------------------------------------------

# Calibration batches an ablation measures on: each costs one forward per unit.
ABLATION_BATCHES = 4

# One slice a unit's mask zeroes: (parameter name, dimension, indices along it).
Zeroed = tuple[str, int, Tensor]


def ablation_scores(
    model: nn.Module, units: Sequence[Sequence[Zeroed]], data: TensorData,
    max_batches: int = ABLATION_BATCHES, batch_size: int = 64,
) -> Tensor:
    """Per unit, the mean over calibration batches of loss(unit masked) - loss(unmasked),
    every other unit kept (float64, shape (len(units),)).

    Unit u is masked by zeroing its slices `units[u]` in place, running the batch forward
    and putting the values back (restored even if the forward fails). The unmasked loss of
    a batch is computed once and reused for every unit, so the cost is
    `batches * (1 + len(units))` forwards, under `torch.inference_mode` (no autograd).
    The caller makes sure nothing else runs `model` meanwhile.
    """
    if len(data) == 0:
        raise DataError("the calibration data is empty; data-driven criteria need samples")
    params = dict(model.named_parameters())
    increases = torch.zeros(len(units), dtype=torch.float64)
    batches = 0
    with eval_mode(model):
        for x, y in data.batches(batch_size):
            if batches >= max_batches:
                break
            with torch.inference_mode():
                base = float(data.task.loss(model(x), y))
            for u, slices in enumerate(units):
                saved = []
                try:
                    with torch.no_grad():
                        for name, dim, idx in slices:
                            p = params[name]
                            index = idx.to(p.device)
                            saved.append((p, dim, index, p.index_select(dim, index)))
                            p.index_fill_(dim, index, 0.0)
                    with torch.inference_mode():
                        increases[u] += float(data.task.loss(model(x), y)) - base
                finally:
                    with torch.no_grad():
                        for p, dim, index, values in reversed(saved):
                            p.index_copy_(dim, index, values)
            batches += 1
    return increases / max(1, batches)


# ---------------------------------------------------------------------------------------
# The criterion signature and registry
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreInputs:
    """Everything a criterion may look at for one layer.

    `weight` is the layer's original (unpruned) weight; `stats()` runs the calibration
    data once per session and returns the cached CalibrationStats; `bn_weight` is the
    scale (gamma) of the BatchNorm fed by this layer's outputs, if there is one.
    """

    layer: PrunableLayer
    weight: Tensor
    structures: Structures
    stats: Callable[[], CalibrationStats]
    bn_weight: Tensor | None
    seed: int


CriterionFn = Callable[[ScoreInputs], Tensor]


class Comparison(StrEnum):
    """Which weights a single weight's score competes with (unstructured granularity).

    LAYER: every weight of the layer, one ranking (and one score threshold) per layer.
    ROW: only the weights of its own output row (the filter or neuron it feeds), so a
    sparsity removes that share of every row; no single threshold applies to the layer.
    Structures (filters, channels) always compete within their layer; N:M runs lie
    inside one row either way.
    """

    LAYER = "layer"
    ROW = "row"


@dataclass(frozen=True)
class CriterionSpec:
    """A registered criterion: its function, what it can score, and what its single
    weights are compared with."""

    name: str
    fn: CriterionFn
    unstructured: bool
    needs_data: bool
    description: str
    comparison: Comparison = Comparison.LAYER


_REGISTRY: dict[str, CriterionSpec] = {}


def register_criterion(
    name: str, fn: CriterionFn, *, unstructured: bool, needs_data: bool = False,
    description: str | None = None, comparison: Comparison | str = Comparison.LAYER,
) -> CriterionSpec:
    """Add a criterion to the registry (or replace one of the same name).

    `unstructured=True` if it can score single weights (not only whole structures);
    `needs_data=True` if it uses calibration statistics; `comparison` says which weights
    a single weight competes with (see Comparison).
    """
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"criterion name must be alphanumeric/underscore, got {name!r}")
    try:
        compared = Comparison(comparison)
    except ValueError:
        allowed = ", ".join(c.value for c in Comparison)
        raise ValueError(f"comparison must be one of {allowed}, got {comparison!r}") from None
    doc = description or (fn.__doc__ or name).strip().splitlines()[0]
    spec = CriterionSpec(name, fn, unstructured, needs_data, doc, compared)
    _REGISTRY[name] = spec
    return spec


def criterion_names() -> list[str]:
    """Names of every registered criterion, in registration order."""
    return list(_REGISTRY)


def get_criterion(name: str) -> CriterionSpec:
    """The registered criterion called `name`; the error lists the allowed names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise PlanError(
            f"unknown criterion {name!r}; allowed: {', '.join(_REGISTRY)}"
        ) from None


# what the app shows for a criterion whose id is a word (l1, l2, taylor, wanda, lsh: as is)
CRITERION_NAMES = {"random": N_("random"), "apoz": N_("apoz"), "activation": N_("activation"),
                   "bn_scale": N_("bn_scale"), "fpgm": N_("fpgm"), "ablation": N_("ablation")}


def criterion_label(name: str) -> str:
    """A criterion's name as the app shows it, in the current language (its id in
    English)."""
    return _(CRITERION_NAMES[name]) if name in CRITERION_NAMES else name


def compares_rows(name: str, granularity: Granularity) -> bool:
    """Whether criterion `name` at `granularity` ranks each output row on its own (so a
    layer has no one score threshold)."""
    return not granularity.structured and get_criterion(name).comparison is Comparison.ROW


def iter_criteria(granularity: Granularity) -> Iterator[CriterionSpec]:
    """The criteria that can score structures of `granularity`."""
    for spec in _REGISTRY.values():
        if granularity.structured or spec.unstructured:
            yield spec


def compute_scores(name: str, inputs: ScoreInputs) -> Tensor:
    """Score the structures of one layer with criterion `name`; checks what comes back."""
    spec = get_criterion(name)
    granularity = inputs.structures.granularity
    if not granularity.structured and not spec.unstructured:
        usable = ", ".join(s.name for s in iter_criteria(granularity))
        raise PlanError(
            f"layer {inputs.layer.name!r}: criterion {name!r} scores whole structures and "
            f"cannot rank single weights ({granularity.value}); use one of {usable}, or a "
            "filter/channel granularity"
        )
    scores = spec.fn(inputs)
    if scores.shape != (inputs.structures.count,):
        raise ModelError(
            f"criterion {name!r} returned scores of shape {tuple(scores.shape)} for layer "
            f"{inputs.layer.name!r}; expected ({inputs.structures.count},)"
        )
    # on the weight's device (a criterion may score on the CPU: random, a user's own)
    scores = scores.detach().float().to(inputs.weight.device)
    if not torch.isfinite(scores).all():
        raise ModelError(
            f"criterion {name!r} gave non-finite scores for layer {inputs.layer.name!r}; "
            "check the calibration data and the layer's weights"
        )
    return scores


# ---------------------------------------------------------------------------------------
# The built-in criteria
# ---------------------------------------------------------------------------------------


def l1_norm(inputs: ScoreInputs) -> Tensor:
    """Magnitude: |w| per weight, L1 norm per structure (Han et al. 2015; Li et al. 2017)."""
    return inputs.structures.vectors(inputs.weight).abs().sum(dim=1)


def l2_norm(inputs: ScoreInputs) -> Tensor:
    """Magnitude: |w| per weight, L2 norm per structure (He et al. 2018, soft filter pruning)."""
    return inputs.structures.vectors(inputs.weight).pow(2).sum(dim=1).sqrt()


def random_scores(inputs: ScoreInputs) -> Tensor:
    """Random scores, seeded per layer: the baseline every pruning paper compares against."""
    seed = (inputs.seed * 1_000_003 + zlib.crc32(inputs.layer.name.encode())) % (2**63)
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(inputs.structures.count, generator=generator)


def taylor(inputs: ScoreInputs) -> Tensor:
    """First-order Taylor: sum of |w * dL/dw| per structure (Molchanov et al. 2019)."""
    grad_w = inputs.stats().taylor[inputs.layer.name]
    return inputs.structures.vectors(grad_w).sum(dim=1)


def ablation(inputs: ScoreInputs) -> Tensor:
    """Measured ablation: the calibration loss increase with one attention head alone masked.

    Per head unit, loss(head masked) - loss(unmasked) on the calibration batches, every
    other head kept (Michel et al. 2019, "Are Sixteen Heads Really Better than One?").
    Exact, not a first-order estimate: where the calibration targets are the unpruned
    model's own outputs (an embedding model regressed onto its own hidden states, with no
    labels), the loss is at its minimum, every gradient is 0 and `taylor` scores all 0;
    ablation still measures what removing each head costs. It scores the head units of
    attention groups (separate or fused q/k/v, grouped-query units, nn.MultiheadAttention;
    `groups.CoupledGroups.scores` runs it through `ablation_scores`): one forward per head
    per calibration batch (at most ABLATION_BATCHES batches, the unmasked forward reused),
    so it costs `ABLATION_BATCHES * (heads + 1)` forwards per attention layer. A higher
    score is a more important head; a negative one, a head whose removal lowers the loss.
    Other layers (filters, neurons, channels: often hundreds or thousands per layer) are
    not ablated one by one: this function is reached only for them and refuses them.
    """
    raise PlanError(
        f"layer {inputs.layer.name!r}: criterion 'ablation' measures whole attention heads "
        "(one masked forward per head and calibration batch) and does not score single "
        "filters, neurons or channels; use taylor (measured gradients) or l2 for this layer"
    )


def _activation_stat(inputs: ScoreInputs, which: str) -> Tensor:
    stats = inputs.stats()
    structures = inputs.structures
    layer = inputs.layer
    is_output = structures.dim == layer.out_dim
    table = {
        ("zero", True): stats.out_zero_fraction, ("mean", True): stats.out_mean,
        ("zero", False): stats.in_zero_fraction, ("mean", False): stats.in_mean,
    }[(which, is_output)]
    if layer.name not in table:
        raise PlanError(
            f"layer {layer.name!r} ({layer.type}): activation-based criteria need the layer's "
            "per-channel inputs and outputs, which are not observable for recurrent or "
            "attention weight matrices; use l1, l2, taylor, fpgm, lsh or random"
        )
    values = table[layer.name]
    if values.shape[0] != structures.count:
        raise PlanError(
            f"layer {layer.name!r}: its activations have {values.shape[0]} channels but the "
            f"layer has {structures.count} structures; activation criteria cannot be used here"
        )
    return values


def apoz(inputs: ScoreInputs) -> Tensor:
    """1 - APoZ, the average percentage of zeros after ReLU per channel (Hu et al. 2016)."""
    return 1.0 - _activation_stat(inputs, "zero")


def mean_activation(inputs: ScoreInputs) -> Tensor:
    """Mean post-ReLU activation per channel (Molchanov et al. 2017, 'mean activation')."""
    return _activation_stat(inputs, "mean")


def bn_scale(inputs: ScoreInputs) -> Tensor:
    """|gamma| of the BatchNorm after each filter (Liu et al. 2017, Network Slimming)."""
    layer = inputs.layer
    if inputs.structures.granularity is not Granularity.FILTER:
        raise PlanError(
            f"layer {layer.name!r}: bn_scale ranks output filters by the BatchNorm that "
            "follows them; use it with granularity 'filter'"
        )
    if inputs.bn_weight is None:
        raise PlanError(
            f"layer {layer.name!r} is not followed by a BatchNorm, so bn_scale has nothing "
            "to rank; use l1, l2, fpgm, lsh, taylor or apoz for this layer"
        )
    return inputs.bn_weight.detach().abs().float()


def wanda(inputs: ScoreInputs) -> Tensor:
    """|w| times the L2 norm of its input over the calibration data, compared within each
    output row (Sun et al. 2023, Wanda); summed per structure."""
    layer = inputs.layer
    sq = inputs.stats().in_sq.get(layer.name)
    if sq is None or layer.out_dim != 0:
        raise PlanError(
            f"layer {layer.name!r} ({layer.type}): wanda weighs each weight by the norm of "
            "the input it multiplies, which is observable for Linear and Conv1d/2d/3d "
            "weights only (not recurrent, attention-projection or transposed-convolution "
            "ones); use l1, l2, taylor, fpgm, lsh or random for this layer"
        )
    weight = inputs.weight
    shape = weight.shape
    norms = sq.sqrt().to(device=weight.device, dtype=weight.dtype)
    expected = (shape[1] * layer.groups, *shape[2:])
    if tuple(norms.shape) != expected:
        raise PlanError(
            f"layer {layer.name!r}: its calibration inputs have {tuple(norms.shape)} "
            f"features but its weight {tuple(shape)} reads {expected}; wanda cannot be "
            "used here"
        )
    if layer.groups > 1:  # each group of rows reads its own slice of the input channels
        per_group = norms.view(layer.groups, 1, *shape[1:])
        norms = per_group.expand(layer.groups, shape[0] // layer.groups, *shape[1:])
    scores = weight.abs() * norms.reshape(-1, *shape[1:]).expand(shape)
    return inputs.structures.vectors(scores).sum(dim=1)


def fpgm(inputs: ScoreInputs) -> Tensor:
    """Distance to the other filters, i.e. to the geometric median (He et al. 2019, FPGM)."""
    vectors = inputs.structures.vectors(inputs.weight).double()
    return torch.cdist(vectors, vectors).sum(dim=1).float()


LSH_BITS = 24
LSH_TABLES = 4


def lsh_redundancy(inputs: ScoreInputs) -> Tensor:
    """Near-duplicate structures found by SimHash (Charikar 2002) score low; see `lsh_scores`."""
    vectors = inputs.structures.vectors(inputs.weight)
    return lsh_scores(vectors, seed=inputs.seed + zlib.crc32(inputs.layer.name.encode()))


def simhash_buckets(
    vectors: Tensor, bits: int = LSH_BITS, tables: int = LSH_TABLES, seed: int = 0
) -> Tensor:
    """Group rows of `vectors` into near-duplicate buckets with random-hyperplane hashing.

    Each of `tables` hash tables draws `bits` random hyperplanes; a row's code in a table
    is the side of each hyperplane it lies on. Two rows at angle theta share a code with
    probability (1 - theta/pi)^bits, so near-parallel rows collide and unrelated ones do
    not. Rows that share a code in any table are joined (union-find). Returns, per row,
    the id of its bucket (the smallest row index in it).
    """
    count, dim = vectors.shape
    generator = torch.Generator().manual_seed(seed % (2**63))
    planes = torch.randn(tables, bits, dim, generator=generator, dtype=torch.float64)
    signs = torch.einsum("tbd,nd->tnb", planes.to(vectors.device), vectors.double()) > 0
    weights = 2 ** torch.arange(bits, dtype=torch.int64, device=vectors.device)
    codes = (signs.long() * weights).sum(dim=2)  # (tables, count)
    parent = list(range(count))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for t in range(tables):
        first_with_code: dict[int, int] = {}
        for i, code in enumerate(codes[t].tolist()):
            j = first_with_code.setdefault(code, i)
            if j != i:
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    return torch.tensor([find(i) for i in range(count)], dtype=torch.int64,
                        device=vectors.device)


def lsh_scores(vectors: Tensor, seed: int = 0) -> Tensor:
    """Scores in [0, 1]: the strongest row of each SimHash bucket scores above 0.5
    (by its norm relative to the largest), every other member of a bucket below 0.5.

    So a threshold of 0.5 prunes exactly the near-duplicates, and a sparsity fraction
    prunes duplicates first, weakest first, before touching any bucket's representative.
    """
    buckets = simhash_buckets(vectors, seed=seed)
    norms = vectors.double().norm(dim=1)
    top = float(norms.max()) if norms.numel() else 0.0
    relative = norms / top if top > 0 else torch.zeros_like(norms)
    keeper = torch.zeros(len(norms), dtype=torch.bool, device=norms.device)
    best: dict[int, int] = {}
    for i, bucket in enumerate(buckets.tolist()):
        if bucket not in best or norms[i] > norms[best[bucket]]:
            best[bucket] = i
    keeper[list(best.values())] = True
    scores = torch.where(keeper, 0.5 + 0.5 * relative, 0.499 * relative)
    return scores.float()


for _name, _fn, _unstructured, _data in (
    ("l1", l1_norm, True, False),
    ("l2", l2_norm, True, False),
    ("random", random_scores, True, False),
    ("taylor", taylor, True, True),
    ("apoz", apoz, False, True),
    ("activation", mean_activation, False, True),
    ("bn_scale", bn_scale, False, False),
    ("fpgm", fpgm, False, False),
    ("lsh", lsh_redundancy, False, False),
):
    register_criterion(_name, _fn, unstructured=_unstructured, needs_data=_data)
register_criterion("wanda", wanda, unstructured=True, needs_data=True,
                   comparison=Comparison.ROW)
register_criterion("ablation", ablation, unstructured=False, needs_data=True)

__all__ = [
    "ABLATION_BATCHES", "CalibrationStats", "Comparison", "CriterionFn", "CriterionSpec",
    "ScoreInputs", "Structures", "Zeroed", "ablation_scores", "collect_calibration_stats",
    "CRITERION_NAMES", "compares_rows", "compute_scores", "criterion_label",
    "criterion_names", "get_criterion", "input_sq",
    "iter_criteria", "lsh_scores", "register_criterion", "simhash_buckets", "structures_for",
]
