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
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from pruneviz.core.blocks import Block, find_blocks, set_module
from pruneviz.core.coupling import Group, Member, find_groups, output_modules
from pruneviz.core.criteria import (
    CalibrationStats,
    ScoreInputs,
    Structures,
    collect_calibration_stats,
    compute_scores,
    get_criterion,
    structures_for,
)
from pruneviz.core.granularity import Granularity, parse_granularity
from pruneviz.core.layers import PrunableLayer, check_finite, find_prunable_layers, fingerprint
from pruneviz.core.plan import GlobalPlan, LayerPlan, Plan
from pruneviz.data.tensors import TensorData
from pruneviz.errors import DataError, ModelError, PlanError


@dataclass(frozen=True)
class ScoreTable:
    """Scores of one layer's structures under one criterion, precomputed for cheap re-thresholds.

    `order` lists structure ids lowest score first and `sorted` their scores; `rank` gives
    every weight the ascending rank of its structure, so that pruning the `k` lowest is the
    single comparison `rank >= k`; `zero_prefix[k]` counts the originally-zero weights in
    the `k` lowest structures, so counts after pruning need no pass over the weights.
    """

    scores: Tensor
    order: Tensor
    sorted: Tensor
    struct_rank: Tensor
    rank: Tensor
    zero_prefix: Tensor
    size: int
    count: int

    @classmethod
    def build(cls, scores: Tensor, structures: Structures, weight: Tensor) -> ScoreTable:
        """Sort `scores` once and derive the rank and zero-count tables."""
        order = torch.argsort(scores, stable=True)
        struct_rank = torch.empty_like(order)
        struct_rank[order] = torch.arange(len(order))
        if structures.index is None:
            rank = struct_rank.to(torch.int32).view(structures.shape)
        else:
            rank = struct_rank.to(torch.int32)[structures.index]
        zeros = structures.vectors(weight == 0).sum(dim=1)[order]
        zero_prefix = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(zeros, 0)])
        return cls(
            scores, order, scores[order], struct_rank, rank, zero_prefix, structures.size,
            len(order),
        )

    @classmethod
    def of_scores(cls, scores: Tensor) -> ScoreTable:
        """A table over plain scores (coupled groups): no weight-level rank."""
        order = torch.argsort(scores, stable=True)
        struct_rank = torch.empty_like(order)
        struct_rank[order] = torch.arange(len(order))
        zero_prefix = torch.zeros(len(order) + 1, dtype=torch.int64)
        return cls(scores, order, scores[order], struct_rank, struct_rank, zero_prefix, 1,
                   len(order))

    def count_below(self, threshold: float) -> int:
        """How many structures score strictly below `threshold`."""
        # Compare exactly, as if in float64: rounding the threshold to the scores' dtype
        # may land on a score, which `side` then counts on the correct side.
        value = torch.tensor([threshold], dtype=self.sorted.dtype)
        side = "right" if float(value) < threshold else "left"
        return int(torch.searchsorted(self.sorted, value, side=side)[0])

    def threshold_for(self, pruned: int) -> float:
        """The threshold t with `pruned` structures scoring below it (ties aside)."""
        if pruned <= 0:
            return self.sorted[0].item() if self.count else 0.0
        if pruned >= self.count:
            return math.nextafter(self.sorted[-1].item(), math.inf)
        return float(self.sorted[pruned].item())

    def nonzero_after(self, pruned: int) -> int:
        """Non-zero weights left when the `pruned` lowest structures are zeroed."""
        kept = (self.count - pruned) * self.size
        zeros_kept = int(self.zero_prefix[-1].item()) - int(self.zero_prefix[pruned].item())
        return kept - zeros_kept


