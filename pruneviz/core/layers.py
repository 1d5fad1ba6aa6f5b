"""Model introspection: the prunable weights of any nn.Module, their shapes and MACs.

A prunable layer is one weight matrix/tensor that pruning decisions apply to:
Linear, Conv1d/2d/3d (grouped and depthwise too), ConvTranspose1d/2d/3d, the weight
matrices of RNN/LSTM/GRU, and the input projection of MultiheadAttention (its output
projection is a Linear and is found as such).

Names: a module with a single prunable weight is named like the module (`conv1`); a
module with several is named `module.param` (`lstm.weight_ih_l0`).

MACs are counted by running one example sample through the model with forward hooks:
a weight of `n` elements used at `r` positions (output pixels of a conv, time steps of
an RNN, tokens of a Linear over a sequence) costs `n * r` multiply-accumulates.
Bias additions and non-weight operations (pooling, activations, attention scores) are
not counted: the totals are the model's *weight* MACs, the part pruning can remove.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pruneviz.errors import ModelError


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put a model in eval mode and restore its previous train/eval state afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class PrunableLayer:
    """One prunable weight tensor and what is known about it.

    `out_dim`/`in_dim` are the weight dimensions that index output structures
    (filters, neurons) and input structures (channels, features); `groups` is the
    convolution's group count (1 elsewhere). `bias` and `bn` name the tensors fed by
    each output structure, zeroed with it so that a masked structure outputs nothing.
    """

    name: str
    module_name: str
    param_name: str
    type: str
    shape: tuple[int, ...]
    out_dim: int
    in_dim: int
    groups: int
    bias: str | None
    bn: str | None
    macs: int
    macs_share: float

    @property
    def params(self) -> int:
        """Number of elements of the weight."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def weight(self) -> str:
        """Fully qualified parameter name of the weight (`conv1.weight`)."""
        return f"{self.module_name}.{self.param_name}" if self.module_name else self.param_name

    @property
    def out_structures(self) -> int:
        """Number of output structures (filters / neurons / matrix rows)."""
        full = self.shape[self.out_dim]
        return full * self.groups if self.out_dim == 1 else full

    @property
    def in_structures(self) -> int:
        """Number of input structures (input channels / features)."""
        full = self.shape[self.in_dim]
        return full * self.groups if self.in_dim == 1 else full


@dataclass(frozen=True)
class _Candidate:
    module_name: str
    module: nn.Module
    param_name: str
    out_dim: int
    in_dim: int
    groups: int
    bias: str | None


def _qualified(module_name: str, param: str) -> str:
    return f"{module_name}.{param}" if module_name else param


def _candidates(model: nn.Module) -> Iterator[_Candidate]:
    for mname, module in model.named_modules():
        if isinstance(module, (nn.Linear, *_CONV)) and isinstance(module.weight, nn.Parameter):
            groups = int(getattr(module, "groups", 1))
            bias = _qualified(mname, "bias") if module.bias is not None else None
            yield _Candidate(mname, module, "weight", 0, 1, groups, bias)
        elif isinstance(module, _CONV_T):
            bias = _qualified(mname, "bias") if module.bias is not None else None
            yield _Candidate(mname, module, "weight", 1, 0, int(module.groups), bias)
        elif isinstance(module, nn.RNNBase):
            for pname, _ in module.named_parameters(recurse=False):
                if pname.startswith("weight_"):
                    bias_name = pname.replace("weight_", "bias_", 1)
                    has_bias = hasattr(module, bias_name) and bias_name != pname
                    bias = _qualified(mname, bias_name) if has_bias else None
                    if pname.startswith("weight_hr"):
                        bias = None
                    yield _Candidate(mname, module, pname, 0, 1, 1, bias)
        elif isinstance(module, nn.MultiheadAttention):
            for pname in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
                if getattr(module, pname, None) is not None:
                    bias = None
                    if pname == "in_proj_weight" and module.in_proj_bias is not None:
                        bias = _qualified(mname, "in_proj_bias")
                    yield _Candidate(mname, module, pname, 0, 1, 1, bias)


