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
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pruneviz.core.blocks import Block, find_blocks, set_module
from pruneviz.core.coupling import Group, find_groups, output_modules
from pruneviz.core.criteria import (
    CalibrationStats,
    ScoreInputs,
    Structures,
    collect_calibration_stats,
    compute_scores,
    get_criterion,
    structures_for,
)
from pruneviz.core.decide import Decision, decide_entry, decide_plan
from pruneviz.core.granularity import Granularity, parse_granularity
from pruneviz.core.groups import CoupledGroups, inside
from pruneviz.core.layers import PrunableLayer, check_finite, find_prunable_layers, fingerprint
from pruneviz.core.masks import combine, keep_ranked, n_m_keep, structure_mask
from pruneviz.core.plan import LayerPlan, Plan
from pruneviz.core.scores import ScoreTable
from pruneviz.data.tensors import TensorData
from pruneviz.errors import DataError, ModelError, PlanError


@dataclass(frozen=True)
class LayerResult:
    """The state of one prunable layer after a plan was applied."""

    name: str
    type: str
    granularity: str | None
    criterion: str | None
    params: int
    nonzero: int
    sparsity: float
    threshold: float | None
    structures: int
    structures_pruned: int
    group: int | None = None  # the coupled group its output channels belong to

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (the CLI's `layers` entries)."""
        return dict(self.__dict__)


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
        self._structures: dict[tuple[str, Granularity], Structures] = {}
        self._scores: dict[tuple[str, Granularity, str], ScoreTable] = {}
        self._nm_masks: dict[tuple[str, Granularity, str], tuple[Tensor, int]] = {}
        self._stats: CalibrationStats | None = None
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
        self._blocks: list[Block] | None = None
        self._removed: dict[str, nn.Module] = {}  # block name -> the module taken out
        self.plan = Plan()
        self._source = _Scores(self)
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
        key = (layer, granularity)
        if key not in self._structures:
            self._structures[key] = structures_for(self._layer(layer), granularity)
        return self._structures[key]

    def scores(self, layer: str, granularity: Granularity, criterion: str) -> ScoreTable:
        """Scores of `layer`'s structures under `criterion`, computed once on the originals."""
        key = (layer, granularity, criterion)
        if key not in self._scores:
            info = self._layer(layer)
            if granularity.n_m is not None:
                structures = self.structures(layer, Granularity.UNSTRUCTURED)
            else:
                structures = self.structures(layer, granularity)
            spec = get_criterion(criterion)
            inputs = ScoreInputs(
                layer=info,
                weight=self._originals[info.weight],
                structures=structures,
                stats=self._calibration_stats,
                bn_weight=self._originals.get(f"{info.bn}.weight") if info.bn else None,
                seed=self.seed,
            )
            if spec.needs_data and self.calibration is None:
                raise DataError(
                    f"criterion {criterion!r} needs calibration data; create the session with "
                    "calibration=... or choose l1, l2, random, fpgm, lsh or bn_scale"
                )
            values = compute_scores(criterion, inputs)
            self._scores[key] = ScoreTable.build(values, structures, inputs.weight)
        return self._scores[key]

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
        return self._coupled.scores(group, criterion, side, self.scores)

    def blocks(self) -> list[Block]:
        """Removable blocks and layers, least important first (measured once on the
        calibration data with the original weights)."""
        if self._blocks is None:
            data = self.calibration.x if self.calibration is not None else (
                self.example_input if isinstance(self.example_input, Tensor) else None)
            if data is None:
                self._blocks = []
            else:
                with self._originals_in_place():
                    self._blocks = find_blocks(self.model, data)
        return self._blocks

    def removed_blocks(self) -> list[str]:
        """Blocks the current plan replaced by the identity."""
        return sorted(self._removed)

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
        decision, _, group = decide_entry(self._source, layer, entry)
        if group is not None:
            member = next(m for gid, m, g in self._coupled.weight_sources[layer]
                          if gid == group.id and g is entry.granularity)
            keep = self._coupled.member_keep(group.id, member, decision)
            mask = self._expand(layer, entry.granularity, keep)
            return mask, decision.pruned, decision.threshold
        mask = self._weight_mask(layer, decision)
        pruned = decision.pruned if decision.pruned >= 0 else int((~mask).sum())
        return mask, pruned, decision.threshold

    def unsupported(self, layer: str, granularity: Granularity, criterion: str) -> str | None:
        """Why `layer` cannot be pruned at `granularity` by `criterion`, or None if it can."""
        try:
            self._check_granularity(layer, granularity)
            group = self._coupled.group_for(layer, granularity)
            if group is not None:
                self.group_scores(group.id, criterion, granularity)
            else:
                self.scores(layer, granularity, criterion)
        except PlanError as exc:
            return str(exc)
        return None

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
        self._check_blocks(plan.blocks)
        decided = decide_plan(self._source, plan)  # may raise; nothing written
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
        self._stale.update(self._swap_blocks(set(plan.blocks)))

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
            if self._in_removed_block(layer):
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
        if self._removed:
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
        self._scores.clear()
        self._coupled.forget_scores()
        self._stats = None
        if not keep_decisions:
            self._nm_masks.clear()  # (kept: the kept N:M decisions' masks come from here)
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
        self._swap_blocks(set())
        self.plan = Plan()
        self._refresh_results(self.layers)

    # -- deciding ------------------------------------------------------------------------
    def _layer(self, name: str) -> PrunableLayer:
        try:
            return self.layer_by_name[name]
        except KeyError:
            raise PlanError(
                f"unknown layer {name!r}; prunable layers are: {', '.join(self.layer_names)}"
            ) from None

    def _calibration_stats(self) -> CalibrationStats:
        if self._stats is None:
            if self.calibration is None:
                raise DataError("no calibration data was given to this session")
            with self._originals_in_place():
                self._stats = collect_calibration_stats(self.model, self.layers, self.calibration)
        return self._stats

    @contextmanager
    def _originals_in_place(self) -> Iterator[None]:
        """Temporarily the original model: weights restored, removed blocks put back."""
        current = {n: self._params[n].detach().clone() for n in self._originals}
        removed = dict(self._removed)
        try:
            for name, module in removed.items():
                set_module(self.model, name, module)
            with torch.no_grad():
                for n, original in self._originals.items():
                    self._params[n].copy_(original)
            yield
        finally:
            with torch.no_grad():
                for n, value in current.items():
                    self._params[n].copy_(value)
            for name in removed:
                set_module(self.model, name, nn.Identity())

    def _check_blocks(self, blocks: Sequence[str]) -> None:
        if not blocks:
            return
        known = {b.name for b in self.blocks()}
        unknown = [b for b in blocks if b not in known]
        if unknown:
            raise PlanError(
                f"cannot remove {', '.join(map(repr, unknown))}: only modules whose output "
                "has the shape of their input can be replaced by the identity; removable "
                f"here: {', '.join(sorted(known)) or 'none'}"
            )

    def _swap_blocks(self, wanted: set[str]) -> list[str]:
        """Replace `wanted` blocks by the identity and put the others back; returns the
        prunable layers inside blocks that changed."""
        changed = set(self._removed) ^ wanted
        if not changed:
            return []
        for name in sorted(set(self._removed) - wanted):
            set_module(self.model, name, self._removed.pop(name))
        for name in sorted(wanted - set(self._removed)):
            self._removed[name] = set_module(self.model, name, nn.Identity())
        return [layer.name for layer in self.layers
                if any(inside(layer.module_name, block) for block in changed)]

    def _in_removed_block(self, layer: PrunableLayer) -> bool:
        return any(inside(layer.module_name, block) for block in self._removed)

    def _check_granularity(self, name: str, granularity: Granularity) -> None:
        layer = self._layer(name)
        if granularity.n_m is not None:
            _n, m = granularity.n_m
            if len(layer.shape) < 2 or layer.shape[layer.in_dim] % m:
                raise PlanError(
                    f"layer {name!r}: {granularity.value} sparsity groups {m} consecutive "
                    f"input weights, but its weight {layer.shape} has "
                    f"{layer.shape[layer.in_dim] if len(layer.shape) > 1 else 1} inputs per "
                    f"row, not a multiple of {m}; use unstructured or filter pruning here"
                )

    # -- masks and writing ---------------------------------------------------------------
    def _weight_mask(self, name: str, decision: Decision) -> Tensor:
        """The weight-shaped boolean keep-mask of a decision."""
        if decision.granularity.n_m is not None:
            return self._nm_mask(name, decision.granularity, decision.criterion)[0]
        return keep_ranked(decision.table.rank, decision.pruned)

    def _nm_mask(self, name: str, granularity: Granularity, criterion: str) -> tuple[Tensor, int]:
        """N:M keep-mask (fixed per layer and criterion) and the non-zero count it leaves."""
        key = (name, granularity, criterion)
        if key not in self._nm_masks:
            layer = self._layer(name)
            n, m = granularity.n_m or (0, 1)
            scores = self.scores(name, granularity, criterion).scores.view(layer.shape)
            mask = n_m_keep(scores, n, m, layer.in_dim)
            nonzero = int(torch.count_nonzero(self._originals[layer.weight] * mask))
            self._nm_masks[key] = (mask, nonzero)
        return self._nm_masks[key]

    def _expand(self, layer: str, granularity: Granularity, keep: Tensor) -> Tensor:
        """The weight mask of a keep-vector over `layer`'s filters or input channels."""
        index = self.structures(layer, granularity).index
        assert index is not None  # filters and channels always index their weights
        return structure_mask(keep, index)

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
            self._weight_mask(layer.name, own) if own is not None else None,
            *(self._expand(layer.name, gran, keep)
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
            if self._in_removed_block(layer):
                self._results[layer.name] = LayerResult(
                    name=layer.name, type=layer.type, granularity="removed", criterion=None,
                    params=layer.params, nonzero=0, sparsity=1.0, threshold=None,
                    structures=1, structures_pruned=1,
                    group=self._coupled.out_group.get(layer.name),
                )
                continue
            decision = self._decisions.get(layer.name)
            threshold: float | None = None
            coupled = [
                (gid, gran) for gid, _, gran in self._coupled.weight_sources.get(layer.name, ())
                if gid in self._group_decisions
            ]
            if coupled:
                # Describe the decision the layer's own plan entry made, if it made one;
                # otherwise the group that prunes its filters, else its input channels.
                entry = self.plan.layers.get(layer.name)
                own_gid = (self.group_of(layer.name, entry.granularity).id  # type: ignore[union-attr]
                           if entry is not None and entry.granularity.structured
                           and self.group_of(layer.name, entry.granularity) is not None
                           else None)
                coupled.sort(key=lambda c: (c[0] != own_gid, c[1] is not Granularity.FILTER))
                gid, gran = coupled[0]
                group_decision = self._group_decisions[gid]
                nonzero = int(torch.count_nonzero(self._params[layer.weight]))
                shown = decision or group_decision
                if decision is not None and decision.granularity.n_m is not None:
                    mask = self._nm_mask(layer.name, decision.granularity, decision.criterion)[0]
                    structures, pruned = layer.params, int((~mask).sum())
                else:
                    structures, pruned = shown.table.count, max(shown.pruned, 0)
                self._results[layer.name] = LayerResult(
                    name=layer.name, type=layer.type,
                    granularity=(decision.granularity.value if decision else gran.value),
                    criterion=shown.criterion, params=layer.params, nonzero=nonzero,
                    sparsity=1.0 - nonzero / layer.params if layer.params else 0.0,
                    threshold=shown.threshold, structures=structures, structures_pruned=pruned,
                    group=self._coupled.out_group.get(layer.name),
                )
                continue
            if decision is None:
                structures, pruned = layer.params, 0
                nonzero = self._original_nonzero[layer.name]
            elif decision.granularity.n_m is not None:
                mask, nonzero = self._nm_mask(layer.name, decision.granularity, decision.criterion)
                if layer.name in self._frozen:
                    nonzero = int(torch.count_nonzero(self._params[layer.weight]))
                structures = layer.params
                pruned = structures - int(mask.sum())
            else:
                structures = decision.table.count
                pruned = decision.pruned
                nonzero = (int(torch.count_nonzero(self._params[layer.weight]))
                           if layer.name in self._frozen
                           else decision.table.nonzero_after(pruned))
                threshold = decision.threshold
            self._results[layer.name] = LayerResult(
                name=layer.name,
                type=layer.type,
                granularity=decision.granularity.value if decision else None,
                criterion=decision.criterion if decision else None,
                params=layer.params,
                nonzero=nonzero,
                sparsity=1.0 - nonzero / layer.params if layer.params else 0.0,
                threshold=threshold,
                structures=structures,
                structures_pruned=pruned,
                group=self._coupled.out_group.get(layer.name),
            )


_SAME_SIZE_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _masked_copy(dst: Tensor, src: Tensor, keep: Tensor) -> None:
    """dst = src where keep, else +0.0 — bit-exact (kept values, -0.0 included, are copied
    bit for bit) and fast: one integer multiply on the tensors' bits."""
    bits = _SAME_SIZE_INT.get(src.element_size())
    if bits is None or not (dst.is_contiguous() and src.is_contiguous()) or src.is_complex():
        dst.data.copy_(torch.where(keep, src, torch.zeros((), dtype=src.dtype)))
        return
    torch.mul(src.view(bits), keep, out=dst.data.view(bits))



class _Scores:
    """A session's tables as `decide` asks for them (`decide.ScoreSource`)."""

    def __init__(self, session: PruningSession) -> None:
        self._session = session

    @property
    def layer_names(self) -> list[str]:
        return self._session.layer_names

    @property
    def output_layers(self) -> set[str]:
        return self._session.output_layers

    def layer_table(self, layer: str, granularity: Granularity, criterion: str) -> ScoreTable:
        self._session._check_granularity(layer, granularity)
        return self._session.scores(layer, granularity, criterion)

    def group_for(self, layer: str, granularity: Granularity) -> Group | None:
        return self._session._coupled.group_for(layer, granularity)

    def group_table(self, group: int, criterion: str, side: Granularity) -> ScoreTable:
        return self._session.group_scores(group, criterion, side)

    def unit_weights(self, unit: str | Group, granularity: Granularity) -> int:
        if isinstance(unit, Group):
            return self._session._coupled.unit_weights(unit, granularity)
        return self._session.structures(unit, granularity).size
