"""Remove pruned structure for real: a smaller nn.Module that computes what the masked
model computes.

The session's coupled-group decisions say which channel units go. `slim` copies the
masked model and, for every member of every pruned group, calls Torch-Pruning's pruning
function for that module on the member's own indices — so a conv loses its filters, the
next layer its input channels, BatchNorm its entries, every branch of a residual sum the
same channels, a Linear after a flatten the matching features, an Embedding its
columns, a LayerNorm its entries (and its normalized_shape). Unstructured zeros inside
the kept structures stay as they are.

Where a group's channels run through a norm that normalises them together (LayerNorm,
RMSNorm), the slimmed model by design computes something else than the masked one: the
masked channels counted in that norm's statistics, the removed ones do not. `differs`
says so, norm by norm; callers measure the slimmed model on its own then. The slim is
still checked: against the masked model with those norms' statistics taken over the kept
channels (kept_statistics_reference), which is exactly what a correct slim computes.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pruneviz.core.blocks import set_module
from pruneviz.core.coupling import Member
from pruneviz.core.layers import eval_mode, output_tensors
from pruneviz.core.session import PruningSession
from pruneviz.core.width import (
    KeptStatisticsNorm,
    follow_width,
    kept_statistics_norm,
    norm_channels,
    parameter_owner,
    shared_norm_reason,
)
from pruneviz.errors import ModelError

# Largest output difference a slim may have from the masked model, relative to the largest
# output magnitude (at least 1): float sums in another order, nothing more.
SLIM_TOLERANCE = 1e-4
# Samples the layers are compared on when a slim does not match (hooks keep every output).
_DIAGNOSE_SAMPLES = 8


class SlimMismatchError(ModelError):
    """The slimmed model does not compute what the masked model computes."""


@dataclass(frozen=True)
class SlimResult:
    """The slimmed model and what was removed.

    `differs`: why the slimmed model is by design not expected to compute what the masked
    one does (a LayerNorm whose statistics change with the width), one reason each; empty
    means it was checked to match the masked model within SLIM_TOLERANCE. Non-empty, it
    was checked to match kept_statistics_reference instead, unless a reason ends in "not
    checked: ..." (a norm of a kind that reference cannot be built for).
    """

    model: nn.Module
    removed: dict[str, int]  # layer name -> output structures (rows, filters) removed
    params: int
    seconds: float
    differs: tuple[str, ...] = ()


def _check_slimmable(session: PruningSession) -> None:
    for name in session.uncoupled_structured():
        if name in session.dead_layers:
            continue  # unused: its zeros stay, nothing the model returns depends on them
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
            with _running(model) as stack:
                got = model(*args)
        except Exception as exc:
            where = (f" in {stack[-1]!r} ({type(dict(model.named_modules())[stack[-1]]).__name__})"
                     if stack else "")
            raise ModelError(
                f"the slimmed model does not run{where} ({type(exc).__name__}: {exc}); its "
                "forward probably has a channel or head count written into it (such as "
                "x.view(-1, 8, 2, 2), or a reshape into heads of fixed size): compute it from "
                "the tensor (x.view(x.shape[0], -1, 2, 2)), or leave that layer's channels "
                "unpruned, to slim this model"
            ) from exc
    shapes = [tuple(t.shape) for t in (expected, got)]
    if isinstance(expected, Tensor) and isinstance(got, Tensor) and shapes[0] != shapes[1]:
        raise ModelError(
            f"the slimmed model returns shape {shapes[1]} where the model returns "
            f"{shapes[0]}; its forward probably has a channel count written into it (such "
            "as x.view(-1, 8, 2, 2)): compute it from the tensor to slim this model"
        )


@contextmanager
def _running(model: nn.Module) -> Iterator[list[str]]:
    """The names of the modules whose forward has started and not yet returned (after a
    failure: the innermost last)."""
    stack: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue
        handles.append(module.register_forward_pre_hook(_enter(stack, name)))
        handles.append(module.register_forward_hook(_leave(stack, name)))
    try:
        yield stack
    finally:
        for handle in handles:
            handle.remove()


def _enter(stack: list[str], name: str) -> Any:
    def hook(module: nn.Module, inputs: Any) -> None:
        stack.append(name)

    return hook


def _leave(stack: list[str], name: str) -> Any:
    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        if stack and stack[-1] == name:
            stack.pop()

    return hook


def slim(session: PruningSession, data: Tensor | tuple[Tensor, ...] | None = None,
         ) -> SlimResult:
    """A new model with the session's pruned channel units removed (the session's model
    is not changed), checked on `data` (the evaluation data; default the session's
    example input) to compute what the masked model computes.

    Raises SlimMismatchError, naming the layers where the two first part, when the
    outputs differ by more than SLIM_TOLERANCE; where shared norms are cut
    (`SlimResult.differs`) the reference is the masked model with their statistics over
    the kept channels (kept_statistics_reference), unchecked only when that cannot be
    built."""
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
        if kind not in ("param", "width"):
            _check_grouped(module_name, modules[module_name], kind, idxs)
    differs = slim_differs(session)
    # Functions that build a new module (an attention layer with fewer heads) go last, so
    # that the cuts of the modules inside the old one are made first; an attention layer's
    # width is cut after its heads (in the module that took its place).
    for (module_name, _), (member, idxs) in sorted(
            cuts.items(), key=lambda cut: _LAST.get(cut[1][0].kind, 0)):
        # A bare parameter's function takes the module holding it.
        module = model.get_submodule(parameter_owner(module_name)[0]
                                     if member.kind == "param" else module_name)
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
    _follow_widths(session, model)
    model.eval()
    _check_runs(session, model)
    # Where shared norms are cut, a correct slim computes the masked model with those
    # norms' statistics over the kept channels: checked against that instead.
    reference = kept_statistics_reference(session)
    if reference is not None:
        try:
            check_equivalent(session, model, session.example_input if data is None
                             else data, reference)
        except SlimMismatchError:
            unused = [n for n, m in reference.named_modules()
                      if isinstance(m, KeptStatisticsNorm) and m.calls == 0]
            if not unused:
                raise
            differs = (*differs, f"not checked: {', '.join(unused[:3])} "
                       "not called as a module (its parent reads the norm's weights "
                       "itself), so no kept-statistics reference could stand in for it")
    params = sum(p.numel() for p in model.parameters())
    return SlimResult(model, removed, params, time.perf_counter() - start, differs)


def _follow_widths(session: PruningSession, model: nn.Module) -> None:
    """Width attributes a forward reads (`self.hidden_dim`) follow the groups whose bare
    parameters (a class token) were cut: on the model and on those parameters' modules."""
    for gid, units in session.pruned_units().items():
        group = session.groups[gid]
        owners = [parameter_owner(m.module)[0] for m in group.members if m.kind == "param"]
        if owners:
            follow_width({id(o): o for o in [model, *map(model.get_submodule, owners)]}
                         .values(), group.size, group.size - len(units))