def output_tensors(value: Any) -> list[Tensor]:
    """Every tensor in a model's (nested) output or inputs: a tensor, or tuples, lists and
    dicts of them, in order."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in output_tensors(v)]
    if isinstance(value, tuple | list):
        return [t for v in value for t in output_tensors(v)]
    return []


def _first_tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, tuple | list) and value:
        return _first_tensor(value[0])
    if isinstance(value, nn.utils.rnn.PackedSequence):
        return value.data
    return None


def _macs(cand: _Candidate, inputs: tuple[Any, ...], output: Any) -> int:
    """Multiply-accumulates of this weight in one forward pass (batch of one)."""
    numel = int(getattr(cand.module, cand.param_name).numel())
    if cand.param_name == "in_proj_weight":
        return numel // 3 * _attention_rows(cand, inputs) if len(inputs) >= 2 else 0
    return numel * _positions(cand, inputs, output)


def _attention_rows(cand: _Candidate, inputs: tuple[Any, ...]) -> int:
    # rows [0:E] of in_proj_weight project the queries, rows [E:3E] the keys and values
    query, key = inputs[0], inputs[1]
    batch_first = bool(getattr(cand.module, "batch_first", False))
    seq_dim = 1 if batch_first and query.dim() == 3 else 0
    return int(query.shape[seq_dim]) + 2 * int(key.shape[seq_dim])


def _positions(cand: _Candidate, inputs: tuple[Any, ...], output: Any) -> int:
    """How many times each weight element is used in one forward pass (batch of one)."""
    module = cand.module
    out = _first_tensor(output)
    inp = _first_tensor(inputs)
    if isinstance(module, nn.Linear) and out is not None:
        return out.numel() // module.out_features
    if isinstance(module, _CONV) and out is not None:
        return out.numel() // module.out_channels
    if isinstance(module, _CONV_T) and inp is not None:
        return inp.numel() // module.in_channels
    if isinstance(module, nn.RNNBase) and inp is not None:
        if isinstance(inputs[0], nn.utils.rnn.PackedSequence):
            return int(inputs[0].data.shape[0])
        if inp.dim() == 2:
            return int(inp.shape[0])
        return int(inp.shape[1] if module.batch_first else inp.shape[0])
    if isinstance(module, nn.MultiheadAttention) and len(inputs) >= 3:
        query, key = inputs[0], inputs[1]
        seq_dim = 1 if module.batch_first and query.dim() == 3 else 0
        q_len, k_len = int(query.shape[seq_dim]), int(key.shape[seq_dim])
        return q_len if cand.param_name == "q_proj_weight" else k_len
    return 0


def _trace(
    model: nn.Module, example: Tensor | tuple[Tensor, ...], cands: list[_Candidate]
) -> tuple[dict[str, int], dict[str, str]]:
    """Run one sample with hooks: MACs per weight, and conv/linear -> following BN."""
    macs: dict[str, int] = {}
    produced_by: dict[int, tuple[Tensor, str]] = {}
    bn_of: dict[str, str] = {}
    handles = []
    by_module: dict[int, list[_Candidate]] = {}
    for cand in cands:
        by_module.setdefault(id(cand.module), []).append(cand)

    def weight_hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        for cand in by_module[id(module)]:
            key = _qualified(cand.module_name, cand.param_name)
            macs[key] = macs.get(key, 0) + _macs(cand, inputs, output)
            out = _first_tensor(output)
            if out is not None and len(by_module[id(module)]) == 1:
                produced_by[id(out)] = (out, cand.module_name)
        if isinstance(module, nn.MultiheadAttention) and inputs:
            # MultiheadAttention applies out_proj's weight functionally, so the Linear's own
            # hook never fires: count its MACs here (one row of outputs per query token).
            for cand in by_module.get(id(module.out_proj), []):
                query = inputs[0]
                seq_dim = 1 if module.batch_first and query.dim() == 3 else 0
                key = _qualified(cand.module_name, cand.param_name)
                macs[key] = macs.get(key, 0) + module.out_proj.weight.numel() * int(
                    query.shape[seq_dim]
                )

    def bn_hook(name: str) -> Any:
        def hook(module: nn.Module, inputs: tuple[Any, ...]) -> None:
            inp = _first_tensor(inputs)
            if inp is not None and id(inp) in produced_by and produced_by[id(inp)][0] is inp:
                bn_of.setdefault(produced_by[id(inp)][1], name)

        return hook

    for module_id in by_module:
        module = by_module[module_id][0].module
        handles.append(module.register_forward_hook(weight_hook))
    for name, module in model.named_modules():
        if isinstance(module, _BN) and module.affine:
            handles.append(module.register_forward_pre_hook(bn_hook(name)))
    try:
        with eval_mode(model), torch.no_grad():
            if isinstance(example, tuple):
                model(*example)
            else:
                model(example)
    except Exception as exc:
        raise ModelError(
            f"the model failed on the example input of shape {_shape_of(example)}: "
            f"{type(exc).__name__}: {exc}; check the input shape the model expects"
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
    return macs, bn_of


def _shape_of(example: Tensor | tuple[Tensor, ...]) -> str:
    if isinstance(example, tuple):
        return ", ".join(str(tuple(t.shape)) for t in example)
    return str(tuple(example.shape))


def _first_sample(example: Tensor | tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
    if isinstance(example, tuple):
        return tuple(t[:1] for t in example)
    return example[:1]


def find_prunable_layers(
    model: nn.Module, example_input: Tensor | tuple[Tensor, ...]
) -> list[PrunableLayer]:
    """Every prunable weight of `model`, in module order, with shapes and MACs per sample.

    `example_input` is a batch (batch dimension first) of what the model takes; only its
    first sample is run.
    """
    cands = list(_candidates(model))
    if not cands:
        raise ModelError(
            "the model has no prunable layers (Linear, Conv, ConvTranspose, RNN/LSTM/GRU or "
            "MultiheadAttention); nothing can be pruned"
        )
    per_module = {c.module_name: 0 for c in cands}
    for c in cands:
        per_module[c.module_name] += 1
    macs, bn_of = _trace(model, _first_sample(example_input), cands)
    layers: list[PrunableLayer] = []
    for c in cands:
        weight = getattr(c.module, c.param_name)
        key = _qualified(c.module_name, c.param_name)
        name = c.module_name if per_module[c.module_name] == 1 and c.module_name else key
        layers.append(
            PrunableLayer(
                name=name,
                module_name=c.module_name,
                param_name=c.param_name,
                type=type(c.module).__name__,
                shape=tuple(int(d) for d in weight.shape),
                out_dim=c.out_dim,
                in_dim=c.in_dim,
                groups=c.groups,
                bias=c.bias,
                bn=bn_of.get(c.module_name) if c.param_name == "weight" else None,
                macs=macs.get(key, 0),
                macs_share=0.0,
            )
        )
    total = sum(layer.macs for layer in layers)
    return [
        PrunableLayer(**{**layer.__dict__, "macs_share": layer.macs / total if total else 0.0})
        for layer in layers
    ]


def model_device(model: nn.Module, default: torch.device | None = None) -> torch.device:
    """The device of `model`'s first parameter (or buffer): where its inputs must be;
    `default` (else the CPU) for a model with neither."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return default if default is not None else torch.device("cpu")


