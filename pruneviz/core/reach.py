"""Which modules reach the model's output, found through the traced autograd graph.

A module's output reaches the model's output when the autograd graph of that output
leads back to it. Walking the graph back from each output, through every operation that
holds no weights of its own (flatten, softmax, log_softmax, reshape, view, mean,
adaptive pooling, activations, dropout — as modules or as functions) and through norms
(per-channel: a removed channel before one is a removed output channel), the first
modules with weights met are the model's output layers: their channels are what the
model returns. Modules whose output the walk never meets are dead: their output is
computed (or not even that) and thrown away, like a BERT pooler when the model returns
its hidden states.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pruneviz.core.layers import PrunableLayer, output_tensors

# Norms pass their channels through one for one (their affine entries follow them).
_PASS_THROUGH = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm,
                 nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.PReLU)


@dataclass(frozen=True)
class Reach:
    """What the trace found: `outputs`, the modules with weights whose channels are the
    model's outputs (reached from an output through weight-free operations only);
    `dead`, the modules with weights of their own none of which is read on the way to the
    model's output (their output is thrown away, or they did not run); `traced`, False
    when the outputs carried no autograd graph (then both sets are empty and the caller
    must fall back)."""

    outputs: frozenset[str]
    dead: frozenset[str]
    traced: bool


def _weighted(module: nn.Module) -> bool:
    """A module with weights of its own that is not a per-channel norm."""
    return not isinstance(module, _PASS_THROUGH) and any(
        True for _ in module.parameters(recurse=False))


@contextmanager
def _grad_on(model: nn.Module) -> Iterator[None]:
    """Every parameter requiring grad (so the outputs carry a graph), restored after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(True)
        with torch.enable_grad():
            yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def trace_reach(model: nn.Module, example: Tensor | tuple[Tensor, ...]) -> Reach:
    """Run `model` once on `example` and walk its autograd graph back from the outputs
    (see the module docstring). The model is run in the mode it is in; nothing of it is
    changed (parameters' requires_grad flags are put back)."""
    made_by: dict[Any, list[str]] = {}  # grad_fn -> modules whose output it made
    weighted: dict[str, bool] = {}
    handles = []

    def hook(name: str) -> Any:
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            for t in output_tensors(output):
                if t.grad_fn is not None:
                    made_by.setdefault(t.grad_fn, []).append(name)

        return record

    for name, module in model.named_modules():
        if name:
            weighted[name] = _weighted(module)
            handles.append(module.register_forward_hook(hook(name)))
    try:
        with _grad_on(model):
            out = model(*example) if isinstance(example, tuple) else model(example)
            roots = [t.grad_fn for t in output_tensors(out) if t.grad_fn is not None]
            outputs, reached = _walk(roots, made_by, weighted)
    finally:
        for handle in handles:
            handle.remove()
    if not roots:
        return Reach(frozenset(), frozenset(), False)
    # A parameter is read on the way to an output when the walk meets its leaf node (so
    # an out_proj whose weight its MultiheadAttention reads as a function is live).
    read = {id(fn.variable) for fn in reached if hasattr(fn, "variable")}
    dead = {name for name, module in model.named_modules() if name and weighted[name]
            and not any(id(p) in read for p in module.parameters(recurse=False))}
    return Reach(frozenset(outputs), frozenset(dead), True)


def _walk(roots: list[Any], made_by: dict[Any, list[str]],
          weighted: dict[str, bool]) -> tuple[set[str], set[Any]]:
    """Walk back from `roots`: the weighted modules first met on every path (stopping
    there), and every graph node reached on the full walk (not stopping)."""
    outputs: set[str] = set()
    stopped: set[Any] = set()
    stack = list(roots)
    while stack:
        fn = stack.pop()
        if fn in stopped:
            continue
        stopped.add(fn)
        owners = [n for n in made_by.get(fn, []) if weighted[n]]
        if owners:
            # The innermost weighted module that made it (a layer, not its container).
            outputs.add(max(owners, key=lambda n: n.count(".")))
            continue
        stack += [nxt for nxt, _ in fn.next_functions if nxt is not None]
    reached: set[Any] = set()
    stack = list(roots)
    while stack:
        fn = stack.pop()
        if fn in reached:
            continue
        reached.add(fn)
        stack += [nxt for nxt, _ in fn.next_functions if nxt is not None]
    return outputs, reached


def dead_layers(model: nn.Module, example: Tensor | tuple[Tensor, ...],
                layers: list[PrunableLayer]) -> set[str]:
    """The prunable layers whose output does not reach the model's output (`trace_reach`
    on the first sample of `example`; none when the outputs carry no graph)."""
    first = tuple(t[:1] for t in example) if isinstance(example, tuple) else example[:1]
    reach = trace_reach(model, first)
    return {layer.name for layer in layers if layer.module_name in reach.dead}


def unused_reason(layer: str) -> str:
    """Why a dead layer is left out of plans, rankings and slim checks."""
    return (f"layer {layer!r} is unused: its output does not reach the model's output (it "
            "is computed and thrown away, or never run), so pruning it changes nothing the "
            "model returns; it is left out of plans and rankings (delete it from the model "
            "to save its weights)")


__all__ = ["Reach", "dead_layers", "trace_reach", "unused_reason"]
