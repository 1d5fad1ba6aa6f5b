"""Coupled groups: the layers whose channels must be pruned together.

Removing output channel c of a convolution also removes input channel c of every layer
that reads it, the matching BatchNorm entries, and — through a residual addition or a
concatenation — channel c (or its offset) of every other branch. Torch-Pruning's
DependencyGraph, the field's reference for arbitrary graphs, finds these groups; this
module turns each into plain data: the members, and for every member index the root
channel it belongs to. The session masks whole groups with it, and slim.py removes them.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from pruneviz.core import recurrent
from pruneviz.core.attention import SlimAttention
from pruneviz.core.heads import AttentionSpec, find_attention, head_members
from pruneviz.core.layers import PrunableLayer
from pruneviz.core.reach import trace_reach
from pruneviz.core.width import (
    NORMS,
    norm_unsupported,
    parameter_handler,
    remove_attention_width,
    shared_norms,
)

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
             nn.ConvTranspose2d, nn.ConvTranspose3d)
_RNN = recurrent.RECURRENT


@dataclass(frozen=True)
class Member:
    """One module of a group: which of its channels go with which root channel.

    `kind` is "out" (output channels of a weight layer), "in" (input channels of a weight
    layer), "norm" (per-channel affine parameters of a norm layer), "embed" (columns of
    an nn.Embedding's table) or "param" (entries along `dim` of a bare parameter, which
    `module` names: a class token, a layer scale); "rnn", "rnn_in" and
    "heads" are the recurrent layers' and attention layers' own removal steps, which
    only slim() uses. `idxs[i]` is the member's own channel index that goes with root
    channel `root[i]`.
    """

    module: str
    kind: str
    idxs: tuple[int, ...]
    root: tuple[int, ...]
    layer: str | None  # the prunable layer's name, for weight layers
    # The pruning function (Torch-Pruning's, or ours for recurrent and attention layers);
    # None for a member that is only masked (the gate rows of an LSTM, whose removal the
    # LSTM's own "rnn" member does in one call). A function may return a new module that
    # takes the old one's place (an attention layer with fewer heads).
    handler: Callable[[nn.Module, list[int]], Any] | None
    dim: int = 0  # the dimension `idxs` index, for "norm", "embed" and "param" members


@dataclass(frozen=True)
class Group:
    """Layers coupled through shared channels; structures are the root's output channels."""

    id: int
    root: str
    size: int
    members: tuple[Member, ...]
    unsupported: str | None  # why the group cannot be masked/removed, if it cannot
    unit: str = "channel"  # what one unit is: a channel, an RNN's hidden unit, a head
    # Norms that normalise the group's channels together (LayerNorm, RMSNorm): removing
    # channels changes their statistics, so the slimmed model is not the masked one.
    shared_norms: tuple[str, ...] = ()
    note: str = ""  # how the group was found, where that is worth saying (attention heads)

    @property
    def out_layers(self) -> list[str]:
        """Prunable layers whose output channels belong to the group."""
        return [m.layer for m in self.members if m.kind == "out" and m.layer]

    @property
    def in_layers(self) -> list[str]:
        """Prunable layers whose input channels belong to the group."""
        return [m.layer for m in self.members if m.kind == "in" and m.layer]

    @property
    def layers(self) -> list[str]:
        """Every prunable layer in the group (outputs first), without repeats."""
        seen: dict[str, None] = {}
        for name in self.out_layers + self.in_layers:
            seen.setdefault(name, None)
        return list(seen)


def output_modules(model: nn.Module, example: Tensor | tuple[Tensor, ...]) -> set[str]:
    """Modules whose channels are the model's output: found through the traced autograd
    graph (`reach.trace_reach`), whatever weight-free functions follow them (flatten,
    softmax, log_softmax, reshape, functional pooling); by forward hooks that look
    through weight-free modules only when the outputs carry no graph."""
    reach = trace_reach(model, example)
    if reach.traced:
        return set(reach.outputs)
    return _output_modules_by_hooks(model, example)


