"""Pruning plans: frozen, serialisable recipes keyed by layer name.

A plan is what the UI edits, the CLI reads and an export reproduces. It says, per layer,
which granularity and importance criterion to use and how much to prune (a sparsity
fraction or an absolute score threshold), plus an optional global section that ranks
structures across several layers at once.

JSON form (version 1)::

    {"format": "pruneviz.plan", "version": 1,
     "model": {"name": "sample:digits_cnn", "fingerprint": "3f0c..."},
     "layers": {"conv1": {"granularity": "filter", "criterion": "l1", "sparsity": 0.5}},
     "global": {"granularity": "unstructured", "criterion": "l1", "sparsity": 0.8,
                "layers": null, "max_layer_sparsity": 0.95},
     "refit": {"damping": 0.01, "samples": 1024, "seed": 0}}

"refit" (optional; plans without it read as before) says that the kept weights were
refit to the unpruned layers' outputs after pruning, with these settings
(`pruneviz.workflows.refit`): the weights follow from the plan, the model and the data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from pruneviz.core.criteria import criterion_names
from pruneviz.core.granularity import Granularity, parse_granularity
from pruneviz.errors import PlanError

PLAN_FORMAT = "pruneviz.plan"
PLAN_VERSION = 1


def _validate_criterion(value: str, where: str) -> str:
    names = criterion_names()
    if value not in names:
        raise PlanError(f"{where}: unknown criterion {value!r}; allowed: {', '.join(names)}")
    return value


def _validate_amount(
    sparsity: float | None, threshold: float | None, granularity: Granularity, where: str
) -> None:
    if granularity.n_m is not None:
        if sparsity is not None or threshold is not None:
            n, m = granularity.n_m
            raise PlanError(
                f"{where}: {granularity.value} sparsity is fixed at {1 - n / m:.0%}; "
                "remove 'sparsity'/'threshold' from this entry"
            )
        return
    if (sparsity is None) == (threshold is None):
        raise PlanError(f"{where}: give exactly one of 'sparsity' (0..1) or 'threshold' (>= 0)")
    if sparsity is not None:
        if isinstance(sparsity, bool) or not isinstance(sparsity, int | float):
            raise PlanError(f"{where}: sparsity must be a number in [0, 1], got {sparsity!r}")
        if not (0.0 <= sparsity <= 1.0):
            raise PlanError(f"{where}: sparsity {sparsity!r} is outside [0, 1]")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise PlanError(f"{where}: threshold must be a number >= 0, got {threshold!r}")
        if not math.isfinite(threshold) or threshold < 0:
            raise PlanError(f"{where}: threshold {threshold!r} must be a finite number >= 0")


@dataclass(frozen=True)
class LayerPlan:
    """How one layer is pruned: granularity, criterion and amount.

    Exactly one of `sparsity` (fraction of structures removed, 0..1) and `threshold`
    (structures whose score is below it are removed) is set, except for N:M
    granularities, whose sparsity is fixed by N and M and which take neither.
    """

    granularity: Granularity = Granularity.UNSTRUCTURED
    criterion: str = "l1"
    sparsity: float | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "granularity", parse_granularity(self.granularity, "layer"))
        _validate_criterion(self.criterion, "layer")
        _validate_amount(self.sparsity, self.threshold, self.granularity, "layer")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; unset amounts are left out."""
        return _entry_dict(self)