def fingerprint(model: nn.Module) -> str:
    """A short hash of the model's parameter and buffer names, shapes and dtypes."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
    return digest.hexdigest()[:16]


def values_key(tensors: Mapping[str, Tensor]) -> str:
    """A short hash of the tensors' names and values, bit for bit (`fingerprint` hashes
    the architecture; this, the weights)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]


def check_finite(model: nn.Module) -> None:
    """Refuse a model whose parameters or buffers hold NaN or infinite values."""
    bad = []
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            nans = int(torch.isnan(tensor).sum())
            infs = int(torch.isinf(tensor).sum())
            if nans or infs:
                bad.append(f"{name} ({nans} NaN, {infs} inf)")
    if bad:
        raise ModelError(
            "the model has non-finite weights: " + ", ".join(bad[:5])
            + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            + "; pruning ranks weights by value, so it cannot work on these. Retrain or "
            "re-export the model, or load a checkpoint saved before the values diverged"
        )


@dataclass(frozen=True)
class SummaryRow:
    """One row of a torchinfo model summary: a module, its output shape, params and MACs."""

    name: str
    type: str
    depth: int
    output_shape: tuple[int, ...]
    params: int
    macs: int
    leaf: bool


def model_summary(
    model: nn.Module, example_input: Tensor | tuple[Tensor, ...]
) -> list[SummaryRow]:
    """A torchinfo summary of `model` on one sample, one row per module (root excluded).

    MACs are torchinfo's: for Conv and Linear they include the bias additions, so they
    are slightly above the weight MACs of `find_prunable_layers`.
    """
    import torchinfo
    from torchinfo.torchinfo import clear_cached_forward_pass

    names = {id(module): name for name, module in model.named_modules()}
    sample = _first_sample(example_input)
    try:
        with eval_mode(model):
            stats = torchinfo.summary(
                model,
                input_data=list(sample) if isinstance(sample, tuple) else sample,
                verbose=0,
                depth=8,
            )
    except Exception as exc:
        raise ModelError(f"torchinfo could not summarise the model: {exc}") from exc
    finally:
        # torchinfo keeps the last summary of each model class in a module-level dict, and
        # with it the model: a closed tab's copy would stay in memory for good.
        clear_cached_forward_pass()
    rows = []
    for info in stats.summary_list:
        name = names.get(id(info.module), info.var_name)
        if not name:
            continue
        shape = info.output_size if isinstance(info.output_size, list) else []
        rows.append(
            SummaryRow(
                name=name,
                type=info.class_name,
                depth=int(info.depth),
                output_shape=tuple(int(d) for d in shape if isinstance(d, int)),
                params=int(info.num_params),
                macs=int(info.macs),
                leaf=bool(info.is_leaf_layer),
            )
        )
    return rows