_LAST = {"heads": 1, "width": 2}  # the order of the functions that replace modules


def _shared_norm_cuts(session: PruningSession) -> dict[str, set[int]]:
    """The norms that normalise removed channels together with kept ones (in blocks the
    plan keeps), each with the channel indices removed from it."""
    gone = session.removed_blocks()
    cuts: dict[str, set[int]] = {}
    for gid, units in session.pruned_units().items():
        group, pruned = session.groups[gid], set(units)
        for m in group.members:
            norm = m.module if m.kind == "norm" else \
                parameter_owner(m.module)[0] if m.kind == "param" else None
            if norm is None or norm not in group.shared_norms or \
                    any(norm == b or norm.startswith(b + ".") for b in gone):
                continue
            removed = {i for i, r in zip(m.idxs, m.root, strict=True) if r in pruned}
            if removed:
                cuts.setdefault(norm, set()).update(removed)
    return cuts


def slim_differs(session: PruningSession) -> tuple[str, ...]:
    """Why `slim(session)` by design does not compute what the masked model computes: one
    reason per norm that normalises removed channels together with kept ones (its
    `SlimResult.differs`, without slimming), ending in "not checked: ..." where no
    kept-statistics reference can be built for that norm. Empty: the slimmed model must
    match."""
    reasons = []
    for name, removed in _shared_norm_cuts(session).items():
        channels = norm_channels(session.model.get_submodule(name))
        reason = shared_norm_reason(name, channels, len(removed))
        kept = kept_statistics_norm(name, session.model.get_submodule(name),
                                    [i for i in range(channels) if i not in removed])
        reasons.append(f"{reason}; {kept}" if isinstance(kept, str) else reason)
    return tuple(reasons)


def kept_statistics_reference(session: PruningSession) -> nn.Module | None:
    """What a correct slim of `session` computes: a copy of the masked model whose shared
    norms (those `slim_differs` names) take their statistics over the kept channels only
    (KeptStatisticsNorm says why that is exactly the slimmed model's function). The
    masked model itself when no norm is shared; None when a shared norm is of a kind no
    such reference can be built for (the slim then goes unchecked, and its differs
    reason says so)."""
    cuts = _shared_norm_cuts(session)
    if not cuts:
        return session.model
    reference = copy.deepcopy(session.model)
    for name, removed in cuts.items():
        norm = reference.get_submodule(name)  # the copy's own tensors
        made = kept_statistics_norm(name, norm, [i for i in range(norm_channels(norm))
                                                 if i not in removed])
        if isinstance(made, str):
            return None
        set_module(reference, name, made)
    return reference.eval()