@dataclass(frozen=True)
class _Decision:
    """What was decided for one layer: enough to rebuild its mask, and to compare."""

    granularity: Granularity
    criterion: str
    pruned: int  # structures pruned (for N:M: -1, the mask is fixed)
    given_threshold: float | None  # set when the plan gave a threshold, not a sparsity
    table: ScoreTable = field(compare=False, repr=False)

    @property
    def threshold(self) -> float | None:
        """The threshold in score units: given, or the one the sparsity amounted to."""
        if self.granularity.n_m is not None:
            return None
        if self.given_threshold is not None:
            return self.given_threshold
        return self.table.threshold_for(self.pruned)


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
        self._index_groups()
        self._structures: dict[tuple[str, Granularity], Structures] = {}
        self._scores: dict[tuple[str, Granularity, str], ScoreTable] = {}
        self._nm_masks: dict[tuple[str, Granularity, str], tuple[Tensor, int]] = {}
        self._stats: CalibrationStats | None = None
        self._decisions: dict[str, _Decision] = {}
        self._fed = {layer.name: self._fed_tensors(layer) for layer in self.layers}
        self._original_nonzero = {
            layer.name: int(torch.count_nonzero(self._originals[layer.weight]))
            for layer in self.layers
        }
        self._results: dict[str, LayerResult] = {}
        self._stale: set[str] = set()
        self._group_decisions: dict[int, _Decision] = {}
        self._group_tables: dict[tuple[int, str, Granularity], ScoreTable] = {}
        self.notes: list[str] = []
        self._weights_key: str | None = None
        self._frozen: set[str] = set()  # decisions kept across rebase(keep_decisions=True)
        self._blocks: list[Block] | None = None
        self._removed: dict[str, nn.Module] = {}  # block name -> the module taken out
        self.plan = Plan()
        self._refresh_results(self.layers)

    def _index_groups(self) -> None:
        """Which tensors each coupled group touches, and how."""
        self._out_group: dict[str, int] = {}
        self._in_group: dict[str, int] = {}
        self._weight_sources: dict[str, list[tuple[int, Member, Granularity]]] = {}
        self._channel_sources: dict[str, list[tuple[int, Member]]] = {}
        self._group_channels: dict[int, list[str]] = {}
        self._member_size: dict[tuple[int, str, str], int] = {}
        self._fed_owner = {t: layer.name for layer in self.layers for t in self._fed_tensors(layer)}
        for group in self.groups:
            channels: list[str] = []
            for m in group.members:
                if m.kind in ("out", "in") and m.layer:
                    layer = self._layer(m.layer)
                    gran = Granularity.FILTER if m.kind == "out" else Granularity.CHANNEL
                    (self._out_group if m.kind == "out" else self._in_group)[m.layer] = group.id
                    if m.kind == "out" and layer.groups > 1 and \
                            layer.groups == layer.in_structures:
                        # depthwise: input channel c is filter c, in the same group
                        self._in_group.setdefault(m.layer, group.id)
                    self._weight_sources.setdefault(m.layer, []).append((group.id, m, gran))
                    size = layer.out_structures if m.kind == "out" else layer.in_structures
                    self._member_size[(group.id, m.module, m.kind)] = size
                    tensors = [layer.bias] if m.kind == "out" and layer.bias else []
                elif m.kind == "norm":
                    tensors = [f"{m.module}.{p}" for p in ("weight", "bias")
                               if f"{m.module}.{p}" in self._params]
                    if tensors:
                        self._member_size[(group.id, m.module, m.kind)] = \
                            self._params[tensors[0]].numel()
                else:
                    continue
                for t in tensors:
                    self._originals.setdefault(t, self._params[t].detach().clone())
                    self._channel_sources.setdefault(t, []).append((group.id, m))
                    channels.append(t)
            self._group_channels[group.id] = channels

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
        table = self._out_group if granularity is Granularity.FILTER else self._in_group
        gid = table.get(layer) if granularity.structured else None
        return self.groups[gid] if gid is not None else None

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
        key = (group, criterion, side)
        if key not in self._group_tables:
            g = self.groups[group]
            if g.unsupported:
                raise PlanError(f"layers {', '.join(g.layers)} are coupled, but {g.unsupported}")
            kind = "out" if side is Granularity.FILTER else "in"
            parts: list[Tensor] = []
            reasons = []
            for m in g.members:
                if m.kind != kind or not m.layer:
                    continue
                try:
                    scores = self.scores(m.layer, side, criterion).scores.double()
                except PlanError as exc:
                    reasons.append(str(exc))
                    continue
                roots = torch.tensor(m.root)
                per_root = torch.zeros(g.size, dtype=torch.float64).index_add_(
                    0, roots, scores[torch.tensor(m.idxs)])
                counts = torch.zeros(g.size, dtype=torch.float64).index_add_(
                    0, roots, torch.ones(len(roots), dtype=torch.float64))
                parts.append(per_root / counts.clamp(min=1))
            if not parts:
                raise PlanError(
                    f"criterion {criterion!r} cannot score the coupled layers "
                    f"{', '.join(g.layers)}: " + ("; ".join(reasons[:2]) or "no member")
                )
            if len(parts) == 1:
                combined = parts[0]
            else:
                combined = torch.stack([p / (float(p.mean()) or 1.0) for p in parts]).mean(0)
            self._group_tables[key] = ScoreTable.of_scores(combined.float())
        return self._group_tables[key]

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
        for gid in (self._out_group.get(layer), self._in_group.get(layer)):
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
        group = self._group_for(layer, entry.granularity)
        if group is not None:
            decision = self._decide_group(group, entry.granularity, entry.criterion,
                                          entry.sparsity, entry.threshold, [])
            member = next(m for gid, m, g in self._weight_sources[layer]
                          if gid == group.id and g is entry.granularity)
            keep = self._member_keep(group.id, member, decision)
            mask = self.structures(layer, entry.granularity).expand(keep)
            return mask, decision.pruned, decision.threshold
        decision = self._decide_layer(layer, entry)
        mask = self._weight_mask(layer, decision)
        pruned = decision.pruned if decision.pruned >= 0 else int((~mask).sum())
        return mask, pruned, decision.threshold

    def unsupported(self, layer: str, granularity: Granularity, criterion: str) -> str | None:
        """Why `layer` cannot be pruned at `granularity` by `criterion`, or None if it can."""
        try:
            self._check_granularity(layer, granularity)
            group = self._group_for(layer, granularity)
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
        notes: list[str] = []
        decisions, group_decisions = self._decide(plan, notes)  # may raise; nothing written
        if group_decisions:
            self._check_blocks_keep_coupling(plan.blocks)
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
            channels.update(self._group_channels[gid])
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
        for tensor_name in self._channel_sources.keys() | self._fed_owner.keys():
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
        self._group_tables.clear()
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
                for tensor_name in self._channel_sources.keys() | self._fed_owner.keys():
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

    def _check_blocks_keep_coupling(self, blocks: Sequence[str]) -> None:
        """Refuse removing a module that produces channels read outside it: the layers
        behind it would then read other channels, and the coupled groups (traced on the
        full model) would no longer say which channels go together."""
        for block in blocks:
            for group in self.groups:
                producers = [m for m in group.members if m.kind == "out"]
                if producers and all(_inside(m.module, block) for m in producers) and any(
                        not _inside(m.module, block) for m in group.members):
                    readers = [m.module for m in group.members
                               if not _inside(m.module, block)]
                    raise PlanError(
                        f"removing {block!r} changes which channels {', '.join(readers)} "
                        "read, so it cannot be combined with filter/channel pruning; remove "
                        "its whole residual block instead, or prune without removing it"
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
                if any(_inside(layer.module_name, block) for block in changed)]

    def _in_removed_block(self, layer: PrunableLayer) -> bool:
        return any(_inside(layer.module_name, block) for block in self._removed)

    def _group_for(self, name: str, granularity: Granularity) -> Group | None:
        """The group that decides `name` at this granularity (None: decided per layer)."""
        group = self.group_of(name, granularity) if granularity.structured else None
        if granularity is Granularity.FILTER and name in self.output_layers:
            layer = self._layer(name)
            raise PlanError(
                f"layer {name!r} produces the model's output: its {layer.out_structures} "
                "filters are the model's outputs (classes, pixels), so removing them would "
                "change what the model returns; prune its weights (unstructured) or its "
                "input channels instead"
            )
        if group is not None and group.unsupported:
            raise PlanError(f"layer {name!r} is coupled with {', '.join(group.layers)}, but "
                            f"{group.unsupported}; use unstructured pruning for it")
        return group

    def _decide(
        self, plan: Plan, notes: list[str]
    ) -> tuple[dict[str, _Decision], dict[int, _Decision]]:
        decisions: dict[str, _Decision] = {}
        group_decisions: dict[int, _Decision] = {}
        named_by: dict[int, str] = {}
        for name, entry in plan.layers.items():
            group = self._group_for(name, entry.granularity)
            if group is None:
                decisions[name] = self._decide_layer(name, entry)
                continue
            decision = self._decide_group(group, entry.granularity, entry.criterion,
                                          entry.sparsity, entry.threshold, notes)
            if group.id in group_decisions and group_decisions[group.id] != decision:
                raise PlanError(
                    f"layers {named_by[group.id]!r} and {name!r} share channels (coupled: "
                    f"{', '.join(group.layers)}), so they are pruned together; give them the "
                    "same entry, or an entry for only one of them"
                )
            group_decisions[group.id] = decision
            named_by.setdefault(group.id, name)
        if plan.global_ is not None:
            # Layers with an entry of their own are decided by it, not by the global section.
            members = plan.global_.layers
            if members is None:
                members = tuple(self.layer_names)
            members = tuple(n for n in members if n not in plan.layers)
            layer_part, group_part = self._decide_global(
                plan.global_, members, set(group_decisions), notes)
            decisions.update(layer_part)
            group_decisions.update(group_part)
        return decisions, group_decisions

    def _decide_layer(self, name: str, entry: LayerPlan) -> _Decision:
        self._check_granularity(name, entry.granularity)
        table = self.scores(name, entry.granularity, entry.criterion)
        g, c = entry.granularity, entry.criterion
        if g.n_m is not None:
            return _Decision(g, c, -1, None, table)
        if entry.sparsity is not None:
            pruned = min(table.count, round(entry.sparsity * table.count))
            return _Decision(g, c, pruned, None, table)
        assert entry.threshold is not None  # guaranteed by LayerPlan validation
        return _Decision(g, c, table.count_below(entry.threshold), float(entry.threshold), table)

    def _decide_group(
        self, group: Group, side: Granularity, criterion: str, sparsity: float | None,
        threshold: float | None, notes: list[str], pruned: int | None = None,
    ) -> _Decision:
        """Prune the lowest-scoring channels of a coupled group; never all of them."""
        table = self.group_scores(group.id, criterion, side)
        if pruned is None:
            if sparsity is not None:
                pruned = round(sparsity * table.count)
            else:
                assert threshold is not None
                pruned = table.count_below(threshold)
        if pruned >= table.count:
            pruned = table.count - 1
            empty = ("leave the attention layer empty" if group.unit == "head"
                     else "cut the network in two")
            note = (f"{', '.join(group.layers)}: kept 1 of {table.count} {group.unit}s — "
                    f"removing all would {empty}")
            if note not in notes:
                notes.append(note)
        return _Decision(side, criterion, pruned, threshold, table)

    def _decide_global(
        self, section: GlobalPlan, members: Sequence[str], decided: set[int], notes: list[str]
    ) -> tuple[dict[str, _Decision], dict[int, _Decision]]:
        """One ranking across `members` (and their coupled groups)."""
        units: list[tuple[str | Group, ScoreTable, int]] = []
        seen: set[int] = set(decided)
        if section.granularity is Granularity.FILTER and section.layers is None:
            # "every layer": the output layer's filters are the model's outputs, not a choice
            members = [n for n in members if n not in self.output_layers]
        for name in members:
            group = self._group_for(name, section.granularity)
            if group is None:
                self._check_granularity(name, section.granularity)
                table = self.scores(name, section.granularity, section.criterion)
                units.append((name, table, self.structures(name, section.granularity).size))
            elif group.id not in seen:
                seen.add(group.id)
                table = self.group_scores(group.id, section.criterion, section.granularity)
                units.append((group, table,
                              self._group_channel_params(group, section.granularity)))
        if not units:
            return {}, {}
        tables = [u[1] for u in units]
        if section.threshold is not None:
            pruned = [t.count_below(section.threshold) for t in tables]
        else:
            assert section.sparsity is not None
            ranked = tables
            if section.granularity.structured:
                # Filters of different layers (and groups averaged over several layers)
                # are on different scales: rank them relative to their own layer's mean.
                ranked = [ScoreTable.of_scores(t.scores / (float(t.scores.mean()) or 1.0))
                          for t in tables]
            pruned = _global_counts(ranked, [u[2] for u in units], section.sparsity,
                                    section.max_layer_sparsity,
                                    [isinstance(u[0], Group) for u in units])
        if section.max_layer_sparsity is not None:
            caps = [math.floor(section.max_layer_sparsity * t.count + 1e-9) for t in tables]
            pruned = [min(p, cap) for p, cap in zip(pruned, caps, strict=True)]
        layer_part: dict[str, _Decision] = {}
        group_part: dict[int, _Decision] = {}
        for (unit, table, _), k in zip(units, pruned, strict=True):
            if isinstance(unit, Group):
                # Held at its last unit by the keep-one rule: say so.
                wanted_all = section.threshold is None and k == table.count - 1
                group_part[unit.id] = self._decide_group(
                    unit, section.granularity, section.criterion, None, section.threshold,
                    notes, pruned=table.count if wanted_all else k)
            else:
                layer_part[unit] = _Decision(section.granularity, section.criterion, k,
                                             section.threshold, table)
        return layer_part, group_part

    def _group_channel_params(self, group: Group, side: Granularity) -> int:
        """Weights of one unit of a coupled group on one side (the filters, for filter
        pruning): what a global sparsity target counts. Their readers' input weights go
        too, so the measured sparsity ends up higher than the target."""
        kind = "out" if side is Granularity.FILTER else "in"
        total = 0.0
        for m in group.members:
            if m.kind == kind and m.layer:
                layer = self._layer(m.layer)
                per = layer.params / max(1, self._member_size[(group.id, m.module, m.kind)])
                total += per * len(m.idxs) / group.size
        return max(1, round(total))

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
    def _weight_mask(self, name: str, decision: _Decision) -> Tensor:
        """The weight-shaped boolean keep-mask of a decision."""
        if decision.granularity.n_m is not None:
            return self._nm_mask(name, decision.granularity, decision.criterion)[0]
        return decision.table.rank >= decision.pruned

    def _nm_mask(self, name: str, granularity: Granularity, criterion: str) -> tuple[Tensor, int]:
        """N:M keep-mask (fixed per layer and criterion) and the non-zero count it leaves."""
        key = (name, granularity, criterion)
        if key not in self._nm_masks:
            layer = self._layer(name)
            n, m = granularity.n_m or (0, 1)
            scores = self.scores(name, granularity, criterion).scores.view(layer.shape)
            # Groups of m consecutive weights along the input dimension.
            moved = scores.movedim(layer.in_dim, -1)
            groups = moved.reshape(-1, m)
            keep_idx = groups.topk(n, dim=1).indices
            keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, keep_idx, True)
            mask = keep.view(moved.shape).movedim(-1, layer.in_dim).contiguous()
            nonzero = int(torch.count_nonzero(self._originals[layer.weight] * mask))
            self._nm_masks[key] = (mask, nonzero)
        return self._nm_masks[key]

    def _fed_tensors(self, layer: PrunableLayer) -> list[str]:
        """Tensors fed by the output structures: the bias and the following BN's affine."""
        names = [layer.bias] if layer.bias else []
        if layer.bn:
            names += [f"{layer.bn}.weight", f"{layer.bn}.bias"]
        return [n for n in names if n in self._params]

    def _member_keep(self, gid: int, member: Member, decision: _Decision) -> Tensor:
        """Keep-vector over a member's own channels for a group decision."""
        keep_root = decision.table.struct_rank >= decision.pruned
        keep = torch.ones(self._member_size[(gid, member.module, member.kind)], dtype=torch.bool)
        idxs = torch.tensor(member.idxs, dtype=torch.long)
        roots = torch.tensor(member.root, dtype=torch.long)
        keep[idxs[~keep_root[roots]]] = False
        return keep

    def _weight_keep(
        self, layer: PrunableLayer, decisions: dict[str, _Decision],
        group_decisions: dict[int, _Decision],
    ) -> Tensor | None:
        """The weight's keep-mask: its own decision AND every coupled group's (None: all)."""
        mask = None
        own = decisions.get(layer.name)
        if own is not None:
            mask = self._weight_mask(layer.name, own)
        for gid, member, gran in self._weight_sources.get(layer.name, ()):
            decision = group_decisions.get(gid)
            if decision is not None:
                part = self.structures(layer.name, gran).expand(
                    self._member_keep(gid, member, decision))
                mask = part if mask is None else mask & part
        return mask

    def _write_weight(
        self, layer: PrunableLayer, decisions: dict[str, _Decision],
        group_decisions: dict[int, _Decision],
    ) -> None:
        """Write `w = w0 * mask` (as +0.0 where pruned), or the original."""
        keep = self._weight_keep(layer, decisions, group_decisions)
        if keep is None:
            self._params[layer.weight].copy_(self._originals[layer.weight])
        else:
            _masked_copy(self._params[layer.weight], self._originals[layer.weight], keep)

    def _write_channels(
        self, tensor_name: str, decisions: dict[str, _Decision],
        group_decisions: dict[int, _Decision],
    ) -> None:
        """Zero the channels of a bias or norm parameter that pruned structures feed."""
        keep = self._channel_keep(tensor_name, decisions, group_decisions)
        if keep is None:
            self._params[tensor_name].copy_(self._originals[tensor_name])
        else:
            _masked_copy(self._params[tensor_name], self._originals[tensor_name], keep)

    def _channel_keep(
        self, tensor_name: str, decisions: dict[str, _Decision],
        group_decisions: dict[int, _Decision],
    ) -> Tensor | None:
        """The keep-vector of a bias or norm parameter (None: all kept)."""
        keep = None
        owner = self._fed_owner.get(tensor_name)
        own = decisions.get(owner) if owner else None
        if own is not None and own.granularity is Granularity.FILTER:
            keep = own.table.struct_rank >= own.pruned
        for gid, member in self._channel_sources.get(tensor_name, ()):
            decision = group_decisions.get(gid)
            if decision is not None:
                part = self._member_keep(gid, member, decision)
                keep = part if keep is None else keep & part
        return keep

    def _refresh_results(self, layers: Sequence[PrunableLayer]) -> None:
        """Counts from the precomputed tables (exact; no pass over the weights)."""
        for layer in layers:
            self._stale.discard(layer.name)
            if self._in_removed_block(layer):
                self._results[layer.name] = LayerResult(
                    name=layer.name, type=layer.type, granularity="removed", criterion=None,
                    params=layer.params, nonzero=0, sparsity=1.0, threshold=None,
                    structures=1, structures_pruned=1, group=self._out_group.get(layer.name),
                )
                continue
            decision = self._decisions.get(layer.name)
            threshold: float | None = None
            coupled = [
                (gid, gran) for gid, _, gran in self._weight_sources.get(layer.name, ())
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
                    group=self._out_group.get(layer.name),
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
                group=self._out_group.get(layer.name),
            )


