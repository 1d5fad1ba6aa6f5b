"""PruningSession: live, reversible application of pruning plans to one model copy.

The session owns the only mutable copy of a model. It keeps the original tensors once,
scores every (layer, granularity, criterion) once and keeps the scores sorted, so that
applying a new plan is a lookup in sorted scores plus one `w = w0 * mask` per changed
layer, written straight into the parameters (no forward hooks, no extra tensors at
inference: the pruned model runs at the dense model's speed and memory).

Masking an output structure also zeroes everything it feeds — its bias and the scale
and shift of the BatchNorm that follows — so the structure's output is exactly zero and
the masked model computes what the model with that structure removed would compute.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from pruneviz.core.block_swap import BlockSwap
from pruneviz.core.blocks import Block
from pruneviz.core.coupling import Group, find_groups, output_modules
from pruneviz.core.criteria import Structures
from pruneviz.core.decide import Decision, decide_entry, decide_plan
from pruneviz.core.granularity import Granularity, parse_granularity
from pruneviz.core.groups import CoupledGroups
from pruneviz.core.layers import PrunableLayer, check_finite, find_prunable_layers, fingerprint
from pruneviz.core.masks import combine, keep_ranked
from pruneviz.core.plan import LayerPlan, Plan
from pruneviz.core.results import LayerResult, deciding_group, layer_result, removed_result
from pruneviz.core.scores import ScoreTable
from pruneviz.core.scoring import LayerScorer
from pruneviz.data.tensors import TensorData
from pruneviz.errors import ModelError, PlanError


class PruningSession:
    """Applies plans to a private copy of a model, reversibly and cheaply.

    `example_input` is a batch of what the model takes (batch dimension first);
    `calibration` is data for the data-driven criteria (taylor, apoz, activation).
    The model passed in is deep-copied and never changed.
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: Tensor | tuple[Tensor, ...],
        *,
        calibration: TensorData | None = None,
        name: str = "model",
        seed: int = 0,
    ) -> None:
        check_finite(model)
        self.name = name
        self.seed = seed
        self.model = copy.deepcopy(model)
        self.model.eval()
        self.example_input = example_input
        self.calibration = calibration
        self.layers: list[PrunableLayer] = find_prunable_layers(self.model, example_input)
        self.layer_by_name = {layer.name: layer for layer in self.layers}
        self.fingerprint = fingerprint(self.model)
        self._params = dict(self.model.named_parameters())
        self._originals: dict[str, Tensor] = {}
        for layer in self.layers:
            for tensor_name in [*self._fed_tensors(layer), layer.weight]:
                self._originals.setdefault(tensor_name, self._params[tensor_name].detach().clone())
        self.groups, self.graph_note = find_groups(self.model, example_input, self.layers)
        first = (tuple(t[:1] for t in example_input) if isinstance(example_input, tuple)
                 else example_input[:1])
        with torch.no_grad():
            self.output_layers = {
                layer.name for layer in self.layers
                if layer.module_name in output_modules(self.model, first)
            }
        self._coupled = CoupledGroups(
            self.groups, self.layer_by_name,
            {n: p.numel() for n, p in self._params.items()}, self.output_layers)
        self._fed_owner = {t: layer.name for layer in self.layers for t in self._fed_tensors(layer)}
        for channels in self._coupled.channels.values():
            for t in channels:
                self._originals.setdefault(t, self._params[t].detach().clone())
        data = calibration.x if calibration is not None else (
            example_input if isinstance(example_input, Tensor) else None)
        self._block_swap = BlockSwap(self.model, self.layers, self._params, self._originals, data)
        self._scorer = LayerScorer(
            self.model, self.layers, self._originals, self._coupled, self.output_layers,
            calibration=calibration, seed=seed,
            originals_in_place=self._block_swap.originals_in_place)
        self._decisions: dict[str, Decision] = {}
        self._fed = {layer.name: self._fed_tensors(layer) for layer in self.layers}
        self._original_nonzero = {
            layer.name: int(torch.count_nonzero(self._originals[layer.weight]))
            for layer in self.layers
        }
        self._results: dict[str, LayerResult] = {}
        self._stale: set[str] = set()
        self._group_decisions: dict[int, Decision] = {}
        self.notes: list[str] = []
        self._weights_key: str | None = None
        self._frozen: set[str] = set()  # decisions kept across rebase(keep_decisions=True)
        self.plan = Plan()
        self._refresh_results(self.layers)

    # -- public API ----------------------------------------------------------------------
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

    def structures(self, layer: str, granularity: Granularity) -> Structures:
        """The structures of `layer` at `granularity` (cached)."""
        return self._scorer.structures(layer, granularity)

    def scores(self, layer: str, granularity: Granularity, criterion: str) -> ScoreTable:
        """Scores of `layer`'s structures under `criterion`, computed once on the originals."""
        return self._scorer.scores(layer, granularity, criterion)

    def mask(self, layer: str) -> Tensor:
        """The current boolean keep-mask of `layer`'s weight (all True when unpruned)."""
        keep = self._weight_keep(self._layer(layer), self._decisions, self._group_decisions)
        return keep if keep is not None else torch.ones(self._layer(layer).shape, dtype=torch.bool)

    def weights_key(self) -> str:
        """A hash of the original weights' values (the fingerprint is the architecture's):
        results computed from the weights are cached under it."""
        if self._weights_key is None:
            digest = hashlib.sha256()
            for name in sorted(self._originals):
                t = self._originals[name].detach().contiguous()
                digest.update(name.encode())
                digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            self._weights_key = digest.hexdigest()[:16]
        return self._weights_key

    def changed_tensors(self) -> list[str]:
        """Parameters whose current values differ from the originals (bit for bit)."""
        return [name for name, original in self._originals.items()
                if not torch.equal(self._params[name], original)]

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

    def blocks(self) -> list[Block]:
        """Removable blocks and layers, least important first (measured once on the
        calibration data with the original weights)."""
        return self._block_swap.blocks()

    def removed_blocks(self) -> list[str]:
        """Blocks the current plan replaced by the identity."""
        return self._block_swap.removed()

    def pruned_units(self) -> dict[int, list[int]]:
        """For each coupled group with a decision: the units (channels) it prunes."""
        return {
            gid: sorted(d.table.order[: d.pruned].tolist())
            for gid, d in self._group_decisions.items() if d.pruned > 0
        }

    def uncoupled_structured(self) -> list[str]:
        """Layers with filter/channel pruning decided alone (zeroed, not removable)."""
        return [n for n, d in self._decisions.items() if d.granularity.structured]

    def table_for(self, layer: str) -> tuple[ScoreTable, int] | None:
        """The score table that decides `layer`'s pruning now, and how many it prunes."""
        own = self._decisions.get(layer)
        if own is not None:
            return own.table, max(own.pruned, 0)
        for gid in (self._coupled.out_group.get(layer), self._coupled.in_group.get(layer)):
            if gid is not None and gid in self._group_decisions:
                decision = self._group_decisions[gid]
                return decision.table, decision.pruned
        return None

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
        if group is not None:
            member = next(m for gid, m, g in self._coupled.weight_sources[layer]
                          if gid == group.id and g is entry.granularity)
            keep = self._coupled.member_keep(group.id, member, decision)
            mask = self._scorer.expand(layer, entry.granularity, keep)
            return mask, decision.pruned, decision.threshold
        mask = self._scorer.weight_mask(layer, decision)
        pruned = decision.pruned if decision.pruned >= 0 else int((~mask).sum())
        return mask, pruned, decision.threshold

    def unsupported(self, layer: str, granularity: Granularity, criterion: str) -> str | None:
        """Why `layer` cannot be pruned at `granularity` by `criterion`, or None if it can."""
        return self._scorer.unsupported(layer, granularity, criterion)

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

    def apply(self, plan: Plan) -> None:
        """Make the model's weights those of `plan` applied to the originals.

        Only layers whose decision changed are rewritten; `results()` then reports them.
        On any error the model is left exactly as it was before the call.
        """
        plan.validate_for(self.layer_names, self.fingerprint)
        self._block_swap.check(plan.blocks)
        decided = decide_plan(self._scorer, plan)  # may raise; nothing written
        decisions, group_decisions, notes = decided.layers, decided.groups, decided.notes
        if group_decisions:
            self._coupled.check_removable(plan.blocks)
        changed = {
            name for name in set(decisions) | set(self._decisions)
            if decisions.get(name) != self._decisions.get(name)
        }
        changed_groups = {
            gid for gid in set(group_decisions) | set(self._group_decisions)
            if group_decisions.get(gid) != self._group_decisions.get(gid)
        }
        weights = {self._layer(name).weight: name for name in changed}
        channels: set[str] = set()
        for name in changed:
            old, new = self._decisions.get(name), decisions.get(name)
            if any(d is not None and d.granularity is Granularity.FILTER for d in (old, new)):
                channels.update(self._fed[name])
        for gid in changed_groups:
            for m in self.groups[gid].members:
                if m.layer:
                    weights[self._layer(m.layer).weight] = m.layer
            channels.update(self._coupled.channels[gid])
        with torch.no_grad():
            for name in weights.values():
                self._write_weight(self._layer(name), decisions, group_decisions)
            for tensor_name in channels:
                self._write_channels(tensor_name, decisions, group_decisions)
        self._decisions = decisions
        self._group_decisions = group_decisions
        self._frozen -= changed
        self.plan = plan
        self.notes = notes
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

    def keep_masks(self) -> dict[str, Tensor]:
        """Boolean keep-masks of every parameter the current plan prunes (weights, and the
        biases and norm entries of pruned channels), by parameter name. Fine-tuning holds
        the pruned entries at zero with them."""
        masks: dict[str, Tensor] = {}
        for layer in self.layers:
            if self._block_swap.removes(layer):
                continue
            keep = self._weight_keep(layer, self._decisions, self._group_decisions)
            if keep is not None:
                masks[layer.weight] = keep
        for tensor_name in self._coupled.channel_sources.keys() | self._fed_owner.keys():
            keep = self._channel_keep(tensor_name, self._decisions, self._group_decisions)
            if keep is not None and tensor_name in self._params:
                masks[tensor_name] = keep
        return masks

    def rebase(self, state: dict[str, Tensor], *, keep_decisions: bool = False) -> None:
        """Make `state` (this model's weights after training, say) the originals, and
        re-apply the current plan to them: scores are computed afresh from the new
        values. With `keep_decisions`, the current decisions (which structures are
        pruned) are kept instead of re-deciding on the new scores — for weights trained
        under these very masks, whose pruned entries are already zero. The old originals
        are dropped from the session — keep the pristine model elsewhere (the workbench's
        reference) to go back to it."""
        if self._block_swap.removed():
            raise PlanError("cannot take new weights while blocks are removed; put the "
                            "blocks back (a plan without removed blocks) first")
        plan = self.plan
        decisions, group_decisions, notes = (self._decisions, self._group_decisions,
                                             self.notes)
        self.reset()
        try:
            self.model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelError(f"the new weights do not fit {self.name}: {exc}") from None
        check_finite(self.model)
        with torch.no_grad():
            for name, original in self._originals.items():
                original.copy_(self._params[name])
        self._weights_key = None
        self._original_nonzero = {
            layer.name: int(torch.count_nonzero(self._originals[layer.weight]))
            for layer in self.layers
        }
        self._results = {}
        # (N:M masks kept with the decisions: the kept N:M decisions' masks come from there)
        self._scorer.forget(keep_nm_masks=keep_decisions)
        if keep_decisions:
            # The kept decisions' tables rank the old weights: count these layers' non-zero
            # weights from the weights themselves until a new decision replaces them.
            self._frozen = set(decisions)
            with torch.no_grad():
                for layer in self.layers:
                    self._write_weight(layer, decisions, group_decisions)
                for tensor_name in self._coupled.channel_sources.keys() | self._fed_owner.keys():
                    if tensor_name in self._params:
                        self._write_channels(tensor_name, decisions, group_decisions)
            self._decisions, self._group_decisions = decisions, group_decisions
            self.plan, self.notes = plan, notes
            self._stale.update(self.layer_names)
            return
        self._refresh_results(self.layers)
        self.apply(plan)

    def reset(self) -> None:
        """Return every parameter the session touched to its original, bit for bit."""
        with torch.no_grad():
            for tensor_name, original in self._originals.items():
                self._params[tensor_name].copy_(original)
        self._decisions = {}
        self._group_decisions = {}
        self._frozen = set()
        self.notes = []
        self._block_swap.swap(set())
        self.plan = Plan()
        self._refresh_results(self.layers)

    # -- deciding ------------------------------------------------------------------------
    def _layer(self, name: str) -> PrunableLayer:
        return self._scorer.layer(name)

    # -- masks and writing ---------------------------------------------------------------
    def _fed_tensors(self, layer: PrunableLayer) -> list[str]:
        """Tensors fed by the output structures: the bias and the following BN's affine."""
        names = [layer.bias] if layer.bias else []
        if layer.bn:
            names += [f"{layer.bn}.weight", f"{layer.bn}.bias"]
        return [n for n in names if n in self._params]

    def _weight_keep(
        self, layer: PrunableLayer, decisions: dict[str, Decision],
        group_decisions: dict[int, Decision],
    ) -> Tensor | None:
        """The weight's keep-mask: its own decision AND every coupled group's (None: all)."""
        own = decisions.get(layer.name)
        return combine([
            self._scorer.weight_mask(layer.name, own) if own is not None else None,
            *(self._scorer.expand(layer.name, gran, keep)
              for gran, keep in self._coupled.weight_keeps(layer.name, group_decisions)),
        ])

    def _write_weight(
        self, layer: PrunableLayer, decisions: dict[str, Decision],
        group_decisions: dict[int, Decision],
    ) -> None:
        """Write `w = w0 * mask` (as +0.0 where pruned), or the original."""
        keep = self._weight_keep(layer, decisions, group_decisions)
        if keep is None:
            self._params[layer.weight].copy_(self._originals[layer.weight])
        else:
            _masked_copy(self._params[layer.weight], self._originals[layer.weight], keep)

    def _write_channels(
        self, tensor_name: str, decisions: dict[str, Decision],
        group_decisions: dict[int, Decision],
    ) -> None:
        """Zero the channels of a bias or norm parameter that pruned structures feed."""
        keep = self._channel_keep(tensor_name, decisions, group_decisions)
        if keep is None:
            self._params[tensor_name].copy_(self._originals[tensor_name])
        else:
            _masked_copy(self._params[tensor_name], self._originals[tensor_name], keep)

    def _channel_keep(
        self, tensor_name: str, decisions: dict[str, Decision],
        group_decisions: dict[int, Decision],
    ) -> Tensor | None:
        """The keep-vector of a bias or norm parameter (None: all kept)."""
        owner = self._fed_owner.get(tensor_name)
        own = decisions.get(owner) if owner else None
        return combine([
            keep_ranked(own.table.struct_rank, own.pruned)
            if own is not None and own.granularity is Granularity.FILTER else None,
            *self._coupled.channel_keeps(tensor_name, group_decisions),
        ])

    def _refresh_results(self, layers: Sequence[PrunableLayer]) -> None:
        """Counts from the precomputed tables (exact; no pass over the weights)."""
        for layer in layers:
            self._stale.discard(layer.name)
            self._results[layer.name] = self._result_of(layer)

    def _result_of(self, layer: PrunableLayer) -> LayerResult:
        group = self._coupled.out_group.get(layer.name)
        if self._block_swap.removes(layer):
            return removed_result(layer, group)
        decision = self._decisions.get(layer.name)
        nm = (self._scorer.nm_mask(layer.name, decision.granularity, decision.criterion)
              if decision is not None and decision.granularity.n_m is not None else None)
        coupled = deciding_group(self._coupled, layer.name, self._group_decisions,
                                 self.plan.layers.get(layer.name))
        return layer_result(
            layer, self._params[layer.weight], decision, coupled, nm=nm,
            original_nonzero=self._original_nonzero[layer.name],
            frozen=layer.name in self._frozen, group=group)


_SAME_SIZE_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _masked_copy(dst: Tensor, src: Tensor, keep: Tensor) -> None:
    """dst = src where keep, else +0.0 — bit-exact (kept values, -0.0 included, are copied
    bit for bit) and fast: one integer multiply on the tensors' bits."""
    bits = _SAME_SIZE_INT.get(src.element_size())
    if bits is None or not (dst.is_contiguous() and src.is_contiguous()) or src.is_complex():
        dst.data.copy_(torch.where(keep, src, torch.zeros((), dtype=src.dtype)))
        return
    torch.mul(src.view(bits), keep, out=dst.data.view(bits))