def _outputs(model: nn.Module, data: Tensor | tuple[Tensor, ...],
             fastpath: bool = True) -> list[Tensor]:
    """`model`'s output tensors on `data`. Without `fastpath`, nn.TransformerEncoderLayer
    calls its LayerNorm modules (its fused kernel reads their weights instead), as a
    kept-statistics reference needs."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(before and fastpath)
    try:
        with eval_mode(model), torch.inference_mode():
            out = model(*data) if isinstance(data, tuple) else model(data)
    finally:
        torch.backends.mha.set_fastpath_enabled(before)
    return output_tensors(out)


def _tolerance(reference: Tensor) -> float:
    scale = float(reference.abs().max()) if reference.numel() else 0.0
    return SLIM_TOLERANCE * max(1.0, scale if math.isfinite(scale) else 1.0)


def _difference(a: Tensor, b: Tensor) -> float:
    """Largest absolute difference (inf where one is finite and the other is not)."""
    if a.numel() == 0:
        return 0.0
    a, b = a.double(), b.double()
    both = torch.isfinite(a) & torch.isfinite(b)
    if not bool(torch.equal(torch.isfinite(a), torch.isfinite(b))):
        return float("inf")
    return float((a[both] - b[both]).abs().max()) if bool(both.any()) else 0.0


def check_equivalent(session: PruningSession, slimmed: nn.Module,
                     data: Tensor | tuple[Tensor, ...],
                     reference: nn.Module | None = None) -> float:
    """The largest output difference between the masked model (or `reference`, what a
    correct slim computes: kept_statistics_reference) and `slimmed` on `data`;
    SlimMismatchError naming the first diverging layers when beyond SLIM_TOLERANCE."""
    reference = session.model if reference is None else reference
    masked_out = _outputs(reference, data, fastpath=reference is session.model)
    slim_out = _outputs(slimmed, data)
    worst = 0.0
    for expected, got in zip(masked_out, slim_out, strict=False):
        if expected.shape != got.shape:
            raise SlimMismatchError(
                f"the slimmed model returns shape {tuple(got.shape)} where the masked model "
                f"returns {tuple(expected.shape)}; nothing was written")
        diff = _difference(expected, got)
        worst = max(worst, diff)
        tolerance = _tolerance(expected)
        if diff > tolerance:
            samples = len(data[0]) if isinstance(data, tuple) else len(data)
            raise SlimMismatchError(
                f"the slimmed model does not compute what the masked model computes: outputs "
                f"differ by up to {diff:.3g} (tolerance {tolerance:.1g}) on {samples:,} "
                f"evaluation inputs; {_locate(session, reference, slimmed, data)}. The slimmed "
                "model was not kept: leave those layers' channels unpruned (or prune them "
                "unstructured) to slim this model")
    return worst


def _what(kind: str) -> str:
    return {"heads": "heads", "rnn": "hidden units", "rnn_in": "input features",
            "embed": "embedding columns", "param": "entries"}.get(kind, "channels")


@dataclass
class _Call:
    """One module's forward call: its tensor inputs and outputs."""

    inputs: list[Tensor]
    outputs: list[Tensor]


def _record(model: nn.Module, data: Tensor | tuple[Tensor, ...]
            ) -> tuple[dict[str, list[_Call]], list[str]]:
    """Every named module's calls on `data`, and the modules in the order they started."""
    calls: dict[str, list[_Call]] = {}
    order: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue
        handles.append(module.register_forward_pre_hook(_enter(order, name)))
        handles.append(module.register_forward_hook(_keep_call(calls, name)))
    try:
        _outputs(model, data, fastpath=False)  # every inner module called
    finally:
        for handle in handles:
            handle.remove()
    return calls, list(dict.fromkeys(order))


def _keep_call(calls: dict[str, list[_Call]], name: str) -> Any:
    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        calls.setdefault(name, []).append(_Call(output_tensors(inputs), output_tensors(output)))

    return hook


