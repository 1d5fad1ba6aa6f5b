"""PruningSession: live, reversible application of pruning plans to one model copy.

The session owns the only mutable copy of a model. It keeps the original tensors once
(or reads them from a model its caller keeps unchanged: `share_originals`), scores a
(layer, granularity, criterion) the first time a plan needs it, and keeps one score per
structure, so that applying a new plan is a selection in the scores plus one
`w = w0 * mask` per changed layer, written straight into the parameters (no forward
hooks, no extra tensors at inference: the pruned model runs at the dense model's speed
and memory). Score tables not in use are kept within `TABLE_BUDGET` of the weights'
bytes, so a session costs about its model copy plus the tables its plan uses.

Masking an output structure also zeroes everything it feeds — its bias and the scale
and shift of the BatchNorm that follows — so the structure's output is exactly zero and
the masked model computes what the model with that structure removed would compute.

The session keeps the originals and writes; its helpers compute: `scoring.LayerScorer`
the score tables, `keeps.PlanMasks` the masks of decisions, `block_swap.BlockSwap` the
removed blocks, and `results` each layer's counts.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from pruneviz.core.block_swap import BlockSwap
from pruneviz.core.blocks import Block
from pruneviz.core.coupling import Group, find_groups, output_layers
from pruneviz.core.criteria import Structures
from pruneviz.core.decide import Decisions, decide_entry, decide_plan
from pruneviz.core.granularity import Granularity, parse_granularity
from pruneviz.core.groups import CoupledGroups
from pruneviz.core.keeps import PlanMasks, fed_tensors
from pruneviz.core.layers import (
    PrunableLayer,
    check_finite,
    find_prunable_layers,
    fingerprint,
    values_key,
)
from pruneviz.core.plan import GlobalPlan, LayerPlan, Plan
from pruneviz.core.reach import dead_layers, unused_reason
from pruneviz.core.results import LayerResult, deciding_group, layer_result, removed_result
from pruneviz.core.scores import ScoreTable
from pruneviz.core.scoring import LayerScorer
from pruneviz.core.writes import Keep, restore, rewrite
from pruneviz.data.tensors import TensorData
from pruneviz.errors import ModelError

# Score tables not used by the current plan are kept up to this fraction of the bytes of
# the weights they score (least recently used dropped first).
TABLE_BUDGET = 0.5


@dataclass(frozen=True)
class SessionMemory:
    """What a session holds, in bytes: its model copy, originals it copied (none when
    shared), score tables, and the budget of tables beyond those in use."""

    total: int
    model: int
    originals: int
    tables: int
    tables_budget: int


class PruningSession:
    """Applies plans to a private copy of a model, reversibly and cheaply.

    `example_input` is a batch of what the model takes (batch dimension first);
    `calibration` is data for the data-driven criteria (taylor, apoz, activation).
    The model passed in is deep-copied and never changed. With `share_originals` the
    session reads the original values from that model's own tensors instead of keeping
    a copy: only for a caller that never changes the model while the session lives (the
    workbench's pristine model).
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: Tensor | tuple[Tensor, ...],
        *,
        calibration: TensorData | None = None,
        name: str = "model",
        seed: int = 0,
        share_originals: bool = False,
    ) -> None:
        check_finite(model)
        self.name = name
        self.seed = seed
        self.model = copy.deepcopy(model)
        self.model.eval()
        self.example_input = example_input
        self.calibration = calibration
        graph = _traced(model, example_input) if share_originals else None
        if graph is None:
            layers = find_prunable_layers(self.model, example_input)
            groups, note = find_groups(self.model, example_input, layers)
            graph = _Graph(layers, groups, note, output_layers(self.model, example_input, layers),
                           dead_layers(self.model, example_input, layers))
            if share_originals:  # the caller keeps `model` unchanged: its graph holds
                _remember(model, example_input, graph)
        self.layers: list[PrunableLayer] = list(graph.layers)
        self.layer_by_name = {layer.name: layer for layer in self.layers}
        self.fingerprint = fingerprint(self.model)
        self._params = dict(self.model.named_parameters())
        self.groups, self.graph_note = list(graph.groups), graph.note
        self.output_layers = set(graph.output_layers)
        # Layers whose output never reaches the model's output (an unused pooler).
        self.dead_layers = set(graph.dead_layers)
        self._coupled = CoupledGroups(
            self.groups, self.layer_by_name,
            {n: tuple(p.shape) for n, p in self._params.items()}, self.output_layers)
        # The originals of every tensor a plan may change: weights, fed biases and norms.
        kept = dict(model.named_parameters()) if share_originals else None
        self._shared = {n: p.data_ptr() for n, p in (kept or {}).items()}
        self._originals: dict[str, Tensor] = {}
        for tensor_name in [
            *(t for layer in self.layers for t in [*fed_tensors(layer, self._params),
                                                   layer.weight]),
            *(t for channels in self._coupled.channels.values() for t in channels),
        ]:
            if tensor_name not in self._originals:
                self._originals[tensor_name] = (
                    kept[tensor_name].detach() if kept is not None
                    else self._params[tensor_name].detach().clone())
        data = calibration.x if calibration is not None else (
            example_input if isinstance(example_input, Tensor) else None)
        self._block_swap = BlockSwap(self.model, self.layers, self._params, self._originals, data,
                                     before_write=self._changing)
        self._scorer = LayerScorer(
            self.model, self.layers, self._originals, self._coupled, self.output_layers,
            calibration=calibration, seed=seed,
            originals_in_place=self._block_swap.originals_in_place,
            budget_bytes=int(TABLE_BUDGET * sum(
                self._originals[layer.weight].numel()
                * self._originals[layer.weight].element_size() for layer in self.layers)))
        self._masks = PlanMasks(self.layers, self._params, self._scorer, self._coupled)
        self._decided = Decisions()
        self._frozen: set[str] = set()  # decisions kept across rebase(keep_decisions=True)
        self.plan = Plan()
        self.notes: list[str] = []
        self._results: dict[str, LayerResult] = {}
        self._stale: set[str] = set()
        self._weights_key: str | None = None
        self._revisions: dict[str, int] = {}  # how many times each tensor was written
        self._written: dict[str, Keep] = {}  # the keep each pruned tensor holds now
        # Called before the session writes the model, also for a moment (the originals
        # shown to gather calibration statistics or rank blocks): a background
        # measurement of the current model stops there: `on_change.append(stop)`.
        self.on_change: list[Callable[[], None]] = []
        self._originals_changed()
        self._refresh_results(self.layers)

    # -- the model and its originals -----------------------------------------------------
    @property
    def layer_names(self) -> list[str]:
        """Names of the prunable layers, in model order."""
        return [layer.name for layer in self.layers]

    def original(self, tensor_name: str) -> Tensor:
        """The kept original of a parameter the session may change (read-only: do not edit)."""
        return self._originals[tensor_name]

    def stamp(self, plan: Plan) -> Plan:
        """`plan` marked as made for this session's model (name and fingerprint)."""
        return plan.for_model(self.name, self.fingerprint)

    def weights_key(self) -> str:
        """A hash of the original weights' values (the fingerprint is the architecture's):
        results computed from the weights are cached under it."""
        if self._weights_key is None:
            self._weights_key = values_key(self._originals)
        return self._weights_key

    def revision(self, tensor_name: str) -> int:
        """A number that changes whenever the session writes parameter `tensor_name` (with
        `weights_key`, it says whether a figure computed from the tensor still holds)."""
        return self._revisions.get(tensor_name, 0)

    def memory(self) -> SessionMemory:
        """Bytes the session holds beyond the model it was given (see SessionMemory)."""
        model = sum(t.numel() * t.element_size()
                    for t in [*self.model.parameters(), *self.model.buffers()])
        own = sum(t.numel() * t.element_size() for name, t in self._originals.items()
                  if t.data_ptr() != self._shared.get(name, -1))
        tables = self._scorer.tables_bytes()
        budget = self._scorer.budget_bytes or 0
        return SessionMemory(model + own + tables, model, own, tables, budget)

    def state_dict(self) -> dict[str, Tensor]:
        """The model's weights and buffers as they are now (detached, not copied), with the
        original ones of the blocks the plan removed: a state dict of the whole
        architecture, which a fresh copy of the model (and `rebase`) loads."""
        return self._block_swap.whole_state(
            {k: v.detach() for k, v in self.model.state_dict().items()})

    def changed_tensors(self) -> list[str]:
        """Parameters whose current values differ from the originals (bit for bit)."""
        return [name for name, original in self._originals.items()
                if not torch.equal(self._params[name], original)]

    # -- scores and groups (LayerScorer) -------------------------------------------------
    def structures(self, layer: str, granularity: Granularity) -> Structures:
        """The structures of `layer` at `granularity` (cached)."""
        return self._scorer.structures(layer, granularity)

    def scores(self, layer: str, granularity: Granularity, criterion: str) -> ScoreTable:
        """Scores of `layer`'s structures under `criterion`, computed once on the originals."""
        return self._scorer.scores(layer, granularity, criterion)

    def unsupported(self, layer: str, granularity: Granularity, criterion: str) -> str | None:
        """Why `layer` cannot be pruned at `granularity` by `criterion`, or None if it can
        (an unused layer, whose output does not reach the model's output, never can)."""
        if layer in self.dead_layers:
            return unused_reason(layer)
        return self._scorer.unsupported(layer, granularity, criterion)

    def group_of(self, layer: str, granularity: Granularity = Granularity.FILTER) -> Group | None:
        """The coupled group whose channels are `layer`'s outputs (filter) or inputs (channel)."""
        return self._coupled.group_of(layer, granularity)

    def coupled_with(self, layer: str) -> list[str]:
        """Layers pruned together with `layer`'s filters (itself first), or just [layer]."""
        group = self.group_of(layer)
        if group is None:
            return [layer]
        return [layer] + [n for n in group.layers if n != layer]

    def group_scores(
        self, group: int, criterion: str, side: Granularity = Granularity.FILTER
    ) -> ScoreTable:
        """Importance of a group's channels, from the members on one side: the layers that
        produce the channels (filter) or those that read them (channel).

        One member: its own scores, in its own units. Several (a residual sum of several
        branches): each member's scores divided by its mean, so that no layer dominates
        by scale, then averaged — as Torch-Pruning's group importance does.
        """
        return self._scorer.group_table(group, criterion, side)

    def uniform_plan(
        self, sparsity: float, granularity: Granularity | str = Granularity.UNSTRUCTURED,
        criterion: str = "l1",
    ) -> tuple[Plan, dict[str, str]]:
        """The same amount on every layer that supports it; the others with the reason."""
        g = parse_granularity(granularity)
        entry = LayerPlan(g, criterion, sparsity=None if g.n_m else sparsity)
        skipped = {}
        for name in self.layer_names:
            reason = self.unsupported(name, g, criterion)
            if reason is not None:
                skipped[name] = reason
        plan = Plan({n: entry for n in self.layer_names if n not in skipped})
        return self.stamp(plan), skipped

    def global_plan(
        self, sparsity: float, granularity: Granularity | str = Granularity.UNSTRUCTURED,
        criterion: str = "l1", max_layer_sparsity: float | None = None,
    ) -> tuple[Plan, dict[str, str]]:
        """One ranking across every layer that supports it, to `sparsity` in all; the
        others left out with the reason (as `uniform_plan` skips them)."""
        g = parse_granularity(granularity)
        skipped = {}
        for name in self.layer_names:
            reason = self.unsupported(name, g, criterion)
            if reason is not None:
                skipped[name] = reason
        members = tuple(n for n in self.layer_names if n not in skipped)
        if not members:
            return self.stamp(Plan()), skipped
        section = GlobalPlan(g, criterion, sparsity=sparsity, layers=members,
                             max_layer_sparsity=max_layer_sparsity)
        return self.stamp(Plan(global_=section)), skipped

    # -- blocks (BlockSwap) --------------------------------------------------------------
    def blocks(self) -> list[Block]:
        """Removable blocks and layers, least important first (measured once on the
        calibration data with the original weights)."""
        return self._block_swap.blocks()

    def removed_blocks(self) -> list[str]:
        """Blocks the current plan replaced by the identity."""
        return self._block_swap.removed()

    # -- the current decisions -----------------------------------------------------------
    def mask(self, layer: str) -> Tensor:
        """The current boolean keep-mask of `layer`'s weight (all True when unpruned)."""
        weight = self._params[self._layer(layer).weight]
        keep = self._masks.weight_keep(self._layer(layer), self._decided)
        return (keep.mask(weight.shape) if keep is not None
                else torch.ones_like(weight, dtype=torch.bool))

    def pruned_units(self) -> dict[int, list[int]]:
        """For each coupled group with a decision: the units (channels) it prunes."""
        return self._decided.pruned_units()

    def uncoupled_structured(self) -> list[str]:
        """Layers with filter/channel pruning decided alone (zeroed, not removable)."""
        return self._decided.uncoupled_structured()

    def table_for(self, layer: str) -> tuple[ScoreTable, int] | None:
        """The score table that decides `layer`'s pruning now, and how many it prunes."""
        return self._decided.table_for(
            layer, (self._coupled.out_group.get(layer), self._coupled.in_group.get(layer)))

    def result(self, layer: str) -> LayerResult:
        """Counts, sparsity and threshold of one layer under the current plan."""
        if layer in self._stale:
            self._refresh_results([self._layer(layer)])
        return self._results[layer]

    def results(self) -> list[LayerResult]:
        """Counts, sparsity and threshold of every prunable layer, in model order."""
        return [self.result(layer.name) for layer in self.layers]

    def preview(self, layer: str, entry: LayerPlan) -> tuple[Tensor, int, float | None]:
        """What `entry` would prune in `layer`, without writing anything.

        Returns the weight-shaped keep-mask, the number of structures pruned (for N:M:
        weights) and the threshold in score units (None for N:M).
        """
        decision, _, group = decide_entry(self._scorer, layer, entry)
        mask = self._masks.entry_mask(layer, entry.granularity, decision, group)
        pruned = decision.pruned if decision.pruned >= 0 else int((~mask).sum())
        return mask, pruned, decision.threshold

    def keep_masks(self) -> dict[str, Tensor]:
        """Boolean keep-masks of every parameter the current plan prunes (weights, and the
        biases and norm entries of pruned channels), by parameter name. Fine-tuning holds
        the pruned entries at zero with them."""
        kept = [layer for layer in self.layers if not self._block_swap.removes(layer)]
        live = {name for name, _ in self.model.named_parameters()}  # not in removed blocks
        return {name: keep.mask(self._params[name].shape)
                for name, keep in self._masks.keeps(self._decided, kept).items()
                if keep is not None and name in live}

    # -- changing the model --------------------------------------------------------------
    def apply(self, plan: Plan) -> None:
        """Make the model's weights those of `plan` applied to the originals.

        Only layers whose decision changed are rewritten; `results()` then reports them.
        On any error the model is left exactly as it was before the call.
        """
        plan.validate_for(self.layer_names, self.fingerprint)
        self._block_swap.check(plan.blocks)
        decided = decide_plan(self._scorer, plan)  # may raise; nothing written
        if decided.groups:
            self._coupled.check_removable(plan.blocks)
        changed, weights, channels = self._masks.touched(self._decided, decided)
        if weights or channels or set(plan.blocks) != set(self.plan.blocks):
            self._changing()
        with torch.no_grad():
            for name in weights.values():
                layer = self._layer(name)
                self._write(layer.weight, self._masks.weight_keep(layer, decided))
            for tensor_name in channels:
                self._write(tensor_name, self._masks.channel_keep(tensor_name, decided))
        self._decided = decided
        self._scorer.keep_in_use(decided.tables())
        self._frozen -= changed
        self.plan = plan
        self.notes = decided.notes
        self._stale.update(weights.values())
        self._stale.update(self._block_swap.swap(set(plan.blocks)))

    @contextmanager
    def applied(self, plan: Plan) -> Iterator[None]:
        """`plan` applied for the length of a `with` block; then the plan applied before it
        is applied again, also when the block raises (the same weights, bit for bit)."""
        previous = self.plan
        self.apply(plan)  # on error nothing was changed: nothing to restore
        try:
            yield
        finally:
            self.apply(previous)

    def rebase(self, state: dict[str, Tensor], *, keep_decisions: bool = False) -> None:
        """Make `state` (this model's weights after training, say) the originals, and
        re-apply the current plan to them: scores are computed afresh from the new
        values. With `keep_decisions`, the current decisions (which structures are
        pruned) are kept instead of re-deciding on the new scores — for weights trained
        under these very masks, whose pruned entries are already zero. The old originals
        are dropped from the session — keep the pristine model elsewhere (the workbench's
        reference) to go back to it.

        While the plan removes blocks, `state` may lack their tensors (a state dict of the
        model without them, as training it gives): they keep their values. `state_dict()`
        gives the whole architecture's."""
        plan, decided, notes = self.plan, self._decided, self.notes
        gone = self._block_swap.removed()
        self._changing()
        self.reset()  # the removed blocks are back in the model
        state = dict(state)
        for block in gone:
            for key, tensor in self.model.get_submodule(block).state_dict(
                    prefix=block + ".").items():
                state.setdefault(key, tensor)
        try:
            self.model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelError(f"the new weights do not fit {self.name}: {exc}") from None
        check_finite(self.model)
        with torch.no_grad():  # new tensors: shared originals are never written
            for name in self._originals:
                self._originals[name] = self._params[name].detach().clone()
        self._originals_changed()
        # (N:M masks kept with the decisions: the kept N:M decisions' masks come from there)
        self._scorer.forget(keep_nm_masks=keep_decisions)
        if keep_decisions:
            # The kept decisions' tables rank the old weights: count these layers' non-zero
            # weights from the weights themselves until a new decision replaces them.
            self._frozen = set(decided.layers)
            with torch.no_grad():
                for tensor_name, keep in self._masks.keeps(decided, self.layers).items():
                    self._write(tensor_name, keep)
            self._decided, self.plan, self.notes = decided, plan, notes
            self._stale.update(self.layer_names)
            self._block_swap.swap(set(plan.blocks))
            return
        self._refresh_results(self.layers)
        self.apply(plan)

    def reset(self) -> None:
        """Return every parameter the session touched to its original, bit for bit."""
        self._changing()
        with torch.no_grad():  # every tensor, whatever wrote it (training, say)
            for tensor_name, original in self._originals.items():
                self._revisions[tensor_name] = self._revisions.get(tensor_name, 0) + 1
                restore(self._params[tensor_name].data, original)
        self._written.clear()
        self._decided = Decisions()
        self._frozen = set()
        self.notes = []
        self._block_swap.swap(set())
        self.plan = Plan()
        self._refresh_results(self.layers)

    # -- private -------------------------------------------------------------------------
    def _changing(self) -> None:
        for listener in self.on_change:
            listener()

    def _layer(self, name: str) -> PrunableLayer:
        return self._scorer.layer(name)

    def _write(self, tensor_name: str, keep: Keep | None) -> None:
        """Make the tensor `w0 * keep` (+0.0 where pruned), or the original (None: all
        kept), rewriting only what changed since the last write."""
        self._revisions[tensor_name] = self._revisions.get(tensor_name, 0) + 1
        param, original = self._params[tensor_name].data, self._originals[tensor_name]
        written = self._written.pop(tensor_name, None)
        if keep is None:
            if written is not None:
                restore(param, original)
            return
        rewrite(param, original, written, keep)
        self._written[tensor_name] = keep

    def _originals_changed(self) -> None:
        """Forget what was derived from the originals' values (not their scores)."""
        self._weights_key = None
        self._original_nonzero = {
            layer.name: int(torch.count_nonzero(self._originals[layer.weight]))
            for layer in self.layers
        }
        self._results = {}

    def _refresh_results(self, layers: Sequence[PrunableLayer]) -> None:
        """Counts from the precomputed tables (exact; no pass over the weights)."""
        for layer in layers:
            self._stale.discard(layer.name)
            self._results[layer.name] = self._result_of(layer)

    def _result_of(self, layer: PrunableLayer) -> LayerResult:
        group = self._coupled.out_group.get(layer.name)
        if self._block_swap.removes(layer):
            return removed_result(layer, group)
        decision = self._decided.layers.get(layer.name)
        nm = (self._scorer.nm_mask(layer.name, decision.granularity, decision.criterion)
              if decision is not None and decision.granularity.n_m is not None else None)
        coupled = deciding_group(self._coupled, layer.name, self._decided.groups,
                                 self.plan.layers.get(layer.name))
        return layer_result(
            layer, self._params[layer.weight], decision, coupled, nm=nm,
            original_nonzero=self._original_nonzero[layer.name],
            frozen=layer.name in self._frozen, group=group)


@dataclass(frozen=True)
class _Graph:
    """What tracing a model finds: its prunable layers, coupled groups (and why none, if
    the trace failed) and output layers — names only, valid for any copy of the model."""

    layers: list[PrunableLayer]
    groups: list[Group]
    note: str | None
    output_layers: set[str]
    dead_layers: set[str] = field(default_factory=set)


# Traced graphs of models whose owner keeps them unchanged (share_originals), per model
# object and input signature: a second session on the same model (another browser tab)
# does not trace it again. Dropped with the model.
_GRAPHS: weakref.WeakKeyDictionary[nn.Module, dict[str, _Graph]] = weakref.WeakKeyDictionary()


def _signature(example: Tensor | tuple[Tensor, ...]) -> str:
    parts = example if isinstance(example, tuple) else (example,)
    return ";".join(f"{tuple(t.shape)}:{t.dtype}:{t.device}" for t in parts)


def _traced(model: nn.Module, example: Tensor | tuple[Tensor, ...]) -> _Graph | None:
    return _GRAPHS.get(model, {}).get(_signature(example))


def _remember(model: nn.Module, example: Tensor | tuple[Tensor, ...], graph: _Graph) -> None:
    _GRAPHS.setdefault(model, {})[_signature(example)] = graph
