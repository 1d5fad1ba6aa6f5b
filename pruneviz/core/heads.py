"""Attention heads written the common way, found and removed as whole heads.

pruneviz recognises these attention styles (besides `nn.MultiheadAttention`, which
coupling.py handles with `SlimAttention`):

- **Separate q/k/v projections**: a module with three Linear children named
  `query`/`key`/`value` (Hugging Face BERT, RoBERTa, MiniLM, ELECTRA), `q_proj`/`k_proj`/
  `v_proj` (Llama, Mistral, Qwen, OPT, Phi), `q`/`k`/`v`, `to_q`/`to_k`/`to_v` or
  `wq`/`wk`/`wv`, and an output projection: a Linear child named `o_proj`, `out_proj`,
  `proj`, `dense`, `o`, `wo`, `c_proj` or `to_out`, or — Hugging Face BERT's layout — the
  Linear `output.dense` next to the attention module (`attention.self` +
  `attention.output.dense`).
- **One fused qkv projection** laid out as [q | k | v] (timm ViT `attn.qkv` + `attn.proj`,
  also `Wqkv`): rows `part * inner + head * head_dim + j`.
- **Grouped-query attention** (fewer key/value heads than query heads, Hugging Face's
  `repeat_kv` order: query head h reads key/value head h // (heads / kv_heads)): one unit is
  a key/value head together with the query heads that read it.

The head count comes from the module's own attributes — `num_heads`, `num_attention_heads`,
`n_heads`, `n_head`; `num_key_value_heads`, `num_kv_heads`, `n_kv_heads`; `head_dim`,
`attention_head_size`, `head_size` — or, where it has none, from tracing the forward: the
reshape of the query projection's output into (..., heads, head_dim). Each group's note says
which (the UI and CLI show it).

One head is one unit: its rows of the q, k and v projections (weights and biases) and its
columns of the output projection. Masked, the head's queries and keys are 0, so its scores
are all equal (whatever mask is added to them), and its values are 0, so it adds exactly 0
to the output projection's input: masking a head computes what removing it does. Removing
cuts those rows and columns and lowers the module's head-count attributes (`num_heads`,
`num_attention_heads`, `all_head_size`, `num_key_value_heads`, ...), so its forward runs
with fewer heads; a fused timm-style module, whose forward reshapes to the embedding width,
is replaced by `FusedHeadAttention`, which computes the same with any number of heads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

# Child names of the q/k/v projections, per style (fused: one name).
_SEPARATE = (("query", "key", "value"), ("q_proj", "k_proj", "v_proj"), ("q", "k", "v"),
             ("to_q", "to_k", "to_v"), ("wq", "wk", "wv"))
_FUSED = ("qkv", "Wqkv")
_OUT = ("o_proj", "out_proj", "proj", "dense", "o", "wo", "c_proj", "to_out")
_HEADS = ("num_heads", "num_attention_heads", "n_heads", "n_head")
_KV_HEADS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads")
_HEAD_DIM = ("head_dim", "attention_head_size", "head_size")
_INNER = ("all_head_size", "inner_dim")  # heads * head_dim, where a module keeps it


@dataclass(frozen=True)
class AttentionSpec:
    """One attention module's heads: where its projections are and how they split.

    `qkv` names the q, k and v Linears (the same name three times for a fused qkv);
    `out` the output projection. There are `kv_heads` units; unit u is key/value head u
    with query heads u * per_unit .. (u + 1) * per_unit - 1. `found` says where the head
    count came from.
    """

    module: str
    qkv: tuple[str, str, str]
    out: str
    heads: int
    kv_heads: int
    head_dim: int
    found: str

    @property
    def fused(self) -> bool:
        """Whether q, k and v come out of one Linear."""
        return self.qkv[0] == self.qkv[1]

    @property
    def per_unit(self) -> int:
        """Query heads per unit (1 unless grouped-query attention)."""
        return self.heads // self.kv_heads

    @property
    def note(self) -> str:
        """What the group is, for the UI and CLI."""
        style = "fused qkv" if self.fused else "separate q/k/v"
        kind = (f"{self.heads} heads of {self.head_dim}" if self.kv_heads == self.heads else
                f"grouped-query attention: {self.kv_heads} key/value heads, each with "
                f"{self.per_unit} query heads of {self.head_dim} (one unit removes a "
                "key/value head and its query heads)")
        return f"{self.module} ({style}): {kind}; head count {self.found}"

    def rows(self, part: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(rows, unit of each row) of projection `part` (0 q, 1 k, 2 v) for every unit,
        as rows of its own Linear (a fused qkv: of the one Linear)."""
        d, g = self.head_dim, self.per_unit
        width = d * (g if part == 0 else 1)  # rows per unit
        offset = part * self.heads * d if self.fused else 0
        rows = tuple(offset + u * width + j for u in range(self.kv_heads) for j in range(width))
        units = tuple(u for u in range(self.kv_heads) for _ in range(width))
        return rows, units


