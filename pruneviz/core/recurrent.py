"""Recurrent layers (nn.LSTM, nn.GRU, nn.RNN) as coupled hidden units, and their removal.

A recurrent module holds `num_layers` layers, each in one or two directions. Layer l's
weights are `weight_ih_l{l}` (gate rows x inputs) and `weight_hh_l{l}` (gate rows x hidden),
with `_reverse` twins in a bidirectional module, and biases `bias_ih_l{l}` / `bias_hh_l{l}`.
Each weight has one row per gate and hidden unit: gate block g, unit u is row g*H + u (4
gates for an LSTM, 3 for a GRU, 1 for a plain RNN; H = hidden_size).

Hidden unit u of layer l is one prunable structure. It is, in both directions: row u of
every gate block of weight_ih_l{l} and weight_hh_l{l} (and of both biases), column u of
weight_hh_l{l} (the unit feeding back into its own layer), and the columns of the next
layer's weight_ih_l{l+1} that read it — column u, and in a bidirectional module also
column H + u (the backward direction's unit u; the next layer reads the two directions'
outputs side by side). The last layer's units are what the module returns: the traced
graph (Torch-Pruning) couples them to the layers reading its output — a Linear head
reading `out[:, -1]`, both directions' halves of it, or the final state `h_n[-1]`.

Why a unit spans both directions: nn.LSTM/GRU/RNN have one hidden_size for both, so the
slimmed module can only drop the same number of units in each direction; and what users
call "hidden unit u" of a bidirectional layer is the pair. The forward and backward unit u
are scored together and go together.

Masking computes what removing does, from a zero initial state: with its gate rows and
biases zeroed, a unit's pre-activations are all 0. An LSTM's gates then sit at 0.5 and
its candidate at tanh(0) = 0, so its cell stays c' = 0.5*c + 0.5*0 = 0 and its output
h = 0.5*tanh(0) = 0. A GRU's reset and update gates sit at 0.5 and its candidate at
n = tanh(0 + 0.5*0) = 0, so h' = (1 - 0.5)*0 + 0.5*h = h/2, which stays 0 from h = 0. A
plain RNN computes tanh(0) or relu(0) = 0. A unit that is always 0 adds nothing through
the columns that read it, which are zeroed too. (A given non-zero initial state breaks
this; such calls are not traced as one layer, see `one_node`.)

Slimming keeps one nn.Module of the same type: hidden_size drops, every layer and
direction is cut alike, and the flat weight list the cuDNN / CPU kernels read is rebuilt.
As nn.RNNBase has a single hidden_size, every layer must lose the same number of units
(a uniform plan does); otherwise slimming says so. LSTMs with proj_size are refused.

coupling.py turns the member descriptions made here (`MemberSpec`) into its Members.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from pruneviz.core.layers import eval_mode

RECURRENT = (nn.LSTM, nn.GRU, nn.RNN)
# Rows per hidden unit in weight_ih / weight_hh: one per gate.
GATES: dict[type[nn.Module], int] = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}

Handler = Callable[[nn.Module, list[int]], Any]
# (module, kind, idxs, root, layer, handler): the fields of coupling.Member, in order.
MemberSpec = tuple[str, str, tuple[int, ...], tuple[int, ...], str | None, Handler | None]
# (root layer, units, members, why it is unsupported): the fields of a coupling.Group.
GroupSpec = tuple[str, int, list[MemberSpec], str | None]


def _suffixes(rnn: nn.RNNBase) -> tuple[str, ...]:
    return ("", "_reverse") if rnn.bidirectional else ("",)


def _qualified(name: str, param: str) -> str:
    return f"{name}.{param}" if name else param


def refused(name: str, rnn: nn.RNNBase) -> str | None:
    """Why the hidden units of `rnn` cannot be pruned as units, if they cannot."""
    if int(getattr(rnn, "proj_size", 0)):
        return (f"{name} is an LSTM with proj_size={rnn.proj_size} (its outputs are "
                "projections of the hidden units, read through weight_hr): pruneviz does not "
                "couple its hidden units")
    return None


def layer_members(
    name: str, rnn: nn.RNNBase, layer: int, units: list[int], root: tuple[int, ...]
) -> list[MemberSpec]:
    """Members of hidden units `units` of `layer` (their roots `root`): gate rows and
    recurrent columns in every direction, the next layer's input columns, and the removal
    step (indices layer * hidden_size + unit, one call for every layer of the module)."""
    size, gates = rnn.hidden_size, GATES[type(rnn)]
    rows = tuple(g * size + u for g in range(gates) for u in units)
    row_roots = tuple(r for _ in range(gates) for r in root)
    members: list[MemberSpec] = []
    for sfx in _suffixes(rnn):
        for kind in ("ih", "hh"):
            weight = _qualified(name, f"weight_{kind}_l{layer}{sfx}")
            members.append((name, "out", rows, row_roots, weight, None))
        members.append((name, "in", tuple(units), root,
                        _qualified(name, f"weight_hh_l{layer}{sfx}"), None))
    if layer + 1 < rnn.num_layers:
        directions = len(_suffixes(rnn))
        cols = tuple(d * size + u for d in range(directions) for u in units)
        col_roots = tuple(r for _ in range(directions) for r in root)
        for sfx in _suffixes(rnn):
            members.append((name, "in", cols, col_roots,
                            _qualified(name, f"weight_ih_l{layer + 1}{sfx}"), None))
    members.append((name, "rnn", tuple(layer * size + u for u in units), root, None,
                    prune_hidden))
    return members


def graph_members(
    name: str, rnn: nn.RNNBase, pruning_out: bool, idxs: Any, root: tuple[int, ...]
) -> tuple[list[MemberSpec], str | None]:
    """A recurrent module met in the traced graph: its last layer's hidden units (out) or
    its first layer's input features (in), as members; or why it cannot be pruned.

    The graph counts a bidirectional module's outputs as 2 * hidden_size channels (see
    `graph_pruners`): output channel i is unit i mod hidden_size, so a unit's forward and
    backward channels share their member indices and coupling joins their roots.
    """
    why = refused(name, rnn)
    if why:
        return [], why
    channels = [int(i) for i in idxs]
    if not pruning_out:
        members: list[MemberSpec] = [
            (name, "in", tuple(channels), root, _qualified(name, f"weight_ih_l0{sfx}"), None)
            for sfx in _suffixes(rnn)]
        members.append((name, "rnn_in", tuple(channels), root, None, prune_inputs))
        return members, None
    units = [i % rnn.hidden_size for i in channels]
    return layer_members(name, rnn, rnn.num_layers - 1, units, root), None


def inner_groups(model: nn.Module) -> list[GroupSpec]:
    """One group per hidden layer below the last of every multi-layer recurrent module
    (the last layer's units are found in the traced graph, with their readers), and for
    a refused module (proj_size) one unsupported group per layer, saying why."""
    specs: list[GroupSpec] = []
    for name, rnn in model.named_modules():
        if not isinstance(rnn, RECURRENT):
            continue
        why = refused(name, rnn)
        if why:
            params = dict(rnn.named_parameters(recurse=False))
            for layer in range(rnn.num_layers):
                outs: list[MemberSpec] = [
                    (name, "out", (), (), _qualified(name, weight), None)
                    for k in ("ih", "hh", "hr") for sfx in _suffixes(rnn)
                    if (weight := f"weight_{k}_l{layer}{sfx}") in params]
                specs.append((_qualified(name, f"weight_ih_l{layer}"), rnn.hidden_size,
                              outs, why))
            continue
        for layer in range(rnn.num_layers - 1):
            units = list(range(rnn.hidden_size))
            specs.append((_qualified(name, f"weight_ih_l{layer}"), rnn.hidden_size,
                          layer_members(name, rnn, layer, units, tuple(units)), None))
    return specs


def graph_root(name: str, rnn: nn.RNNBase) -> str:
    """The layer a traced group of the module's output units is named by."""
    return _qualified(name, f"weight_ih_l{rnn.num_layers - 1}")


def graph_pruners() -> dict[type[nn.Module], Any]:
    """Torch-Pruning pruners that tell its graph what a recurrent module is: input_size
    features in, hidden_size outputs per direction out (its own LSTM pruner counts one
    direction only). They never prune: `prune_hidden` / `prune_inputs` do."""
    import torch_pruning as tp

    class _Recurrent(tp.pruner.function.LSTMPruner):  # type: ignore[misc]
        def get_out_channels(self, layer: nn.Module) -> int:
            assert isinstance(layer, nn.RNNBase)
            return int(layer.hidden_size) * (2 if layer.bidirectional else 1)

        def get_in_channels(self, layer: nn.Module) -> int:
            assert isinstance(layer, nn.RNNBase)
            return int(layer.input_size)

    pruner = _Recurrent()
    return dict.fromkeys(RECURRENT, pruner)


def _keep(size: int, idxs: list[int]) -> Tensor:
    return torch.tensor(sorted(set(range(size)) - set(idxs)), dtype=torch.long)


def _set(rnn: nn.Module, name: str, value: Tensor) -> None:
    setattr(rnn, name, nn.Parameter(value.contiguous(), requires_grad=False))


def prune_hidden(rnn: nn.Module, idxs: list[int]) -> None:
    """Remove hidden units from every layer of an LSTM/GRU/RNN: `idxs` are
    layer * hidden_size + unit. Each layer's (and direction's) gate rows and biases go,
    its recurrent columns, and the next layer's input columns for both directions.

    Raises ValueError when the layers lose different numbers of units (the module has
    one hidden_size).
    """
    assert isinstance(rnn, nn.RNNBase)
    size, layers = rnn.hidden_size, rnn.num_layers
    gone = [sorted({i % size for i in idxs if i // size == layer}) for layer in range(layers)]
    if len({len(g) for g in gone}) > 1:
        kept = ", ".join(str(size - len(g)) for g in gone)
        raise ValueError(
            f"its layers would keep {kept} hidden units, but nn.{type(rnn).__name__} has "
            "one hidden_size for all its layers; prune the same number of units in every "
            "layer (a uniform plan does) to slim it")
    if not gone[0]:
        return
    gates, directions = GATES[type(rnn)], len(_suffixes(rnn))
    keeps = [_keep(size, g) for g in gone]
    with torch.no_grad():
        for layer, keep in enumerate(keeps):
            rows = torch.cat([keep + g * size for g in range(gates)])
            for sfx in _suffixes(rnn):
                ih, hh = f"weight_ih_l{layer}{sfx}", f"weight_hh_l{layer}{sfx}"
                weight_ih = getattr(rnn, ih)[rows]
                if layer > 0:  # its inputs are the previous layer's units, per direction
                    below = keeps[layer - 1]
                    cols = torch.cat([below + d * size for d in range(directions)])
                    weight_ih = weight_ih[:, cols]
                _set(rnn, ih, weight_ih)
                _set(rnn, hh, getattr(rnn, hh)[rows][:, keep])
                if rnn.bias:
                    for b in (f"bias_ih_l{layer}{sfx}", f"bias_hh_l{layer}{sfx}"):
                        _set(rnn, b, getattr(rnn, b)[rows])
    rnn.hidden_size = size - len(gone[0])
    rnn._init_flat_weights()


def prune_inputs(rnn: nn.Module, idxs: list[int]) -> None:
    """Remove input features of an LSTM/GRU/RNN: columns of its first layer's weight_ih,
    in both directions."""
    assert isinstance(rnn, nn.RNNBase)
    keep = _keep(rnn.input_size, idxs)
    with torch.no_grad():
        for sfx in _suffixes(rnn):
            _set(rnn, f"weight_ih_l0{sfx}", getattr(rnn, f"weight_ih_l0{sfx}")[:, keep])
    rnn.input_size = len(keep)
    rnn._init_flat_weights()


def early_states_read(
    model: nn.Module, example: Tensor | tuple[Tensor, ...]
) -> dict[str, str]:
    """Multi-layer recurrent modules whose final state of a layer below the last
    (`h_n[0]` of a 2-layer LSTM, or all of `h_n`) the model's output depends on, with
    why their units cannot be coupled.

    The traced graph sees one node per module, so it would couple every reader of h_n
    with the last layer's units; a reader of layer 0's state reads layer 0's units
    instead. Found by differentiating a random projection of the output with respect to
    the states.
    """
    leaves: dict[str, tuple[nn.RNNBase, list[Tensor]]] = {}

    def tap(name: str) -> Callable[[nn.Module, Any, Any], Any]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
            if not isinstance(output, tuple) or len(output) != 2:
                return None
            out, hidden = output
            states = list(hidden) if isinstance(hidden, tuple) else [hidden]
            if not all(isinstance(t, Tensor) for t in states):
                return None
            made = [t.detach().requires_grad_() for t in states]
            assert isinstance(module, nn.RNNBase)
            leaves[name] = (module, made)
            return out, (tuple(made) if isinstance(hidden, tuple) else made[0])

        return hook

    handles = [module.register_forward_hook(tap(name)) for name, module in model.named_modules()
               if isinstance(module, RECURRENT) and module.num_layers > 1]
    if not handles:
        return {}
    try:
        with eval_mode(model), torch.enable_grad():
            out = model(*example) if isinstance(example, tuple) else model(example)
            outs = [t for t in (out if isinstance(out, tuple | list) else [out])
                    if isinstance(t, Tensor) and t.requires_grad and t.is_floating_point()]
            states = [t for _, made in leaves.values() for t in made]
            if not outs or not states:
                return {}
            generator = torch.Generator(device=outs[0].device).manual_seed(0)
            projection = sum((t * torch.randn(t.shape, generator=generator, device=t.device,
                                              dtype=t.dtype)).sum() for t in outs)
            assert isinstance(projection, Tensor)
            grads = torch.autograd.grad(projection, states, allow_unused=True)
    except Exception as exc:  # noqa: BLE001 - unchecked: refuse rather than guess
        return {name: (f"pruneviz could not check which final states of {name} the model "
                       f"reads ({type(exc).__name__}: {exc})")
                for name, module in model.named_modules()
                if isinstance(module, RECURRENT) and module.num_layers > 1}
    finally:
        for handle in handles:
            handle.remove()
    found: dict[str, str] = {}
    position = 0
    for name, (rnn, made) in leaves.items():
        directions = len(_suffixes(rnn))
        for grad in grads[position:position + len(made)]:
            if grad is not None and bool(grad[:-directions].ne(0).any()):
                found[name] = (
                    f"the model reads the final state of a layer of {name} below its last "
                    "(h_n[0] or the whole h_n); pruneviz couples only the last layer's state "
                    "with its readers")
        position += len(made)
    return found


class _WholeRecurrent(torch.autograd.Function):
    """The outputs of a recurrent layer, as one autograd node fed by its input.

    Only the graph matters (it is traced, never differentiated): its inputs are the
    layer's input and weights, its outputs copies of the layer's outputs.
    """

    @staticmethod
    def forward(ctx: Any, count: int, *tensors: Tensor) -> tuple[Tensor, ...]:
        ctx.inputs = len(tensors)
        return tuple(t.clone() for t in tensors[len(tensors) - count:])

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[None, ...]:
        return (None,) * (1 + int(ctx.inputs))


def one_node(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
    """Forward hook: a recurrent layer's outputs coming out of one node fed by its input.

    On the CPU a GRU or plain RNN (unlike an LSTM, which runs one fused kernel) is
    recorded step by step, gate splits and all; Torch-Pruning then walks from the layer
    before it into those steps and fails on their splits (a Linear projection before a
    GRU loses every group of the model). As one node, the layer is what its pruner says:
    input features in, hidden units out. Left alone: packed sequences and a given
    initial state (its channels are hidden units, not input features).
    """
    if len(inputs) != 1 or not isinstance(inputs[0], Tensor) or \
            not isinstance(output, tuple) or len(output) != 2:
        return None
    out, hidden = output
    states = list(hidden) if isinstance(hidden, tuple) else [hidden]
    produced = [out, *states]
    if not all(isinstance(t, Tensor) for t in produced):
        return None
    made = _WholeRecurrent.apply(  # type: ignore[no-untyped-call]
        len(produced), inputs[0], *module.parameters(recurse=False),
        *(t.detach() for t in produced))
    new_out, *new_states = made
    return new_out, (tuple(new_states) if isinstance(hidden, tuple) else new_states[0])


__all__ = ["GATES", "RECURRENT", "GroupSpec", "MemberSpec", "early_states_read",
           "graph_members", "graph_pruners", "graph_root", "inner_groups", "layer_members",
           "one_node", "prune_hidden", "prune_inputs", "refused"]