def _inside(module: str, block: str) -> bool:
    return module == block or module.startswith(block + ".")


_SAME_SIZE_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _masked_copy(dst: Tensor, src: Tensor, keep: Tensor) -> None:
    """dst = src where keep, else +0.0 — bit-exact (kept values, -0.0 included, are copied
    bit for bit) and fast: one integer multiply on the tensors' bits."""
    bits = _SAME_SIZE_INT.get(src.element_size())
    if bits is None or not (dst.is_contiguous() and src.is_contiguous()) or src.is_complex():
        dst.data.copy_(torch.where(keep, src, torch.zeros((), dtype=src.dtype)))
        return
    torch.mul(src.view(bits), keep, out=dst.data.view(bits))


def _global_counts(
    tables: Sequence[ScoreTable], sizes: Sequence[int], sparsity: float, cap: float | None,
    keep_one: Sequence[bool] | None = None,
) -> list[int]:
    """How many structures each layer loses when the lowest-scoring structures across all
    layers are pruned until `sparsity` of all their weights is gone.

    With a cap, a layer stops giving structures once it reached `cap` of its own, and the
    ranking moves on to the other layers.
    """
    scores = torch.cat([t.sorted for t in tables])
    layer_id = torch.cat([torch.full((len(t.sorted),), i) for i, t in enumerate(tables)])
    rank = torch.cat([torch.arange(len(t.sorted)) for t in tables])
    size = torch.cat([torch.full((len(t.sorted),), s) for t, s in zip(tables, sizes, strict=True)])
    counts = torch.tensor([len(t.sorted) for t in tables])
    order = torch.argsort(scores, stable=True)
    layer_id, rank, size = layer_id[order], rank[order], size[order]
    limit = counts.clone()
    if cap is not None:
        limit = torch.floor(cap * counts.double() + 1e-9).long()
    if keep_one is not None:  # coupled groups never lose their last unit
        limit = torch.minimum(limit, counts - torch.tensor([int(k) for k in keep_one]))
    eligible = rank < limit[layer_id]
    layer_id, size = layer_id[eligible], size[eligible]
    total = int((counts * torch.tensor(list(sizes))).sum())
    target = round(sparsity * total)
    take = int(torch.searchsorted(torch.cumsum(size, 0), torch.tensor([target]), side="right")[0])
    pruned = torch.bincount(layer_id[:take], minlength=len(tables))
    return [int(p) for p in pruned]
