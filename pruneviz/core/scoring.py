"""LayerScorer: a session's score tables, computed on demand from the original weights.

One table per (layer, granularity, criterion) and one per coupled group, each computed
the first time it is asked for and kept until the weights change (`forget`). The tables
the current decisions use are always kept; the others are kept while their bytes stay
within `budget_bytes` (least recently used dropped first, computed again if asked), so
trying many criteria never grows the session without bound. The scorer is what `decide`
reads tables from (it is a `decide.ScoreSource`), and it turns a layer's decision into
that layer's weight mask.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager

import torch
from torch import Tensor, nn

from pruneviz.core.coupling import Group
from pruneviz.core.criteria import (
    CalibrationStats,
    Comparison,
    ScoreInputs,
    Structures,
    Zeroed,
    ablation_scores,
    collect_calibration_stats,
    compute_scores,
    get_criterion,
    structures_for,
)
from pruneviz.core.decide import Decision
from pruneviz.core.granularity import Granularity
from pruneviz.core.groups import CoupledGroups
from pruneviz.core.layers import PrunableLayer
from pruneviz.core.masks import n_m_keep
from pruneviz.core.scores import ScoreTable
from pruneviz.data.tensors import TensorData
from pruneviz.errors import DataError, PlanError


class LayerScorer:
    """Scores the prunable `layers` of `model` from their kept `originals`.

    `coupled` indexes the model's coupled groups; `calibration` feeds the data-driven
    criteria, measured on the original model that `originals_in_place` shows for a
    moment; `seed` fixes the random criteria.
    """

    def __init__(
        self, model: nn.Module, layers: Sequence[PrunableLayer], originals: Mapping[str, Tensor],
        coupled: CoupledGroups, output_layers: set[str], *,
        calibration: TensorData | None, seed: int,
        originals_in_place: Callable[[], AbstractContextManager[None]],
        budget_bytes: int | None = None,
    ) -> None:
        self._model = model
        self._layers = list(layers)
        self._by_name = {layer.name: layer for layer in layers}
        self._originals = originals
        self._coupled = coupled
        self._output_layers = output_layers
        self._calibration = calibration
        self._seed = seed
        self._originals_in_place = originals_in_place
        self._structures: dict[tuple[str, Granularity], Structures] = {}
        self._tables: OrderedDict[tuple[str, Granularity, str], ScoreTable] = OrderedDict()
        self._unsupported: dict[tuple[str, Granularity, str], str | None] = {}
        self._in_use: set[int] = set()  # ids of the tables the current decisions hold
        self.budget_bytes = budget_bytes
        self._nm_masks: dict[tuple[str, Granularity, str], tuple[Tensor, int]] = {}
        self._stats: CalibrationStats | None = None

    # -- decide.ScoreSource --------------------------------------------------------------
    @property
    def layer_names(self) -> list[str]:
        """Names of the prunable layers, in model order."""
        return [layer.name for layer in self._layers]

    @property
    def output_layers(self) -> set[str]:
        """Layers whose outputs are the model's outputs."""
        return self._output_layers

    def layer_table(self, layer: str, granularity: Granularity, criterion: str) -> ScoreTable:
        """`layer`'s table, after checking that the granularity fits it."""
        self.check_granularity(layer, granularity)
        return self.scores(layer, granularity, criterion)

    def group_for(self, layer: str, granularity: Granularity) -> Group | None:
        """The coupled group deciding `layer` at `granularity` (None: decided alone)."""
        return self._coupled.group_for(layer, granularity)

    def group_table(self, group: int, criterion: str, side: Granularity) -> ScoreTable:
        """A coupled group's channel importance from its members on one side."""
        return self._coupled.scores(group, criterion, side, self.scores, self._signed_columns,
                                    self._ablate)

    def _signed_columns(self, layer: str) -> Tensor | None:
        """A Linear's per-batch signed column sums of w * dL/dw (head Taylor); raises
        DataError without calibration data, as the taylor criterion does."""
        if self._calibration is None:
            raise DataError(
                "criterion 'taylor' needs calibration data; create the session with "
                "calibration=... or choose l1, l2, random, fpgm, lsh or bn_scale")
        return self._calibration_stats().signed_in.get(layer)

    def _ablate(self, units: Sequence[Sequence[Zeroed]]) -> Tensor:
        """Per unit, the calibration loss increase with its slices zeroed, measured on the
        original model (criteria.ablation_scores); DataError without calibration data."""
        if self._calibration is None:
            raise DataError(
                "criterion 'ablation' needs calibration data; create the session with "
                "calibration=... or choose l1, l2, random, fpgm, lsh or bn_scale")
        with self._originals_in_place():
            return ablation_scores(self._model, units, self._calibration)

    def unit_weights(self, unit: str | Group, granularity: Granularity) -> int:
        """Weights one structure of a layer, or one unit of a group, holds."""
        if isinstance(unit, Group):
            return self._coupled.unit_weights(unit, granularity)
        return self.structures(unit, granularity).size

    # -- tables --------------------------------------------------------------------------
    def layer(self, name: str) -> PrunableLayer:
        """The prunable layer called `name` (PlanError naming the others if none)."""
        try:
            return self._by_name[name]
        except KeyError:
            raise PlanError(
                f"unknown layer {name!r}; prunable layers are: {', '.join(self.layer_names)}"
            ) from None

    def structures(self, layer: str, granularity: Granularity) -> Structures:
        """The structures of `layer` at `granularity` (cached)."""
        key = (layer, granularity)
        if key not in self._structures:
            self._structures[key] = structures_for(self.layer(layer), granularity)
        return self._structures[key]

    def scores(self, layer: str, granularity: Granularity, criterion: str) -> ScoreTable:
        """Scores of `layer`'s structures under `criterion`, computed once on the originals."""
        key = (layer, granularity, criterion)
        if key in self._tables:
            self._tables.move_to_end(key)
        else:
            info = self.layer(layer)
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
                seed=self._seed,
            )
            if spec.needs_data and self._calibration is None:
                raise DataError(
                    f"criterion {criterion!r} needs calibration data; create the session with "
                    "calibration=... or choose l1, l2, random, fpgm, lsh or bn_scale"
                )
            values = compute_scores(criterion, inputs)
            rows = None
            if spec.comparison is Comparison.ROW and not granularity.structured:
                if info.out_dim != 0:
                    raise PlanError(
                        f"layer {layer!r} ({info.type}): criterion {criterion!r} compares "
                        "weights within each output row, and this layer's weight does not "
                        "keep its outputs in rows; use a filter or channel granularity")
                rows = info.shape[0]
            self._tables[key] = ScoreTable.build(values, structures, inputs.weight, rows)
        return self._tables[key]

    def unsupported(self, layer: str, granularity: Granularity, criterion: str) -> str | None:
        """Why `layer` cannot be pruned at `granularity` by `criterion`, or None if it can
        (the answer is kept: the tables it computed may be dropped)."""
        key = (layer, granularity, criterion)
        if key not in self._unsupported:
            self._unsupported[key] = self._why_unsupported(layer, granularity, criterion)
        return self._unsupported[key]

    def _why_unsupported(self, layer: str, granularity: Granularity,
                         criterion: str) -> str | None:
        try:
            self.check_granularity(layer, granularity)
            group = self._coupled.group_for(layer, granularity)
            if group is not None:
                self.group_table(group.id, criterion, granularity)
            else:
                self.scores(layer, granularity, criterion)
        except PlanError as exc:
            return str(exc)
        return None

    def check_granularity(self, name: str, granularity: Granularity) -> None:
        """Raise PlanError if `granularity` cannot apply to layer `name` (N:M runs)."""
        layer = self.layer(name)
        if granularity.n_m is not None:
            _n, m = granularity.n_m
            if len(layer.shape) < 2 or layer.shape[layer.in_dim] % m:
                raise PlanError(
                    f"layer {name!r}: {granularity.value} sparsity groups {m} consecutive "
                    f"input weights, but its weight {layer.shape} has "
                    f"{layer.shape[layer.in_dim] if len(layer.shape) > 1 else 1} inputs per "
                    f"row, not a multiple of {m}; use unstructured or filter pruning here"
                )

    def forget(self, *, keep_nm_masks: bool = False) -> None:
        """Drop everything computed from the weights (they changed); `keep_nm_masks` keeps
        the N:M masks, for decisions kept across the change."""
        self._tables.clear()
        self._unsupported.clear()
        self._coupled.forget_scores()
        self._stats = None
        if not keep_nm_masks:
            self._nm_masks.clear()

    def keep_in_use(self, tables: Collection[ScoreTable]) -> None:
        """The current decisions hold `tables`: keep them, and drop the least recently
        used others until those fit `budget_bytes`."""
        self._in_use = {id(table) for table in tables}
        if self.budget_bytes is None:
            return
        spare = [(key, table) for key, table in self._tables.items()
                 if id(table) not in self._in_use]
        held = sum(table.nbytes for _, table in spare)
        for key, table in spare:  # oldest first
            if held <= self.budget_bytes:
                break
            del self._tables[key]
            held -= table.nbytes

    def tables_bytes(self) -> int:
        """Bytes of the score tables kept now."""
        return sum(table.nbytes for table in self._tables.values())

    def _calibration_stats(self) -> CalibrationStats:
        if self._stats is None:
            if self._calibration is None:
                raise DataError("no calibration data was given to this session")
            with self._originals_in_place():
                self._stats = collect_calibration_stats(
                    self._model, self._layers, self._calibration)
        return self._stats

    # -- masks of decisions --------------------------------------------------------------
    def weight_mask(self, name: str, decision: Decision) -> Tensor:
        """The weight-shaped boolean keep-mask of a layer's own decision."""
        if decision.granularity.n_m is not None:
            return self.nm_mask(name, decision.granularity, decision.criterion)[0]
        keep = decision.table.keep(decision.pruned)
        return self.structures(name, decision.granularity).expand(keep)

    def nm_mask(self, name: str, granularity: Granularity, criterion: str) -> tuple[Tensor, int]:
        """N:M keep-mask (fixed per layer and criterion) and the non-zero count it leaves."""
        key = (name, granularity, criterion)
        if key not in self._nm_masks:
            layer = self.layer(name)
            n, m = granularity.n_m or (0, 1)
            scores = self.scores(name, granularity, criterion).scores.view(layer.shape)
            mask = n_m_keep(scores, n, m, layer.in_dim)
            nonzero = int(torch.count_nonzero(self._originals[layer.weight] * mask))
            self._nm_masks[key] = (mask, nonzero)
        return self._nm_masks[key]

    def expand(self, layer: str, granularity: Granularity, keep: Tensor) -> Tensor:
        """The weight mask of a keep-vector over `layer`'s filters or input channels."""
        return self.structures(layer, granularity).expand(keep)