def _output_modules_by_hooks(model: nn.Module, example: Tensor | tuple[Tensor, ...]) -> set[str]:
    """Modules whose output is (part of) the model's output, looking through modules
    without parameters (a final Sigmoid, Flatten or Dropout) to the layer behind them."""
    produced: dict[int, tuple[Tensor, str]] = {}
    handles = []

    def hook(name: str) -> Any:
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            if not isinstance(output, Tensor):
                return
            source = name
            first = inputs[0] if inputs and isinstance(inputs[0], Tensor) else None
            if first is not None and not any(True for _ in module.parameters()):
                known = produced.get(id(first))
                if known is not None and known[0] is first:
                    source = known[1]
            produced[id(output)] = (output, source)

        return record

    for name, module in model.named_modules():
        if name and not any(True for _ in module.children()):
            handles.append(module.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            out = model(*example) if isinstance(example, tuple) else model(example)
    finally:
        for handle in handles:
            handle.remove()
    outs = out if isinstance(out, tuple | list) else [out]
    return {produced[id(t)][1] for t in outs if isinstance(t, Tensor) and id(t) in produced}


def output_layers(
    model: nn.Module, example: Tensor | tuple[Tensor, ...], layers: list[PrunableLayer]
) -> set[str]:
    """The prunable layers whose outputs are the model's outputs (`output_modules`, run on
    the first sample of `example`)."""
    first = tuple(t[:1] for t in example) if isinstance(example, tuple) else example[:1]
    modules = output_modules(model, first)
    return {layer.name for layer in layers if layer.module_name in modules}


def find_groups(
    model: nn.Module, example: Tensor | tuple[Tensor, ...], layers: list[PrunableLayer]
) -> tuple[list[Group], str | None]:
    """The coupled groups of `model` rooted at its Linear/Conv layers.

    Groups whose channels are the model's own outputs (a classifier's classes, an
    autoencoder's image channels) are left out: removing them would change what the
    model returns. Returns the groups and, if the graph could not be traced, why.
    """
    import torch_pruning as tp

    first = tuple(t[:1] for t in example) if isinstance(example, tuple) else example[:1]
    was_training = model.training
    model.eval()
    # A recurrent layer is one node of the traced graph (see recurrent.one_node), with
    # input_size inputs and hidden_size outputs per direction (recurrent.graph_pruners).
    hooks = [module.register_forward_hook(recurrent.one_node) for module in model.modules()
             if isinstance(module, _RNN)]
    attention: list[AttentionSpec] = []
    try:
        # Attention heads are their own groups (heads.py): Torch-Pruning is told to leave
        # the q/k/v projections' outputs alone (it would split heads into channels, and
        # on grouped-query attention with rotary embeddings it does not return).
        attention = find_attention(model, first)
        outputs = output_modules(model, first)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "unwrapped parameters" and the like
            with _MAPPING_LOCK:  # its mappings are computed in there: not while switched off
                graph = tp.DependencyGraph().build_dependency(
                    model, example_inputs=first,
                    customized_pruners=recurrent.graph_pruners())
        names = {module: name for name, module in model.named_modules()}
        params = {id(p): name for name, p in model.named_parameters()}
        weight_layer = {layer.module_name: layer.name for layer in layers
                        if layer.param_name == "weight"}
        # nn.MultiheadAttention's query, key and value projections, as one layer
        weight_layer.update({layer.module_name: layer.name for layer in layers
                             if layer.param_name == "in_proj_weight"})
        projections = {n for spec in attention for n in spec.qkv}
        ignored = [module for name, module in model.named_modules()
                   if name in outputs or name in projections]
        with _index_mapping_as_built():
            raw_groups = list(graph.get_all_groups(ignored_layers=ignored,
                                                   root_module_types=[*_WEIGHTED, *_RNN,
                                                                      nn.Embedding]))
    except Exception as exc:  # noqa: BLE001 - any tracing failure means: no groups
        heads = _attention_groups(model, layers, 0, attention)
        heads += _refuse_early_states(model, first, _recurrent_groups(model, len(heads)))
        return heads, f"the dependency graph could not be traced ({type(exc).__name__}: {exc})"
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()

    blocks = _grouped_blocks(model)
    groups: list[Group] = []
    for raw in raw_groups:
        members, unsupported, root_name = _members(raw, names, weight_layer, params)
        if root_name is None and any(m.kind == "embed" for m in members):
            # An embedding's width read by layers without a residual writer (Embedding ->
            # Linear): the group is decided from its readers' input channels.
            root_name = next((m.layer for m in members if m.kind == "in" and m.layer), None)
        if root_name is None:
            continue
        if _lossy(members):
            # Torch-Pruning keeps one root channel per channel when it merges two paths to
            # one module (a Linear's features viewed as conv channels, then an activation):
            # the channel's other roots are dropped. Ask it root by root instead, where
            # there is nothing to drop.
            head = raw[0]
            members = []
            for r in sorted({int(i) for i in head.idxs}):
                with _index_mapping_as_built():
                    single = graph.get_pruning_group(head.dep.target.module, head.dep.handler,
                                                     [r])
                members += _members(single, names, weight_layer, params)[0]
        merged, size = _units(_merge(members), blocks)
        unit = "hidden unit" if any(m.kind == "rnn" for m in merged) else "channel"
        norms = shared_norms([(m.module, m.kind) for m in merged],
                             {name: module for module, name in names.items()})
        groups.append(Group(len(groups), root_name, size, tuple(merged), unsupported, unit,
                            norms))
    groups += _recurrent_groups(model, len(groups))
    groups = _refuse_early_states(model, first, groups)
    return groups + _attention_groups(model, layers, len(groups), attention), None


# Torch-Pruning recomputes every concatenation's index mapping at each group it builds
# (quadratic in a DenseNet's depth: 3.5 of 4.6 s on DenseNet-121); the graph is never
# pruned while groups are listed, so the mappings build_dependency computed hold.
_MAPPING_LOCK = threading.Lock()


@contextmanager
def _index_mapping_as_built() -> Iterator[None]:
    """Torch-Pruning's index mappings left as the graph's build made them (one thread
    at a time: the switch is module-wide)."""
    from torch_pruning.dependency import index_mapping

    with _MAPPING_LOCK:
        update = index_mapping.update_index_mapping
        index_mapping.update_index_mapping = lambda graph: None
        try:
            yield
        finally:
            index_mapping.update_index_mapping = update


def _recurrent_groups(model: nn.Module, first_id: int) -> list[Group]:
    """The hidden units of every layer below the last of multi-layer recurrent modules
    (see recurrent.py; the last layer's are in the traced graph, with their readers)."""
    return [Group(first_id + i, root, size, tuple(Member(*m) for m in members), why,
                  "hidden unit")
            for i, (root, size, members, why) in enumerate(recurrent.inner_groups(model))]


def _refuse_early_states(
    model: nn.Module, example: Tensor | tuple[Tensor, ...], groups: list[Group]
) -> list[Group]:
    """The groups of recurrent modules whose lower layers' final states are read, marked
    unsupported (see recurrent.early_states_read)."""
    refused = recurrent.early_states_read(model, example)
    return [replace(g, unsupported=g.unsupported or next(
        (refused[m.module] for m in g.members if m.kind == "rnn" and m.module in refused),
        None)) for g in groups]


def _attention_groups(model: nn.Module, layers: list[PrunableLayer], first_id: int,
                      attention: list[AttentionSpec]) -> list[Group]:
    """One group per nn.MultiheadAttention, and per attention module of `attention`
    (heads.py): its heads.

    Head h is rows h*d..h*d+d-1 of each of the query, key and value projections and the
    same columns of out_proj. With those zeroed, the head's scores are all equal and its
    values 0, so it adds nothing: masking a head computes what removing it does.
    """
    by_param = {(layer.module_name, layer.param_name): layer.name for layer in layers}
    groups: list[Group] = []
    for name, mha in model.named_modules():
        if not isinstance(mha, nn.MultiheadAttention) or mha.bias_k is not None or \
                mha.add_zero_attn:
            continue
        out_proj = by_param.get((f"{name}.out_proj" if name else "out_proj", "weight"))
        projections = ("in_proj_weight",) if mha._qkv_same_embed_dim else (
            "q_proj_weight", "k_proj_weight", "v_proj_weight")
        proj_layers = [by_param.get((name, p)) for p in projections]
        if out_proj is None or None in proj_layers:
            continue
        d, e = mha.head_dim, mha.embed_dim
        heads = range(mha.num_heads)
        blocks = 3 if mha._qkv_same_embed_dim else 1  # q, k, v rows in one in_proj_weight
        rows = tuple(b * e + h * d + j for b in range(blocks) for h in heads for j in range(d))
        row_roots = tuple(h for _ in range(blocks) for h in heads for _ in range(d))
        cols = tuple(h * d + j for h in heads for j in range(d))
        col_roots = tuple(h for h in heads for _ in range(d))
        members = [Member(name, "out", rows, row_roots, layer, None) for layer in proj_layers]
        members += [
            Member(f"{name}.out_proj" if name else "out_proj", "in", cols, col_roots, out_proj,
                   None),
            Member(name, "heads", tuple(heads), tuple(heads), None, _remove_heads),
        ]
        root = proj_layers[0]
        assert root is not None
        groups.append(Group(first_id + len(groups), root, mha.num_heads, tuple(members),
                            None, "head", note=f"{name} (nn.MultiheadAttention): {mha.num_heads} "
                            f"heads of {d}"))
    weight_layer = {layer.module_name: layer.name for layer in layers
                    if layer.param_name == "weight"}
    for spec in attention:
        fields = head_members(spec, weight_layer)
        if fields is None:
            continue
        groups.append(Group(first_id + len(groups), weight_layer[spec.qkv[0]], spec.kv_heads,
                            tuple(Member(*f) for f in fields), None, "head", note=spec.note))
    return groups


def _remove_heads(mha: nn.Module, heads: list[int]) -> nn.Module:
    """A SlimAttention without `heads`, to take the MultiheadAttention's place."""
    assert isinstance(mha, nn.MultiheadAttention)
    return SlimAttention.from_pruned(mha, heads)


def _grouped_blocks(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Grouped (not depthwise) convs: name -> (input channels, filters) per conv group."""
    return {
        name: (module.in_channels // module.groups, module.out_channels // module.groups)
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.conv._ConvNd) and 1 < module.groups < module.in_channels
    }


def _members(
    raw: Any, names: dict[nn.Module, str], weight_layer: dict[str, str],
    params: dict[int, str],
) -> tuple[list[Member], str | None, str | None]:
    """A Torch-Pruning group as members; why it is unsupported, if it is; its root layer.
    `params` names the model's parameters by id (bare ones are items of their own)."""
    members: list[Member] = []
    unsupported = None
    root_name = None
    for item in raw:
        target = item.dep.target.module
        root = tuple(int(r) for r in (item.root_idxs or item.idxs))
        if isinstance(target, nn.Parameter) and id(target) in params:
            # A bare parameter (timm's cls_token, ConvNeXt's gamma): Torch-Pruning cuts it
            # along the dimension it chose (the last one longer than 1).
            pname, dim = params[id(target)], int(item.dep.target.pruning_dim) % target.dim()
            members.append(Member(pname, "param", tuple(int(i) for i in item.idxs), root,
                                  None, parameter_handler(pname, dim), dim))
            continue
        if not isinstance(target, nn.Module) or target not in names:
            continue  # an operation (add, cat, flatten): nothing to store
        name = names[target]
        handler = item.dep.handler
        pruning_out = getattr(handler, "__name__", "") == "prune_out_channels"
        if isinstance(target, _RNN):
            # Our own functions remove the units: Torch-Pruning 1.6's LSTM pruner cuts
            # weight_hh and weight_ih along the wrong dimensions.
            rnn, why = recurrent.graph_members(name, target, pruning_out, item.idxs, root)
            members += [Member(*m) for m in rnn]
            unsupported = unsupported or why
            if root_name is None and pruning_out and not why:
                root_name = recurrent.graph_root(name, target)
            continue
        if isinstance(target, _WEIGHTED):
            kind = "out" if pruning_out else "in"
            if isinstance(target, nn.Conv1d | nn.Conv2d | nn.Conv3d) and \
                    target.groups > 1 and target.groups == target.in_channels:
                kind = "out"  # depthwise: input channel c is filter c
        elif isinstance(target, NORMS):
            kind = "norm"
            unsupported = unsupported or norm_unsupported(name, target)
        elif isinstance(target, nn.Embedding):
            kind = "embed"  # its table's columns: Torch-Pruning's EmbeddingPruner cuts them
        elif isinstance(target, nn.MultiheadAttention) and name in weight_layer and \
                f"{name}.out_proj" in weight_layer:
            # The residual stream's width through a self-attention layer: its projections'
            # input columns and its out_proj's rows (not its heads' size, as Torch-Pruning's
            # pruner would cut); slim() swaps in a SlimAttention of that width.
            idxs = tuple(int(i) for i in item.idxs)
            members += [
                Member(name, "in", idxs, root, weight_layer[name], None),
                Member(f"{name}.out_proj", "out", idxs, root, weight_layer[f"{name}.out_proj"],
                       None),
                Member(name, "width", idxs, root, None, remove_attention_width),
            ]
            continue
        elif any(p.requires_grad for p in target.parameters(recurse=False)):
            unsupported = (f"{name} ({type(target).__name__}) shares these channels, "
                           "and pruneviz cannot mask its parameters")
            kind = "other"
        else:
            continue
        members.append(Member(name, kind, tuple(int(i) for i in item.idxs), root,
                              weight_layer.get(name) if kind in ("out", "in") else None,
                              handler, 1 if kind == "embed" else 0))
        if root_name is None and kind == "out" and name in weight_layer:
            root_name = weight_layer[name]
    return members, unsupported, root_name




def _lossy(members: list[Member]) -> bool:
    """True when a member names only some of the group's root channels: Torch-Pruning may
    have dropped the others (or the channels are split between members; asking again
    root by root is right in both cases)."""
    roots = {r for m in members for r in m.root}
    return any(set(m.root) != roots for m in members)


def _units(
    members: list[Member], blocks: dict[str, tuple[int, int]]
) -> tuple[list[Member], int]:
    """Renumber root channels into units that can be removed on their own.

    Usually one root channel is one unit. But when several root channels feed the same
    channel of a member (a Linear's 32 outputs viewed as 8 channels of 4 pixels), those
    root channels can only go together: they are joined into one unit. So are the
    channels at the same position of every conv group of a grouped conv (`blocks`: name
    -> channels per conv group, in and out): the smaller conv must keep equal groups, and
    its weight reads input position p of every group, so position p goes everywhere.
    """
    roots = sorted({r for m in members for r in m.root})
    parent = {r: r for r in roots}

    def find(r: int) -> int:
        while parent[r] != r:
            parent[r] = parent[parent[r]]
            r = parent[r]
        return r

    for m in members:
        first_root: dict[int, int] = {}
        per = blocks.get(m.module, (0, 0))[0 if m.kind == "in" else 1] \
            if m.kind in ("in", "out") else 0
        for idx, root in zip(m.idxs, m.root, strict=True):
            other = first_root.setdefault(idx % per if per else idx, root)
            a, b = find(other), find(root)
            if a != b:
                parent[max(a, b)] = min(a, b)
    unit_of: dict[int, int] = {}
    for r in roots:
        unit_of.setdefault(find(r), len(unit_of))
    renumbered = []
    for m in members:
        # One (index, unit) pair per member channel: its several roots are now one unit.
        pairs = dict.fromkeys((i, unit_of[find(r)]) for i, r in zip(m.idxs, m.root, strict=True))
        renumbered.append(replace(m, idxs=tuple(i for i, _ in pairs),
                                  root=tuple(u for _, u in pairs)))
    return renumbered, len(unit_of)


def _merge(members: list[Member]) -> list[Member]:
    """One member per (module, kind), with every distinct (index, root) pair: Torch-Pruning
    may list a module twice (depthwise), and one channel may go with several roots."""
    merged: dict[tuple[str, str, str | None], tuple[Member, dict[tuple[int, int], None]]] = {}
    for m in members:
        pairs = merged.setdefault((m.module, m.kind, m.layer), (m, {}))[1]
        pairs.update(dict.fromkeys(zip(m.idxs, m.root, strict=True)))
    return [
        replace(first, idxs=tuple(i for i, _ in pairs), root=tuple(r for _, r in pairs))
        for first, pairs in merged.values()
    ]