def _removed_sets(session: PruningSession) -> dict[tuple[str, str], set[int]]:
    """(module, "in"/"out") -> the channel indices the plan removes there."""
    removed: dict[tuple[str, str], set[int]] = {}
    for gid, units in session.pruned_units().items():
        pruned = set(units)
        for m in session.groups[gid].members:
            idxs = {i for i, r in zip(m.idxs, m.root, strict=True) if r in pruned}
            sides = ("in", "out") if m.kind == "norm" else (m.kind,)
            for side in sides:
                if idxs and side in ("in", "out"):
                    removed.setdefault((m.module, side), set()).update(idxs)
    return removed


def _locate(session: PruningSession, reference: nn.Module, slimmed: nn.Module,
            data: Tensor | tuple[Tensor, ...]) -> str:
    """Where the slimmed model first parts from the masked one: the innermost modules
    whose inputs agree on the kept channels and whose outputs do not."""
    few = (tuple(t[:_DIAGNOSE_SAMPLES] for t in data) if isinstance(data, tuple)
           else data[:_DIAGNOSE_SAMPLES])
    masked_calls, order = _record(reference, few)
    slim_calls, _ = _record(slimmed, few)
    removed = _removed_sets(session)
    known: dict[int, set[int]] = {}  # id of a masked-model tensor -> channels removed from it
    modules = dict(reference.named_modules())
    for name, calls in masked_calls.items():
        for call in calls:
            if (name, "out") in removed:
                for t in call.outputs:
                    known[id(t)] = removed[(name, "out")]
            if (name, "in") in removed and call.inputs:
                known[id(call.inputs[0])] = removed[(name, "in")]
    for _ in range(3):  # through weight-free layers that keep the shape (dropout, ReLU)
        for name in reversed(order):
            module = modules[name]
            if any(True for _ in module.parameters()) or any(True for _ in module.children()):
                continue
            for call in masked_calls.get(name, []):
                if call.inputs and call.outputs and \
                        call.inputs[0].shape == call.outputs[0].shape:
                    a, b = id(call.inputs[0]), id(call.outputs[0])
                    if a in known or b in known:
                        known.setdefault(a, known.get(b, set()))
                        known.setdefault(b, known[a])
    candidates = [set(r) for r in removed.values()]

    def diverges(m: Tensor, t: Tensor) -> bool | None:
        """Whether two tensors differ on the kept channels (None: cannot be compared)."""
        if m.shape == t.shape:
            return _difference(m, t) > _tolerance(m)
        if m.dim() != t.dim():
            return None
        dims = [d for d in range(m.dim()) if m.shape[d] != t.shape[d]]
        if len(dims) != 1:
            return None
        d, size = dims[0], m.shape[dims[0]]
        options = [known[id(m)]] if id(m) in known else candidates
        kept = {tuple(i for i in range(size) if i not in r) for r in options}
        kept = {k for k in kept if len(k) == t.shape[d]}
        if len(kept) != 1:
            return None
        index = torch.tensor(next(iter(kept)), dtype=torch.long)
        part = m.index_select(d, index)
        return _difference(part, t) > _tolerance(part)

    bad: list[str] = []
    for name in order:
        pairs = list(zip(masked_calls.get(name, []), slim_calls.get(name, []), strict=False))
        for call, other in pairs:
            ins = [diverges(a, b) for a, b in zip(call.inputs, other.inputs, strict=False)]
            outs = [diverges(a, b) for a, b in zip(call.outputs, other.outputs, strict=False)]
            if any(outs) and not any(ins):
                bad.append(name)
                break
    innermost = [n for n in bad if not any(o.startswith(n + ".") for o in bad)]
    if not innermost:
        return ("the layers responsible could not be located (their outputs cannot be "
                "matched channel by channel)")
    named = [f"{n} ({type(modules[n]).__name__})" for n in innermost[:4]]
    more = f" and {len(innermost) - 4} more" if len(innermost) > 4 else ""
    return (f"the masked and slimmed models first part in {', '.join(named)}{more}: inputs "
            "agree on the kept channels, outputs do not (its forward computes with a count "
            "that removing channels changed, such as a reshape into attention heads)")


def max_abs_diff(a: nn.Module, b: nn.Module, example: Tensor) -> float:
    """Largest absolute difference between two models' outputs on `example`."""
    with eval_mode(a), eval_mode(b), torch.inference_mode():
        out_a, out_b = a(example), b(example)
    if out_a.shape != out_b.shape:
        raise ModelError(f"outputs differ in shape: {tuple(out_a.shape)} vs {tuple(out_b.shape)}")
    return float((out_a - out_b).abs().max())


__all__ = ["SLIM_TOLERANCE", "SlimMismatchError", "SlimResult", "check_equivalent",
           "kept_statistics_reference", "max_abs_diff", "slim", "slim_differs"]
