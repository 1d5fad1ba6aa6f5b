"""Sensitivity analysis: prune one layer (or one coupled group) alone at a ladder of
amounts, and measure what the model loses.

For structured granularities the unit is the coupled group, not the layer: a residual-
coupled conv pruned alone would only be masked on one branch of the sum and look
harmless, while pruning its channels for real removes them from every branch.

Speed comes from three things, none of which changes a number:
- the unpruned point (amount 0) is measured once for all items;
- two amounts that prune the same structures (8 filters at 10% and at 15%) are measured
  once;
- the prefix of the network that runs before the first changed module is not run again.
  A forward pass computes nothing from a module's weights before that module is first
  called, so every module call that *ends* before it returns what it returned for the
  unpruned model. `PrefixCache` records those outputs once per evaluation batch and, per
  item, stands them in for the calls — the suffix then computes from exactly the same
  inputs as a full pass would, and the metric is bit-for-bit the full pass's.

Results stream (`SensitivityRun.points()` yields each point as it is measured), can be
cancelled between points, and are cached per (model weights, data, item, amount,
criterion, granularity) in a `SensitivityCache` that outlives the run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from pruneviz.core.granularity import Granularity, parse_granularity
from pruneviz.core.layers import eval_mode
from pruneviz.core.plan import LayerPlan, Plan
from pruneviz.core.session import PruningSession
from pruneviz.data.tensors import TensorData
from pruneviz.errors import PlanError
from pruneviz.i18n import _
from pruneviz.measure.metrics import EvalResult, count_params, evaluate
from pruneviz.measure.storage import sparse_size

DEFAULT_LEVELS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
EVAL_BATCH = 1024  # as metrics.evaluate, so that the numbers are the same
PREFIX_MEMORY_LIMIT = 512 * 2**20  # bytes of stored activations; beyond it, full passes


@dataclass(frozen=True)
class Item:
    """One thing pruned alone: a layer, or a coupled group through one of its layers."""

    key: str  # the layer whose plan entry prunes it
    layers: tuple[str, ...]  # every layer it changes (the key first)
    granularity: Granularity
    unit: str  # "weight", "filter", "channel", "head", "hidden unit"

    @property
    def coupled(self) -> bool:
        return len(self.layers) > 1

    @property
    def label(self) -> str:
        """The key, and the layers coupled with it."""
        if not self.coupled:
            return self.key
        rest = len(self.layers) - 1
        return _("{key} (+{count} coupled)").format(key=self.key, count=rest)

    def entry(self, level: float, criterion: str) -> LayerPlan:
        return LayerPlan(self.granularity, criterion, sparsity=level)


@dataclass(frozen=True)
class Point:
    """One measurement: an item pruned alone at one amount (item None: the unpruned model)."""

    item: str | None
    level: float
    metric: float
    loss: float
    params_nonzero: int  # in the whole model
    macs: int  # weight MACs per sample, zero weights skipped
    size_bytes: int  # the sparse-encoded weights file
    structures_pruned: int  # of the item's units

    def to_dict(self) -> dict[str, Any]:
        return {"sparsity": self.level, "metric": self.metric, "loss": self.loss,
                "params_nonzero": self.params_nonzero, "macs": self.macs,
                "size_bytes": self.size_bytes, "structures_pruned": self.structures_pruned}


def sensitivity_items(
    session: PruningSession, granularity: Granularity | str, criterion: str = "l1"
) -> list[Item]:
    """What a sensitivity analysis prunes one at a time, in model order.

    Unstructured: every layer. Filter/channel: every coupled group (through its first
    layer on that side), and every layer whose structures belong to no group (masked
    alone). Layers that cannot be pruned this way (the output layer's filters, bn_scale
    without a BatchNorm) are left out.
    """
    g = parse_granularity(granularity)
    if g.n_m is not None:
        raise PlanError(f"sensitivity needs an amount to vary, and {g.value} has a fixed "
                        "sparsity; choose unstructured, filter or channel")
    items: list[Item] = []
    seen: set[int] = set()
    for name in session.layer_names:
        if session.unsupported(name, g, criterion) is not None:
            continue
        group = session.group_of(name, g) if g.structured else None
        if group is None:
            unit = g.value if g.structured else "weight"
            items.append(Item(name, (name,), g, unit))
        elif group.id not in seen:
            seen.add(group.id)
            others = tuple(n for n in group.layers if n != name)
            items.append(Item(name, (name, *others), g, group.unit))
    return items


@dataclass
class SensitivityCache:
    """Points measured so far, by (weights' values, data, item, level, criterion,
    granularity)."""

    points: dict[tuple[str, ...], Point] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key: tuple[str, ...]) -> Point | None:
        with self.lock:
            return self.points.get(key)

    def put(self, key: tuple[str, ...], point: Point) -> None:
        with self.lock:
            self.points[key] = point


# -- prefix reuse ------------------------------------------------------------------------
@dataclass(frozen=True)
class _Call:
    module: str
    index: int  # the module's how-many-th call in one forward pass
    start: int  # event numbers: a call's pre-hook and its hook
    end: int


class PrefixCache:
    """Outputs of the module calls that run before given modules, for every batch.

    `record` runs the model on each batch with hooks: it learns the order of all module
    calls and keeps the outputs of the outermost calls that end before the first use of
    each module set it is given. `run(model, x, batch, changed)` then runs the model with
    those calls answered from the record, so only the rest of the network computes.
    """

    def __init__(self) -> None:
        self.calls: list[_Call] = []
        self.outputs: dict[tuple[int, str, int], Any] = {}  # (batch, module, index) -> output
        self.mutated: set[tuple[str, int]] = set()  # outputs the model changes in place
        self.bytes = 0
        self.enabled = False

    def record(self, model: nn.Module, batches: Sequence[Tensor],
               changes: Sequence[set[str]]) -> bool:
        """Record the outputs the runs for `changes` (sets of changed modules) will need.
        False (and nothing kept) when the call order differs between batches (control
        flow that depends on the data) or the outputs would not fit in memory."""
        names = {id(m): n for n, m in model.named_modules() if n}
        self.calls = self._trace(model, batches[0], names, None, 0)
        wanted = {(c.module, c.index) for change in changes for c in self.stubs(change)}
        for b, x in enumerate(batches):
            if self._trace(model, x, names, wanted, b) != self.calls or \
                    self.bytes > PREFIX_MEMORY_LIMIT:
                self.outputs.clear()
                self.bytes = 0
                return False
        self.enabled = True
        return True

    def _trace(self, model: nn.Module, x: Tensor, names: dict[int, str],
               keep: set[tuple[str, int]] | None, batch: int) -> list[_Call]:
        events = 0
        counts: dict[str, int] = {}
        open_calls: dict[str, list[tuple[int, int]]] = {}
        calls: list[_Call] = []
        versions: dict[tuple[str, int], tuple[Any, list[int]]] = {}

        def pre(module: nn.Module, _inputs: Any) -> None:
            nonlocal events
            name = names[id(module)]
            index = counts.get(name, 0)
            counts[name] = index + 1
            open_calls.setdefault(name, []).append((index, events))
            events += 1

        def post(module: nn.Module, _inputs: Any, output: Any) -> None:
            nonlocal events
            name = names[id(module)]
            index, start = open_calls[name].pop()
            calls.append(_Call(name, index, start, events))
            events += 1
            if keep is not None and (name, index) in keep:
                # A copy, taken now: later in the pass the output may be changed in place.
                self.outputs[(batch, name, index)] = _clone(output)
                self.bytes += _nbytes(output)
                versions[(name, index)] = (output, [t._version for t in _tensors(output)])

        handles = []
        for module in model.modules():
            if id(module) in names:
                handles.append(module.register_forward_pre_hook(pre))
                handles.append(module.register_forward_hook(post))
        try:
            # no_grad, not inference_mode: tensors then count their in-place changes
            with eval_mode(model), torch.no_grad():
                model(x)
        finally:
            for handle in handles:
                handle.remove()
        for key, (output, before) in versions.items():
            # Changed in place later in the pass (a ReLU(inplace=True) reading it): the
            # suffix would change the record too, so runs hand out copies of it.
            if [t._version for t in _tensors(output)] != before:
                self.mutated.add(key)
        return sorted(calls, key=lambda c: c.start)

    def change_point(self, modules: set[str]) -> int:
        """Event number of the first call of any of `modules` — or of the nearest called
        module that contains one (MultiheadAttention applies out_proj's weight itself;
        a parameter of the model itself makes it 0: nothing is reused)."""
        called = {c.module for c in self.calls}
        owners = set()
        for name in modules:
            while name and name not in called:
                name = name.rpartition(".")[0]
            owners.add(name)
        starts = [c.start for c in self.calls if c.module in owners]
        return 0 if "" in owners else min(starts, default=0)

    def stubs(self, modules: set[str]) -> list[_Call]:
        """The outermost calls that end before `modules` are first used."""
        point = self.change_point(modules)
        chosen: list[_Call] = []
        for call in self.calls:  # in start order: an outer call comes before its inner ones
            if call.end < point and not (chosen and call.start < chosen[-1].end):
                chosen.append(call)
        return chosen

    def run(self, model: nn.Module, x: Tensor, batch: int, modules: set[str]) -> Any:
        """`model(x)`, with the calls before `modules` answered from the record."""
        stubs = self.stubs(modules) if self.enabled else []
        if not stubs or any((batch, c.module, c.index) not in self.outputs for c in stubs):
            return model(x)
        answers: dict[str, dict[int, Any]] = {}
        swallowed: dict[tuple[str, int], list[str]] = {}
        for stub in stubs:
            output = self.outputs[(batch, stub.module, stub.index)]
            answers.setdefault(stub.module, {})[stub.index] = (
                output, (stub.module, stub.index) in self.mutated)
            # calls inside an answered call never happen: count them when it is answered
            swallowed[(stub.module, stub.index)] = [
                c.module for c in self.calls if stub.start < c.start < stub.end]
        with _answered(dict(model.named_modules()), answers, swallowed):
            return model(x)


def _tensors(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, tuple | list):
        return [t for v in value for t in _tensors(v)]
    return []


def _nbytes(value: Any) -> int:
    if isinstance(value, Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, tuple | list):
        return sum(_nbytes(v) for v in value)
    return 0


def _clone(value: Any) -> Any:
    """A fresh copy: the suffix may change its input in place (ReLU(inplace=True))."""
    if isinstance(value, Tensor):
        return value.clone()
    if isinstance(value, tuple):
        return tuple(_clone(v) for v in value)
    if isinstance(value, list):
        return [_clone(v) for v in value]
    return value


@contextmanager
def _answered(
    modules: dict[str, nn.Module], answers: dict[str, dict[int, Any]],
    swallowed: dict[tuple[str, int], list[str]],
) -> Iterator[None]:
    """Make modules return recorded outputs for the given calls (by per-module call
    number, which each module counts as the recorded pass did)."""
    counters: dict[str, int] = {}

    def patched(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> Any:
            index = counters.get(name, 0)
            counters[name] = index + 1
            recorded = answers[name]
            if index in recorded:
                for inner in swallowed[(name, index)]:
                    counters[inner] = counters.get(inner, 0) + 1
                output, copy = recorded[index]
                return _clone(output) if copy else output
            return original(*args, **kwargs)

        return forward

    patched_names: list[str] = []
    try:
        for name in answers:
            module = modules[name]
            if "forward" in module.__dict__:  # already patched by someone: do not stack
                raise RuntimeError(f"{name}.forward is set on the instance")
            module.forward = patched(name, module.forward)
            patched_names.append(name)
        yield
    finally:
        for name in patched_names:
            del modules[name].forward


# -- the analysis ------------------------------------------------------------------------
@dataclass
class SensitivityResult:
    """Every item's curve: the metric and loss with it pruned alone at each amount."""

    model: str
    criterion: str
    granularity: Granularity
    levels: tuple[float, ...]
    metric_name: str
    higher_is_better: bool
    baseline: Point
    items: list[Item]
    points: dict[str, list[Point]]  # item key -> its points, in level order
    complete: bool
    seconds: float
    samples: int = 0  # the evaluation samples every point was measured on (0: not said)

    def drop(self, point: Point) -> float:
        """How much worse than the unpruned model the point's metric is (>= 0 is worse)."""
        delta = self.baseline.metric - point.metric
        return delta if self.higher_is_better else -delta

    def curve(self, key: str) -> list[Point]:
        return self.points.get(key, [])

    def default_tolerance(self) -> float:
        """What counts as no loss: 1 point of a score (accuracy), 10% of an error (MSE)."""
        return 0.01 if self.higher_is_better else 0.1 * abs(self.baseline.metric)

    def ranking(self, tolerance: float | None = None) -> list[dict[str, Any]]:
        """Items from most to least robust: the highest amount each takes with the metric
        within `tolerance` of the unpruned model's (default: `default_tolerance()`), then
        the mean drop over its curve."""
        if tolerance is None:
            tolerance = self.default_tolerance()
        rows = []
        for item in self.items:
            curve = self.curve(item.key)
            if not curve:
                continue
            safe = 0.0
            for p in curve:  # the highest amount up to which every point is within tolerance
                if self.drop(p) > tolerance:
                    break
                safe = p.level
            rows.append({
                "item": item.key, "label": item.label, "layers": list(item.layers),
                "unit": item.unit, "safe_sparsity": safe,
                "mean_drop": sum(self.drop(p) for p in curve) / len(curve),
                "worst_metric": min(p.metric for p in curve) if self.higher_is_better
                else max(p.metric for p in curve),
            })
        return sorted(rows, key=lambda r: (-r["safe_sparsity"], r["mean_drop"]))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object `pruneviz sensitivity --json` prints."""
        return {
            "model": self.model, "criterion": self.criterion,
            "granularity": self.granularity.value, "levels": list(self.levels),
            "metric_name": self.metric_name, "eval_samples": self.samples,
            "baseline": self.baseline.to_dict(),
            "complete": self.complete, "seconds": round(self.seconds, 3),
            "layers": {
                item.key: {"coupled_with": list(item.layers[1:]), "unit": item.unit,
                           "points": [p.to_dict() for p in self.curve(item.key)]}
                for item in self.items
            },
        }


class SensitivityRun:
    """One analysis of `session`'s model on `data`; iterate `points()` to run it.

    The session is borrowed: its plan is changed while the run measures and put back
    after. Give a worker thread a session of its own.
    """

    def __init__(
        self, session: PruningSession, data: TensorData, *, criterion: str = "l1",
        granularity: Granularity | str = Granularity.UNSTRUCTURED,
        levels: Sequence[float] = DEFAULT_LEVELS, cache: SensitivityCache | None = None,
        reuse: bool = True,
    ) -> None:
        self.session = session
        self.data = data
        self.criterion = criterion
        self.granularity = parse_granularity(granularity)
        self.levels = _check_levels(levels)
        self.items = sensitivity_items(session, self.granularity, criterion)
        if not self.items:
            reasons = [session.unsupported(n, self.granularity, criterion)
                       for n in session.layer_names]
            raise PlanError(f"nothing to analyse: {next(r for r in reasons if r)}")
        self.cache = cache if cache is not None else SensitivityCache()
        self.reuse = reuse
        self.total = len(self.items) * len(self.levels)
        self.done = 0
        self.evaluated = 0  # points that needed a forward pass (the others: cache, repeats)
        self._points: dict[str, list[Point]] = {}
        self._baseline: Point | None = None
        self._complete = False
        self._seconds = 0.0
        self._data_key = f"{data.name}:{len(data)}:{_tensor_key(data.x)}"

    def _key(self, item: str, level: float) -> tuple[str, ...]:
        return (self.session.weights_key(), self._data_key, item, f"{level:.6f}",
                self.criterion, self.granularity.value)

    def points(self, cancel: threading.Event | None = None) -> Iterator[Point]:
        """Measure every item at every level, yielding each point as it is known."""
        import time

        start = time.perf_counter()
        session = self.session
        try:
            with session.applied(session.stamp(Plan())):
                self._baseline = self._measure(None, 0.0, None)
                prefix = PrefixCache()
                changes: dict[str, set[str]] = {}
                batches = [x for x, _target in self.data.batches(EVAL_BATCH)]
                for item in self.items:
                    session.apply(self._plan(item, max(self.levels)))
                    changes[item.key] = {t.rpartition(".")[0] for t in session.changed_tensors()}
                session.apply(session.stamp(Plan()))
                if self.reuse:
                    prefix.record(session.model, batches, list(changes.values()))
                for item in self.items:
                    seen: dict[tuple[Any, ...], Point] = {}
                    for level in self.levels:
                        if cancel is not None and cancel.is_set():
                            return
                        point = self._point(item, level, prefix, changes[item.key], seen)
                        self._points.setdefault(item.key, []).append(point)
                        self.done += 1
                        yield point
                self._complete = True
        finally:
            self._seconds += time.perf_counter() - start

    def _plan(self, item: Item, level: float) -> Plan:
        return self.session.stamp(Plan({item.key: item.entry(level, self.criterion)}))

    def _point(self, item: Item, level: float, prefix: PrefixCache, changed: set[str],
               seen: dict[tuple[Any, ...], Point]) -> Point:
        key = self._key(item.key, level)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        assert self._baseline is not None
        if self.reuse and level == 0.0:
            point = _with(self._baseline, item.key, level, 0)
        else:
            self.session.apply(self._plan(item, level))
            pruned = self._pruned(item)
            signature = (tuple(self.session.result(n).nonzero for n in item.layers), pruned)
            if self.reuse and signature in seen:  # the same structures as a lower level
                point = _with(seen[signature], item.key, level, pruned)
            else:
                point = self._measure(item.key, level, prefix if self.reuse else None,
                                      changed, pruned)
                seen[signature] = point
        self.cache.put(key, point)
        return point

    def _pruned(self, item: Item) -> int:
        group = self.session.group_of(item.key, self.granularity) \
            if self.granularity.structured else None
        if group is not None:
            return len(self.session.pruned_units().get(group.id, []))
        return self.session.result(item.key).structures_pruned

    def _measure(self, item: str | None, level: float, prefix: PrefixCache | None,
                 changed: set[str] | None = None, pruned: int = 0) -> Point:
        model = self.session.model
        if prefix is None or changed is None:
            evaluation = evaluate(model, self.data, EVAL_BATCH)
        else:
            evaluation = _evaluate_with_prefix(model, self.data, prefix, changed)
        self.evaluated += 1
        macs = 0.0
        for layer in self.session.layers:
            nonzero = self.session.result(layer.name).nonzero
            macs += layer.macs * (nonzero / layer.params if layer.params else 0.0)
        return Point(item, level, evaluation.metric, evaluation.loss,
                     count_params(model).nonzero, round(macs),
                     sparse_size(model.state_dict()), pruned)

    def run(self, cancel: threading.Event | None = None,
            progress: Callable[[SensitivityRun, Point], None] | None = None
            ) -> SensitivityResult:
        """Run to the end (or until cancelled) and return the result."""
        for point in self.points(cancel):
            if progress is not None:
                progress(self, point)
        return self.result()

    def result(self) -> SensitivityResult:
        """What has been measured so far (complete once every point is in)."""
        if self._baseline is None:
            raise PlanError("the analysis has not started: iterate points() or call run()")
        data = self.data
        return SensitivityResult(
            self.session.name, self.criterion, self.granularity, self.levels,
            data.metric_name, data.higher_is_better, self._baseline, list(self.items),
            {k: list(v) for k, v in self._points.items()}, self._complete, self._seconds,
            len(data),
        )


def _evaluate_with_prefix(model: nn.Module, data: TensorData, prefix: PrefixCache,
                          changed: set[str]) -> EvalResult:
    """metrics.evaluate, with the unchanged prefix answered from `prefix` (same numbers)."""
    metric_total = 0.0
    loss_total = 0.0
    with eval_mode(model), torch.inference_mode():
        for b, (x, y) in enumerate(data.batches(EVAL_BATCH)):
            out = prefix.run(model, x, b, changed)
            metric_total += data.metric_sum(out, y)
            loss_total += data.task.loss_sum(out, y)
    n = len(data)
    return EvalResult(data.metric_name, metric_total / n, loss_total / n, n)


def _with(point: Point, item: str | None, level: float, pruned: int) -> Point:
    return Point(item, level, point.metric, point.loss, point.params_nonzero, point.macs,
                 point.size_bytes, pruned)


def _check_levels(levels: Sequence[float]) -> tuple[float, ...]:
    out = tuple(sorted({float(v) for v in levels}))
    if not out:
        raise PlanError("give at least one sparsity level")
    bad = [v for v in out if not 0.0 <= v <= 1.0 or v != v]
    if bad:
        raise PlanError(f"sparsity levels must be between 0 and 1, got {bad[0]}")
    return out


def _tensor_key(x: Tensor) -> str:
    """A cheap content key for the evaluation inputs (shape and a few sums)."""
    flat = x.reshape(-1).double()
    return f"{tuple(x.shape)}:{float(flat.sum()):.6e}:{float((flat * flat).sum()):.6e}"


__all__ = [
    "DEFAULT_LEVELS", "Item", "Point", "PrefixCache", "SensitivityCache", "SensitivityResult",
    "SensitivityRun", "sensitivity_items",
]
