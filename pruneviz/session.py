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
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from pruneviz.criteria import (
    CalibrationStats,
    ScoreInputs,
    Structures,
    collect_calibration_stats,
    compute_scores,
    get_criterion,
    structures_for,
)
from pruneviz.data import TensorData
from pruneviz.errors import DataError, PlanError
from pruneviz.layers import PrunableLayer, check_finite, find_prunable_layers, fingerprint
from pruneviz.plan import GlobalPlan, Granularity, LayerPlan, Plan, parse_granularity


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
        decision = self._decisions.get(layer)
        if decision is None:
            return torch.ones(self._layer(layer).shape, dtype=torch.bool)
        return self._weight_mask(layer, decision)

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
        decision = self._decide_layer(layer, entry)
        mask = self._weight_mask(layer, decision)
        pruned = decision.pruned if decision.pruned >= 0 else int((~mask).sum())
        return mask, pruned, decision.threshold

    def unsupported(self, layer: str, granularity: Granularity, criterion: str) -> str | None:
        """Why `layer` cannot be pruned at `granularity` by `criterion`, or None if it can."""
        try:
            self._check_granularity(layer, granularity)
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
        decisions = self._decide(plan)  # may raise; nothing written yet
        changed = [
            name for name in set(decisions) | set(self._decisions)
            if decisions.get(name) != self._decisions.get(name)
        ]
        with torch.no_grad():
            for name in changed:
                self._write(self._layer(name), decisions.get(name), self._decisions.get(name))
        self._decisions = decisions
        self.plan = plan
        self._stale.update(changed)

    def reset(self) -> None:
        """Return every parameter the session touched to its original, bit for bit."""
        with torch.no_grad():
            for tensor_name, original in self._originals.items():
                self._params[tensor_name].copy_(original)
        self._decisions = {}
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
            # Statistics are always gathered with the original weights.
            current = {n: self._params[n].detach().clone() for n in self._originals}
            try:
                with torch.no_grad():
                    for n, original in self._originals.items():
                        self._params[n].copy_(original)
                self._stats = collect_calibration_stats(self.model, self.layers, self.calibration)
            finally:
                with torch.no_grad():
                    for n, value in current.items():
                        self._params[n].copy_(value)
        return self._stats

    def _decide(self, plan: Plan) -> dict[str, _Decision]:
        decisions: dict[str, _Decision] = {}
        for name, entry in plan.layers.items():
            decisions[name] = self._decide_layer(name, entry)
        if plan.global_ is not None:
            # Layers with an entry of their own are decided by it, not by the global section.
            members = plan.global_.layers
            if members is None:
                members = tuple(self.layer_names)
            members = tuple(n for n in members if n not in plan.layers)
            decisions.update(self._decide_global(plan.global_, members))
        return decisions

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

    def _decide_global(self, section: GlobalPlan, members: Sequence[str]) -> dict[str, _Decision]:
        """One ranking across `members`; returns each member's share of the pruning."""
        if not members:
            return {}
        for name in members:
            self._check_granularity(name, section.granularity)
        tables = [self.scores(n, section.granularity, section.criterion) for n in members]
        sizes = [self.structures(n, section.granularity).size for n in members]
        counts = [len(t.sorted) for t in tables]
        if section.threshold is not None:
            pruned = [t.count_below(section.threshold) for t in tables]
        else:
            assert section.sparsity is not None
            pruned = _global_counts(tables, sizes, section.sparsity, section.max_layer_sparsity)
        if section.max_layer_sparsity is not None:
            caps = [math.floor(section.max_layer_sparsity * c + 1e-9) for c in counts]
            pruned = [min(p, cap) for p, cap in zip(pruned, caps, strict=True)]
        return {
            name: _Decision(section.granularity, section.criterion, k, section.threshold, table)
            for name, table, k in zip(members, tables, pruned, strict=True)
        }

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

    def _write(
        self, layer: PrunableLayer, decision: _Decision | None, previous: _Decision | None
    ) -> None:
        """Write `w = w0 * mask` (as +0.0 where pruned) and zero or restore fed tensors."""
        weight = self._params[layer.weight]
        fed = self._fed[layer.name]
        if decision is None:
            for tensor_name in [layer.weight, *fed]:
                self._params[tensor_name].copy_(self._originals[tensor_name])
            return
        _masked_copy(weight, self._originals[layer.weight], self._weight_mask(layer.name, decision))
        if decision.granularity is Granularity.FILTER:
            keep = decision.table.struct_rank >= decision.pruned
            for tensor_name in fed:
                _masked_copy(self._params[tensor_name], self._originals[tensor_name], keep)
        elif previous is not None and previous.granularity is Granularity.FILTER:
            for tensor_name in fed:
                self._params[tensor_name].copy_(self._originals[tensor_name])

    def _refresh_results(self, layers: Sequence[PrunableLayer]) -> None:
        """Counts from the precomputed tables (exact; no pass over the weights)."""
        for layer in layers:
            self._stale.discard(layer.name)
            decision = self._decisions.get(layer.name)
            threshold: float | None = None
            if decision is None:
                structures, pruned = layer.params, 0
                nonzero = self._original_nonzero[layer.name]
            elif decision.granularity.n_m is not None:
                mask, nonzero = self._nm_mask(layer.name, decision.granularity, decision.criterion)
                structures = layer.params
                pruned = structures - int(mask.sum())
            else:
                structures = decision.table.count
                pruned = decision.pruned
                nonzero = decision.table.nonzero_after(pruned)
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


def _global_counts(
    tables: Sequence[ScoreTable], sizes: Sequence[int], sparsity: float, cap: float | None
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
    if cap is not None:
        limit = torch.floor(cap * counts.double() + 1e-9).long()
        eligible = rank < limit[layer_id]
        layer_id, size = layer_id[eligible], size[eligible]
    total = int((counts * torch.tensor(list(sizes))).sum())
    target = round(sparsity * total)
    take = int(torch.searchsorted(torch.cumsum(size, 0), torch.tensor([target]), side="right")[0])
    pruned = torch.bincount(layer_id[:take], minlength=len(tables))
    return [int(p) for p in pruned]