# ---------------------------------------------------------------------------------------
# Finding attention modules
# ---------------------------------------------------------------------------------------


def find_attention(model: nn.Module, example: Tensor | tuple[Tensor, ...]) -> list[AttentionSpec]:
    """Every attention module of `model` in a recognised style (see the module docstring)
    whose heads could be counted and whose projections agree with that count."""
    modules = dict(model.named_modules())
    candidates: list[tuple[str, tuple[str, str, str], str]] = []
    for name, module in modules.items():
        if isinstance(module, nn.MultiheadAttention):
            continue
        qkv = _projections(name, module)
        if qkv is None:
            continue
        out = _output_projection(name, modules, qkv)
        if out is not None:
            candidates.append((name, qkv, out))
    traced: dict[str, tuple[int, int]] = {}
    untold = [c for c in candidates if _attribute_heads(modules[c[0]]) is None]
    if untold:
        traced = _traced_heads(model, example, {c[1][0]: c[0] for c in untold}, modules)
    specs = []
    for name, qkv, out in candidates:
        spec = _spec(name, qkv, out, modules, traced.get(name))
        if spec is not None:
            specs.append(spec)
    return specs


def _prefixed(name: str, child: str) -> str:
    return f"{name}.{child}" if name else child


def _projections(name: str, module: nn.Module) -> tuple[str, str, str] | None:
    """The q, k, v Linears' names, if `module` has them as children."""
    children = dict(module.named_children())
    for names in _SEPARATE:
        if all(isinstance(children.get(n), nn.Linear) for n in names):
            return tuple(_prefixed(name, n) for n in names)  # type: ignore[return-value]
    for fused in _FUSED:
        if isinstance(children.get(fused), nn.Linear):
            full = _prefixed(name, fused)
            return full, full, full
    return None


def _output_projection(name: str, modules: dict[str, nn.Module],
                       qkv: tuple[str, str, str]) -> str | None:
    """The output projection: a Linear child with a known name reading the value
    projection's width, or HF BERT's `output.dense` beside the attention module."""
    v = modules[qkv[2]]
    assert isinstance(v, nn.Linear)
    inner = v.out_features // 3 if qkv[0] == qkv[2] else None
    for child in _OUT:
        full = _prefixed(name, child)
        linear = modules.get(full)
        if isinstance(linear, nn.Linear) and full not in qkv and (
                inner is None or linear.in_features == inner):
            return full
    parent, _, _ = name.rpartition(".")
    beside = _prefixed(parent, "output.dense") if name else None
    if beside is not None and isinstance(modules.get(beside), nn.Linear):
        return beside
    return None


