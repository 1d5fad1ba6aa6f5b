"""Remove pruned structure for real: a smaller nn.Module that computes what the masked
model computes.

The session's coupled-group decisions say which channel units go. `slim` copies the
masked model and, for every member of every pruned group, calls Torch-Pruning's pruning
function for that module on the member's own indices — so a conv loses its filters, the
next layer its input channels, BatchNorm its entries, every branch of a residual sum the
same channels, a Linear after a flatten the matching features. Unstructured zeros inside
the kept structures stay as they are.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pruneviz.core.blocks import set_module
from pruneviz.core.coupling import Member
from pruneviz.core.layers import eval_mode
from pruneviz.core.session import PruningSession
from pruneviz.errors import ModelError


@dataclass(frozen=True)
class SlimResult:
    """The slimmed model and what was removed."""

    model: nn.Module
    removed: dict[str, int]  # layer name -> output structures (rows, filters) removed
    params: int
    seconds: float
    # Why the slimmed model is by design not expected to compute what the masked one does
    # (human-readable); empty: it must match the masked model.
    differs: tuple[str, ...] = ()


def _check_slimmable(session: PruningSession) -> None:
    for name in session.uncoupled_structured():
        layer = session.layer_by_name[name]
        raise ModelError(
            f"layer {name!r} ({layer.type}) has filter/channel pruning that is not part of "
            "a coupled group (its channels cannot be traced), so its structures can be "
            "zeroed but not removed; use unstructured pruning (sparse deployment) for it, "
            "or leave it unpruned"
        )


def _check_grouped(name: str, module: nn.Module, kind: str, idxs: set[int]) -> None:
    """Refuse cuts that Torch-Pruning's functions get wrong on a grouped convolution.

    Filters of a conv with g groups are read in g blocks; removing the same number from
    each block keeps every filter in its block. Input channels are cut by position inside
    a block, so every block must lose the same positions. (Depthwise convs are fine: a
    channel and its filter go together.)
    """
    if not isinstance(module, nn.modules.conv._ConvNd):
        return
    g = module.groups
    if g == 1 or (g == module.in_channels and kind == "out"):
        return
    size = module.out_channels if kind == "out" else module.in_channels
    per = size // g
    blocks = [sorted(i % per for i in idxs if i // per == b) for b in range(g)]
    even = (all(len(b) == len(blocks[0]) for b in blocks) if kind == "out"
            else all(b == blocks[0] for b in blocks))
    if module.transposed or not even:
        side = "filters" if kind == "out" else "input channels"
        raise ModelError(
            f"cannot remove {side} of {name!r}, a convolution with {g} groups: the pruned "
            f"ones are not spread evenly over its groups ({[len(b) for b in blocks]} per "
            "group), so the smaller conv would mix its groups up; prune it unstructured, "
            "or choose a sparsity that removes the same channels from every group"
        )


def _check_runs(session: PruningSession, model: nn.Module) -> None:
    """Refuse a slimmed model that fails, or returns another shape, on the example input:
    its forward has a channel count written into it (`x.view(-1, 8, 2, 2)`)."""
    example = session.example_input
    two = (tuple(t[:1].repeat(2, *[1] * (t.dim() - 1)) for t in example)
           if isinstance(example, tuple) else example[:1].repeat(2, *[1] * (example.dim() - 1)))
    args = two if isinstance(two, tuple) else (two,)
    with eval_mode(session.model), torch.inference_mode():
        expected = session.model(*args)
        try:
            got = model(*args)
        except Exception as exc:
            raise ModelError(
                f"the slimmed model does not run ({type(exc).__name__}: {exc}); its forward "
                "probably has a channel count written into it (such as x.view(-1, 8, 2, 2)): "
                "compute it from the tensor (x.view(x.shape[0], -1, 2, 2)) to slim this model"
            ) from exc
    shapes = [tuple(t.shape) for t in (expected, got)]
    if isinstance(expected, Tensor) and isinstance(got, Tensor) and shapes[0] != shapes[1]:
        raise ModelError(
            f"the slimmed model returns shape {shapes[1]} where the model returns "
            f"{shapes[0]}; its forward probably has a channel count written into it (such "
            "as x.view(-1, 8, 2, 2)): compute it from the tensor to slim this model"
        )


def slim(session: PruningSession) -> SlimResult:
    """A new model with the session's pruned channel units removed (the session's model
    is not changed)."""
    _check_slimmable(session)
    start = time.perf_counter()
    model = copy.deepcopy(session.model)
    modules = dict(model.named_modules())
    # Member indices are into the module as it was. Several groups can cut the same side
    # of one module (the halves of a concatenation, read by one conv or one BatchNorm):
    # gather their indices and cut each (module, side) once — cutting group by group
    # would shift the indices the next group's cut refers to.
    cuts: dict[tuple[str, str], tuple[Member, set[int]]] = {}
    removed: dict[str, int] = {}
    gone = session.removed_blocks()
    for gid, units in session.pruned_units().items():
        pruned_units = set(units)
        for member in session.groups[gid].members:
            idxs = {i for i, r in zip(member.idxs, member.root, strict=True)
                    if r in pruned_units}
            # A member inside a block replaced by the identity is gone already; a member
            # without a handler is only masked (its module's own member removes it).
            inside_gone = any(member.module == b or member.module.startswith(b + ".")
                              for b in gone)
            if not idxs or inside_gone:
                continue
            if member.kind == "out" and member.layer:
                removed[member.layer] = removed.get(member.layer, 0) + len(idxs)
            if member.handler is not None:
                cuts.setdefault((member.module, member.kind), (member, set()))[1].update(idxs)
    for (module_name, kind), (_, idxs) in cuts.items():
        _check_grouped(module_name, modules[module_name], kind, idxs)
    # Functions that build a new module (an attention layer with fewer heads) go last, so
    # that the cuts of the modules inside the old one are made first.
    for (module_name, _), (member, idxs) in sorted(
            cuts.items(), key=lambda cut: cut[1][0].kind == "heads"):
        module = modules[module_name]
        try:
            assert member.handler is not None
            replacement = member.handler(module, sorted(idxs))
        except Exception as exc:
            raise ModelError(
                f"could not remove {_what(member.kind)} of {module_name!r} "
                f"({type(module).__name__}): {exc}"
            ) from exc
        if isinstance(replacement, nn.Module) and replacement is not module:
            set_module(model, module_name, replacement)
    model.eval()
    _check_runs(session, model)
    params = sum(p.numel() for p in model.parameters())
    return SlimResult(model, removed, params, time.perf_counter() - start)


def _what(kind: str) -> str:
    return {"heads": "heads", "rnn": "hidden units", "rnn_in": "input features"}.get(
        kind, "channels")


def max_abs_diff(a: nn.Module, b: nn.Module, example: Tensor) -> float:
    """Largest absolute difference between two models' outputs on `example`."""
    with eval_mode(a), eval_mode(b), torch.inference_mode():
        out_a, out_b = a(example), b(example)
    if out_a.shape != out_b.shape:
        raise ModelError(f"outputs differ in shape: {tuple(out_a.shape)} vs {tuple(out_b.shape)}")
    return float((out_a - out_b).abs().max())


__all__ = ["SlimResult", "max_abs_diff", "slim"]