@dataclass(frozen=True)
class GlobalPlan:
    """One ranking of structures across several layers, pruned to a total amount.

    `layers=None` means every prunable layer that has no entry of its own in the plan.
    `max_layer_sparsity` caps what any one layer may lose, so no layer is emptied.
    """

    granularity: Granularity = Granularity.UNSTRUCTURED
    criterion: str = "l1"
    sparsity: float | None = None
    threshold: float | None = None
    layers: tuple[str, ...] | None = None
    max_layer_sparsity: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "granularity", parse_granularity(self.granularity, "global"))
        if self.granularity.n_m is not None:
            raise PlanError(
                "global: N:M granularities have a fixed per-group sparsity and cannot be "
                "ranked globally; set them per layer instead"
            )
        _validate_criterion(self.criterion, "global")
        _validate_amount(self.sparsity, self.threshold, self.granularity, "global")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))
        cap = self.max_layer_sparsity
        if cap is not None and not (0.0 <= cap <= 1.0):
            raise PlanError(f"global: max_layer_sparsity {cap!r} is outside [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out = _entry_dict(self)
        out["layers"] = list(self.layers) if self.layers is not None else None
        out["max_layer_sparsity"] = self.max_layer_sparsity
        return out


def _entry_dict(entry: LayerPlan | GlobalPlan) -> dict[str, Any]:
    out: dict[str, Any] = {"granularity": entry.granularity.value, "criterion": entry.criterion}
    if entry.sparsity is not None:
        out["sparsity"] = float(entry.sparsity)
    if entry.threshold is not None:
        out["threshold"] = float(entry.threshold)
    return out


REFIT_DAMPING = 0.01  # a fraction of the mean diagonal of XᵀX (SparseGPT's default: 1%)
REFIT_SAMPLES = 1024  # calibration samples
REFIT_SEED = 0


@dataclass(frozen=True)
class Refit:
    """Reconstruction after pruning: refit the kept weights to the unpruned layers' outputs
    on `samples` calibration samples drawn with `seed`, each row's least-squares solve
    damped by `damping` times the mean diagonal of XᵀX (see workflows.refit)."""

    damping: float = REFIT_DAMPING
    samples: int = REFIT_SAMPLES
    seed: int = REFIT_SEED

    def __post_init__(self) -> None:
        damping, samples, seed = self.damping, self.samples, self.seed
        if (isinstance(damping, bool) or not isinstance(damping, int | float)
                or not math.isfinite(damping) or not 0.0 < damping <= 1.0):
            raise PlanError(f"refit: damping must be a number in (0, 1], got {damping!r}")
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise PlanError(f"refit: samples must be a whole number >= 1, got {samples!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise PlanError(f"refit: seed must be a whole number >= 0, got {seed!r}")
        object.__setattr__(self, "damping", float(damping))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"damping": self.damping, "samples": self.samples, "seed": self.seed}


@dataclass(frozen=True)
class ModelRef:
    """Which model a plan was made for: a name and a fingerprint of its parameter shapes."""

    name: str
    fingerprint: str


@dataclass(frozen=True)
class Plan:
    """A complete pruning recipe: per-layer entries, an optional global section."""

    layers: Mapping[str, LayerPlan] = field(default_factory=dict)
    global_: GlobalPlan | None = None
    model: ModelRef | None = None
    blocks: tuple[str, ...] = ()  # modules replaced by the identity (see blocks.py)
    refit: Refit | None = None  # the kept weights refit after pruning (see Refit)

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(sorted(set(self.blocks))))
        for name, entry in self.layers.items():
            if not isinstance(entry, LayerPlan):
                raise PlanError(f"layer {name!r}: expected a LayerPlan, got {type(entry).__name__}")
        object.__setattr__(self, "layers", MappingProxyType(dict(sorted(self.layers.items()))))

    # -- building -------------------------------------------------------------------------
    @classmethod
    def uniform(
        cls,
        layer_names: Iterable[str],
        sparsity: float,
        granularity: Granularity | str = Granularity.UNSTRUCTURED,
        criterion: str = "l1",
    ) -> Plan:
        """The same sparsity, granularity and criterion for every named layer."""
        g = parse_granularity(granularity)
        amount = None if g.n_m is not None else sparsity
        return cls({n: LayerPlan(g, criterion, sparsity=amount) for n in layer_names})

    def with_layer(self, name: str, entry: LayerPlan | None) -> Plan:
        """A new plan with one layer's entry set (or removed, with None)."""
        layers = dict(self.layers)
        if entry is None:
            layers.pop(name, None)
        else:
            layers[name] = entry
        return replace(self, layers=layers)

    def with_blocks(self, blocks: Iterable[str]) -> Plan:
        """A new plan that removes exactly these blocks (modules) from the network."""
        return replace(self, blocks=tuple(blocks))

    def with_global(self, section: GlobalPlan | None) -> Plan:
        """A new plan with the global section set (or removed, with None)."""
        return replace(self, global_=section)

    def with_refit(self, refit: Refit | None) -> Plan:
        """A new plan that says the kept weights are refit with these settings (or, with
        None, that they are not)."""
        return replace(self, refit=refit)

    def for_model(self, name: str, fingerprint: str) -> Plan:
        """A new plan stamped with the model it was made for."""
        return replace(self, model=ModelRef(name, fingerprint))

    @property
    def is_empty(self) -> bool:
        """True when the plan prunes nothing."""
        return not self.layers and self.global_ is None and not self.blocks

    # -- checking against a model ---------------------------------------------------------
    def validate_for(self, layer_names: Sequence[str], fingerprint: str | None = None) -> None:
        """Refuse a plan that names missing layers or was made for another model."""
        if (
            fingerprint is not None
            and self.model is not None
            and self.model.fingerprint != fingerprint
        ):
            raise PlanError(
                f"this plan was made for model {self.model.name!r} "
                f"(fingerprint {self.model.fingerprint}), but the loaded model has "
                f"fingerprint {fingerprint}; load the model the plan was made for, or "
                "make a new plan"
            )
        known = set(layer_names)
        named = list(self.layers)
        if self.global_ is not None and self.global_.layers is not None:
            named += list(self.global_.layers)
        missing = [n for n in named if n not in known]
        if missing:
            shown = ", ".join(sorted(layer_names)[:12])
            more = "" if len(layer_names) <= 12 else f", ... ({len(layer_names)} in all)"
            listed = ", ".join(n[:80] for n in missing[:12]) + (
                f" and {len(missing) - 12:,} more" if len(missing) > 12 else "")
            raise PlanError(
                f"the plan names layer(s) the model does not have: {listed}; "
                f"prunable layers are: {shown}{more}"
            )

    # -- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Versioned JSON-ready form."""
        out: dict[str, Any] = {"format": PLAN_FORMAT, "version": PLAN_VERSION}
        if self.model is not None:
            out["model"] = {"name": self.model.name, "fingerprint": self.model.fingerprint}
        out["layers"] = {name: entry.to_dict() for name, entry in self.layers.items()}
        out["global"] = self.global_.to_dict() if self.global_ is not None else None
        if self.blocks:
            out["blocks"] = list(self.blocks)
        if self.refit is not None:
            out["refit"] = self.refit.to_dict()
        return out

    def to_json(self, indent: int | None = 2) -> str:
        """Versioned JSON text."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    def key(self) -> str:
        """A canonical string identifying what the plan does to the weights it is applied
        to: which entries it zeroes (for caches). A refit is not part of it — it makes new
        weights, which the caches and the experiment log tell apart by themselves."""
        data = self.to_dict()
        data.pop("model", None)
        data.pop("refit", None)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def __hash__(self) -> int:
        return hash(self.key())

    @classmethod
    def from_dict(cls, data: Any) -> Plan:
        """Parse and validate the JSON form; errors name the entry and the allowed values."""
        if not isinstance(data, dict):
            raise PlanError(f"a plan must be a JSON object, got {type(data).__name__}")
        _check_keys(data, {"format", "version", "model", "layers", "global", "blocks", "refit"},
                    "plan")
        if data.get("format") != PLAN_FORMAT:
            raise PlanError(f"not a pruneviz plan: 'format' is {data.get('format')!r}, "
                            f"expected {PLAN_FORMAT!r}")
        version = data.get("version")
        if version != PLAN_VERSION:
            raise PlanError(
                f"plan version {version!r} is not supported; this pruneviz reads version "
                f"{PLAN_VERSION}"
            )
        model = None
        if data.get("model") is not None:
            ref = data["model"]
            if not isinstance(ref, dict) or not {"name", "fingerprint"} <= set(ref):
                raise PlanError("plan 'model' must be an object with 'name' and 'fingerprint'")
            model = ModelRef(str(ref["name"]), str(ref["fingerprint"]))
        raw_layers = data.get("layers") or {}
        if not isinstance(raw_layers, dict):
            raise PlanError("plan 'layers' must be an object mapping layer names to entries")
        layers = {name: _layer_from_dict(name, entry) for name, entry in raw_layers.items()}
        global_ = _global_from_dict(data["global"]) if data.get("global") is not None else None
        blocks = data.get("blocks") or []
        if not isinstance(blocks, list) or not all(isinstance(b, str) for b in blocks):
            raise PlanError("plan 'blocks' must be a list of module names")
        refit = _refit_from_dict(data["refit"]) if data.get("refit") is not None else None
        return cls(layers, global_, model, tuple(blocks), refit)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """Parse JSON text into a validated plan."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"the plan is not valid JSON: {exc}") from None
        except RecursionError:
            raise PlanError("the plan is nested too deeply to be a plan (a plan is a few "
                            "levels of objects); check the file") from None
        return cls.from_dict(data)