def _int_attr(module: nn.Module, names: tuple[str, ...]) -> tuple[str, int] | None:
    for n in names:
        value = getattr(module, n, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return n, value
    return None


def _attribute_heads(module: nn.Module) -> tuple[int | None, int | None, int | None, str] | None:
    """(heads, kv heads, head dim, which attributes) from the module's attributes, or None
    if they give neither a head count nor a head size."""
    heads, kv, dim = (_int_attr(module, names) for names in (_HEADS, _KV_HEADS, _HEAD_DIM))
    if heads is None and dim is None:
        return None
    said = ", ".join(f"{item[0]}={item[1]}" for item in (heads, kv, dim) if item is not None)
    return (heads[1] if heads else None, kv[1] if kv else None, dim[1] if dim else None,
            f"from the module's attributes ({said})")


def _linear(module: nn.Module) -> nn.Linear:
    assert isinstance(module, nn.Linear)
    return module


def _spec(name: str, qkv: tuple[str, str, str], out: str, modules: dict[str, nn.Module],
          traced: tuple[int, int] | None) -> AttentionSpec | None:
    q, k, v, o = (_linear(modules[n]) for n in (*qkv, out))
    fused = qkv[0] == qkv[1]
    said = _attribute_heads(modules[name])
    heads: int | None
    kv: int | None
    dim: int | None
    if said is not None:
        heads, kv, dim, found = said
    elif traced is not None:
        heads, dim = traced
        kv, found = None, f"from tracing the forward (reshape into {heads} heads of {dim})"
    else:
        return None
    q_width = q.out_features // 3 if fused else q.out_features
    kv_width = q_width if fused else k.out_features
    dim = dim or (q_width // heads if heads else 0)
    if dim < 1:
        return None
    heads = heads or q_width // dim
    kv = kv or kv_width // dim
    if fused and (q.out_features % 3 or kv != heads):
        return None
    if heads * dim != q_width or kv * dim != kv_width or kv < 1 or heads % kv or \
            o.in_features != heads * dim or (not fused and v.out_features != kv_width):
        return None
    return AttentionSpec(name, qkv, out, heads, kv, dim, found)


class _WatchReshapes(TorchFunctionMode):
    """Records how the outputs of some Linears are reshaped into (..., heads, head_dim)."""

    def __init__(self, watched: dict[int, str]) -> None:
        super().__init__()
        self.watched = watched  # id of a Linear's output -> attention module name
        self.found: dict[str, tuple[int, int]] = {}

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        result = func(*args, **(kwargs or {}))
        source = args[0] if args else None
        if not isinstance(source, Tensor) or not isinstance(result, Tensor):
            return result
        name = self.watched.get(id(source))
        if name is not None and name not in self.found and \
                getattr(func, "__name__", "") in ("view", "reshape", "unflatten"):
            width = source.shape[-1]
            extra = result.dim() - source.dim()
            if extra in (1, 2) and result.shape[-1] * result.shape[-2] * (
                    result.shape[-3] if extra == 2 else 1) == width:
                self.found[name] = (int(result.shape[-2]), int(result.shape[-1]))
        return result


def _traced_heads(
    model: nn.Module, example: Tensor | tuple[Tensor, ...], q_of: dict[str, str],
    modules: dict[str, nn.Module],
) -> dict[str, tuple[int, int]]:
    """Heads and head size of the attention modules (by their q Linear in `q_of`), from
    how the forward reshapes the q projection's output; {} if the forward fails."""
    watch = _WatchReshapes({})
    handles = []
    for q_name, attention in q_of.items():
        def record(module: nn.Module, inputs: Any, output: Any, name: str = attention) -> None:
            if isinstance(output, Tensor):
                watch.watched[id(output)] = name
        handles.append(modules[q_name].register_forward_hook(record))
    first = tuple(t[:1] for t in example) if isinstance(example, tuple) else (example[:1],)
    try:
        with torch.no_grad(), watch:
            model(*first)
    except Exception:  # noqa: BLE001 - a forward that fails here is reported elsewhere
        return {}
    finally:
        for handle in handles:
            handle.remove()
    return watch.found


# ---------------------------------------------------------------------------------------
# Members of a head group
# ---------------------------------------------------------------------------------------

# (module, kind, idxs, root, layer, handler): coupling.Member's fields.
MemberFields = tuple[str, str, tuple[int, ...], tuple[int, ...], str | None,
                     Callable[[nn.Module, list[int]], Any] | None]


def head_members(spec: AttentionSpec, weight_layer: dict[str, str]) -> list[MemberFields] | None:
    """The members of `spec`'s head group (`weight_layer`: module name -> its weight's
    prunable layer), or None if a projection is not a prunable layer."""
    if any(n not in weight_layer for n in (*spec.qkv, spec.out)):
        return None
    members: list[MemberFields] = []
    if spec.fused:
        parts = [spec.rows(p) for p in range(3)]
        rows = tuple(r for part in parts for r in part[0])
        units = tuple(u for part in parts for u in part[1])
        members.append((spec.qkv[0], "out", rows, units, weight_layer[spec.qkv[0]], cut_rows))
    else:
        for part, module in enumerate(spec.qkv):
            rows, units = spec.rows(part)
            members.append((module, "out", rows, units, weight_layer[module], cut_rows))
    cols, units = spec.rows(0)
    members.append((spec.out, "in", cols, units, weight_layer[spec.out], cut_columns))
    every = tuple(range(spec.kv_heads))
    members.append((spec.module, "heads", every, every, None, _head_remover(spec)))
    return members


def _keep(size: int, idxs: list[int]) -> Tensor:
    return torch.tensor(sorted(set(range(size)) - set(idxs)), dtype=torch.long)


def cut_rows(linear: nn.Module, idxs: list[int]) -> None:
    """Remove output features `idxs` of a Linear (weight rows and bias entries)."""
    assert isinstance(linear, nn.Linear)
    keep = _keep(linear.out_features, idxs)
    with torch.no_grad():
        linear.weight = nn.Parameter(linear.weight[keep].clone(),
                                     requires_grad=linear.weight.requires_grad)
        if linear.bias is not None:
            linear.bias = nn.Parameter(linear.bias[keep].clone(),
                                       requires_grad=linear.bias.requires_grad)
    linear.out_features = len(keep)


def cut_columns(linear: nn.Module, idxs: list[int]) -> None:
    """Remove input features `idxs` of a Linear (weight columns)."""
    assert isinstance(linear, nn.Linear)
    keep = _keep(linear.in_features, idxs)
    with torch.no_grad():
        linear.weight = nn.Parameter(linear.weight[:, keep].clone(),
                                     requires_grad=linear.weight.requires_grad)
    linear.in_features = len(keep)


def _head_remover(spec: AttentionSpec) -> Callable[[nn.Module, list[int]], nn.Module]:
    """The "heads" member's function: lower the module's head counts once its projections
    are cut (slim.py runs it after them); a fused timm-style module is replaced."""

    def remove(module: nn.Module, units: list[int]) -> nn.Module:
        left = spec.kv_heads - len(set(units))
        if left < 1:
            raise ValueError("cannot remove every head of an attention layer")
        heads = left * spec.per_unit
        counts = {**dict.fromkeys(_HEADS, heads), **dict.fromkeys(_KV_HEADS, left),
                  **dict.fromkeys(_INNER, heads * spec.head_dim)}
        old = {**dict.fromkeys(_HEADS, spec.heads), **dict.fromkeys(_KV_HEADS, spec.kv_heads),
               **dict.fromkeys(_INNER, spec.heads * spec.head_dim)}
        for attr, value in counts.items():
            if getattr(module, attr, None) == old[attr]:
                setattr(module, attr, value)
        if spec.fused and isinstance(getattr(module, "proj", None), nn.Linear):
            return FusedHeadAttention.replacing(module, heads, spec.head_dim)
        return module

    return remove


# ---------------------------------------------------------------------------------------
# A fused-qkv attention that runs with any number of heads
# ---------------------------------------------------------------------------------------


class FusedHeadAttention(nn.Module):
    """timm's Attention with `num_heads` heads of `head_dim`, whatever the embedding width.

    timm reshapes the attention output to the input's width (`reshape(B, N, C)`), which
    fails once heads are gone; this module holds the same submodules under the same names
    (`qkv`, `q_norm`, `k_norm`, `attn_drop`, `proj`, `proj_drop`: the state dict keys do not
    change) and reshapes to `num_heads * head_dim`.
    """

    def __init__(self, qkv: nn.Linear, proj: nn.Linear, num_heads: int, head_dim: int,
                 scale: float | None = None) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.scale = scale if scale is not None else head_dim ** -0.5
        self.qkv = qkv
        self.q_norm: nn.Module = nn.Identity()
        self.k_norm: nn.Module = nn.Identity()
        self.attn_drop: nn.Module = nn.Identity()
        self.proj = proj
        self.proj_drop: nn.Module = nn.Identity()

    @classmethod
    def replacing(cls, module: nn.Module, num_heads: int, head_dim: int, *,
                  new_projections: bool = False) -> FusedHeadAttention:
        """One with `module`'s submodules (its projections already cut to `num_heads`);
        with `new_projections`, fresh q/k/v and output Linears of that size (a slimmed
        model rebuilt from its card, the weights loaded next)."""
        qkv, proj = module.qkv, module.proj
        assert isinstance(qkv, nn.Linear)
        assert isinstance(proj, nn.Linear)
        if new_projections:
            inner = num_heads * head_dim
            qkv = nn.Linear(qkv.in_features, 3 * inner, bias=qkv.bias is not None)
            proj = nn.Linear(inner, proj.out_features, bias=proj.bias is not None)
        scale = getattr(module, "scale", None)
        new = cls(qkv, proj, num_heads, head_dim,
                  float(scale) if isinstance(scale, int | float) else None)
        for name in ("q_norm", "k_norm", "attn_drop", "proj_drop"):
            child = getattr(module, name, None)
            if isinstance(child, nn.Module):
                setattr(new, name, child)
        new.train(module.training)
        return new

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        b, n, _ = x.shape
        h, d = self.num_heads, self.head_dim
        q, k, v = self.qkv(x).reshape(b, n, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        scores = (q * self.scale) @ k.transpose(-2, -1)
        if attn_mask is not None:
            scores = scores + (torch.zeros_like(attn_mask, dtype=scores.dtype).masked_fill(
                ~attn_mask, -math.inf) if attn_mask.dtype == torch.bool else attn_mask)
        weights = self.attn_drop(scores.softmax(dim=-1))
        out = (weights @ v).transpose(1, 2).reshape(b, n, h * d)
        return self.proj_drop(self.proj(out))  # type: ignore[no-any-return]


def head_counts(module: nn.Module) -> dict[str, int]:
    """The head-count attributes a slim may lower (num_heads, num_attention_heads,
    all_head_size, num_key_value_heads, ...), as `module` has them now."""
    counts = {}
    for attr in (*_HEADS, *_KV_HEADS, *_INNER):
        value = getattr(module, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            counts[attr] = value
    return counts


def set_head_counts(module: nn.Module, counts: dict[str, int]) -> None:
    """Set head-count attributes that `head_counts` read (a slim card being applied)."""
    for attr, value in counts.items():
        if attr not in (*_HEADS, *_KV_HEADS, *_INNER) or not isinstance(value, int) or \
                not isinstance(getattr(module, attr, None), int):
            raise ValueError(f"{attr!r} is not a head-count attribute of "
                             f"{type(module).__name__}")
        setattr(module, attr, value)


def head_taylor(signed: Tensor, idxs: tuple[int, ...], units: tuple[int, ...],
                count: int) -> Tensor:
    """Measured head importance: per unit, the sum over calibration batches of
    |sum of w * dL/dw over the unit's output-projection columns|.

    `signed` is (batches, in_features): per batch, each input column's sum of w * dL/dw.
    Summed over a head's columns that is dL/dg for a gate g multiplying the head's output
    at g = 1, so the score is the first-order estimate of the loss change when the head is
    masked (Michel et al. 2019, "Are Sixteen Heads Really Better than One?"), taken per
    batch. Weight norms say how large a head's weights are, not what the head does.
    """
    index = torch.tensor(idxs, dtype=torch.long, device=signed.device)
    to = torch.tensor(units, dtype=torch.long, device=signed.device)
    per_unit = torch.zeros(signed.shape[0], count, dtype=torch.float64, device=signed.device)
    per_unit.index_add_(1, to, signed.double()[:, index])
    return per_unit.abs().sum(dim=0)


__all__ = ["AttentionSpec", "FusedHeadAttention", "cut_columns", "cut_rows", "find_attention",
           "head_counts", "head_members", "head_taylor", "set_head_counts"]