_AMOUNT_KEYS = {"granularity", "criterion", "sparsity", "threshold"}


def _check_keys(data: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise PlanError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )


def _layer_from_dict(name: str, entry: Any) -> LayerPlan:
    where = f"layer {name!r}"
    if not isinstance(entry, dict):
        raise PlanError(f"{where}: expected an object, got {type(entry).__name__}")
    _check_keys(entry, _AMOUNT_KEYS, where)
    try:
        return LayerPlan(
            parse_granularity(entry.get("granularity", "unstructured"), where),
            _validate_criterion(entry.get("criterion", "l1"), where),
            sparsity=entry.get("sparsity"),
            threshold=entry.get("threshold"),
        )
    except PlanError as exc:
        message = str(exc)
        if not message.startswith(where):
            message = f"{where}: {message.removeprefix('layer: ')}"
        raise PlanError(message) from None


def _refit_from_dict(entry: Any) -> Refit:
    if not isinstance(entry, dict):
        raise PlanError(f"refit: expected an object, got {type(entry).__name__}")
    _check_keys(entry, {"damping", "samples", "seed"}, "refit")
    return Refit(entry.get("damping", REFIT_DAMPING), entry.get("samples", REFIT_SAMPLES),
                 entry.get("seed", REFIT_SEED))


def _global_from_dict(entry: Any) -> GlobalPlan:
    if not isinstance(entry, dict):
        raise PlanError(f"global: expected an object, got {type(entry).__name__}")
    _check_keys(entry, _AMOUNT_KEYS | {"layers", "max_layer_sparsity"}, "global")
    layers = entry.get("layers")
    if layers is not None and (
        not isinstance(layers, list) or not all(isinstance(n, str) for n in layers)
    ):
        raise PlanError("global: 'layers' must be a list of layer names or null")
    return GlobalPlan(
        parse_granularity(entry.get("granularity", "unstructured"), "global"),
        _validate_criterion(entry.get("criterion", "l1"), "global"),
        sparsity=entry.get("sparsity"),
        threshold=entry.get("threshold"),
        layers=tuple(layers) if layers is not None else None,
        max_layer_sparsity=entry.get("max_layer_sparsity"),
    )
