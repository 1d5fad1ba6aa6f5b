"""Measure a pruning session's current model: everything the CLI prints and the app shows.

`Meter` caches each measurement per plan and weights (evaluation, file sizes, latency —
latency is the slowest), so going back to a plan already seen costs nothing, and new
original weights (`PruningSession.rebase`) are measured afresh without being told.

The live path costs one forward pass of the evaluation data: counts, MACs and the
sparse file's size come from per-tensor figures recomputed only for the tensors the
session rewrote; the dense file's size depends on shapes only. The slow figures — the
gzip size, the latency and the metric on the whole evaluation set — are measured only
when asked (`report(latency=..., gzip=...)`, `finish`), and can be stopped.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from pruneviz.core.plan import Plan
from pruneviz.core.results import LayerResult
from pruneviz.core.session import PruningSession
from pruneviz.data.tensors import TensorData
from pruneviz.measure.machine import release_memory
from pruneviz.measure.metrics import EvalResult, Latency, Stop, evaluate
from pruneviz.measure.storage import (
    FileSizes,
    TensorFigures,
    dense_bytes,
    dense_size_of,
    gzip_size,
    sparse_size_of,
    tensor_figures,
)
from pruneviz.measure.timing import Speedup, time_against

T = TypeVar("T")


PRUNE = "prune"  # the technique of the masked model itself
# What a deployable form's record holds for the task metric: forms are not evaluated on
# data — they compute the masked model's outputs, as closely as `max_abs_diff` says.
NOT_EVALUATED = EvalResult("", math.nan, math.nan, 0)


@dataclass(frozen=True)
class Report:
    """All measurements of one measured configuration (see `to_dict` for the JSON form):

    - the session's masked model with its plan (`Meter.report`; `technique` PRUNE);
    - another technique applied to a model (`compression.measure_model`: "int8",
      "prune+svd r=50%", ...): no `layers`;
    - one deployable form of the masked model (`forms`: `form` set): its one saved file
      in `file_bytes` (also each of `sizes`), its `max_abs_diff` from the masked model,
      and no evaluation (NOT_EVALUATED).
    """

    model: str
    plan: dict[str, Any]
    evaluation: EvalResult
    params_total: int
    params_nonzero: int
    macs_dense: int
    macs_effective: int
    sizes: FileSizes
    latency: Latency | None
    layers: list[LayerResult] = field(default_factory=list)
    latency_reference: Latency | None = None  # the unpruned model, timed interleaved
    # how much faster than `latency_reference` (its interval and verdict), from the same rounds
    latency_speedup: Speedup | None = None
    notes: tuple[str, ...] = ()  # what the session changed about the plan, what was left out
    technique: str = PRUNE  # "prune", "int8", "prune+int8", "svd r=50%", ...
    form: str | None = None  # a deployable form: "masked", "slimmed" or "sparse-deployed"
    file_bytes: int | None = None  # a form: the bytes of its saved file
    max_abs_diff: float | None = None  # a form: largest output difference from masked
    # The pruned model: the metric on the whole evaluation set when `evaluation` is on a
    # live subset of it (None: not measured yet, or `evaluation` is the whole set), and
    # the size of that whole set.
    evaluation_full: EvalResult | None = None
    population: int | None = None

    @property
    def final(self) -> bool:
        """Whether the metric shown is measured on the whole evaluation set."""
        return self.evaluation_full is not None or self.population in (
            None, self.evaluation.samples)

    @property
    def best_evaluation(self) -> EvalResult:
        """The whole set's evaluation when measured, else the live subset's."""
        return self.evaluation_full if self.evaluation_full is not None else self.evaluation

    @property
    def complete(self) -> bool:
        """Whether every figure is measured: final metric, gzip size and latency."""
        return self.final and self.sizes.gzip is not None and self.latency is not None

    @property
    def sparsity(self) -> float:
        """Fraction of all parameters that are exactly zero."""
        return 1.0 - self.params_nonzero / self.params_total if self.params_total else 0.0

    # -- a deployable form's view (what the Deploy page shows) ------------------------------
    @property
    def params(self) -> int:
        """Parameters stored (a form: what it actually stores)."""
        return self.params_total

    @property
    def macs(self) -> int:
        """Weight MACs per sample actually computed (zeros skipped where they are)."""
        return self.macs_effective

    @property
    def size_bytes(self) -> int:
        """Bytes of the saved file: a form's own file, else the dense weights file."""
        return self.sizes.dense if self.file_bytes is None else self.file_bytes

    @property
    def latency_ms(self) -> float | None:
        """Median latency, None if not measured."""
        return None if self.latency is None else self.latency.median_ms

    @property
    def note(self) -> str | None:
        """The notes as one sentence (a form's: why it is as it is), None without notes."""
        return "; ".join(self.notes) if self.notes else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object the CLI prints with --json: a form's (`slim`, `sparse_deployed`),
        another technique's (`combined`), or the pruned model's."""
        if self.form is not None:
            return self._form_dict()
        if self.technique != PRUNE:
            return self._technique_dict()
        best = self.best_evaluation
        interval = best.interval(self.population)
        out: dict[str, Any] = {
            "model": self.model,
            "metric_name": best.metric_name,
            "metric": best.metric,
            "loss": best.loss,
            "eval_samples": best.samples,
            "metric_stderr": best.stderr,
            "metric_interval95": None if interval is None else list(interval),
            "metric_final": self.final,
            "params_total": self.params_total,
            "params_nonzero": self.params_nonzero,
            "sparsity": self.sparsity,
            "macs_dense": self.macs_dense,
            "macs_effective": self.macs_effective,
            "size_dense_bytes": self.sizes.dense,
            "size_sparse_bytes": self.sizes.sparse,
            "size_gzip_bytes": self.sizes.gzip,
        }
        if self.latency is not None:
            out["latency_ms"] = self.latency.median_ms
            out["latency"] = dict(self.latency.__dict__)
        if self.latency_reference is not None:
            out["latency_reference"] = dict(self.latency_reference.__dict__)
        if self.latency_speedup is not None:
            out["latency_vs_reference"] = self.latency_speedup.to_dict()
        out["notes"] = list(self.notes)
        out["removed_blocks"] = list(self.plan.get("blocks", []))
        out["layers"] = [layer.to_dict() for layer in self.layers]
        out["plan"] = self.plan
        return out

    def _technique_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "technique": self.technique,
            "metric_name": self.evaluation.metric_name,
            "metric": self.evaluation.metric,
            "loss": self.evaluation.loss,
            "params_total": self.params_total,
            "params_nonzero": self.params_nonzero,
            "macs_dense": self.macs_dense,
            "macs_effective": self.macs_effective,
            "size_dense_bytes": self.sizes.dense,
            "size_sparse_bytes": self.sizes.sparse,
            "size_gzip_bytes": self.sizes.gzip,
            "latency_ms": self.latency_ms,
            "latency_device": None if self.latency is None else self.latency.device,
            "notes": list(self.notes),
        }
        if self.latency_reference is not None:
            out["latency_reference_ms"] = self.latency_reference.median_ms
        if self.latency_speedup is not None:
            out["latency_vs_reference"] = self.latency_speedup.to_dict()
        return out

    def _form_dict(self) -> dict[str, Any]:
        return {"form": self.form, "params": self.params, "macs": self.macs,
                "size_bytes": self.size_bytes, "latency_ms": self.latency_ms,
                "latency_device": None if self.latency is None else self.latency.device,
                "latency_vs_masked": None if self.latency_speedup is None
                else self.latency_speedup.to_dict(),
                "max_abs_diff": self.max_abs_diff, "note": self.note,
                # a form measured on its own (a slimmed model that is not the masked one)
                **({"metric_name": self.evaluation.metric_name,
                    "metric": self.evaluation.metric, "eval_samples": self.evaluation.samples}
                   if self.evaluation.samples else {})}


def latency_batch(data: TensorData, batch_size: int) -> Tensor:
    """A batch of `batch_size` real inputs (repeating the data if it is smaller)."""
    x = data.x[:batch_size]
    if x.shape[0] < batch_size:
        reps = -(-batch_size // x.shape[0])
        x = torch.cat([x] * reps)[:batch_size]
    return x.contiguous()


class Meter:
    """Measures a session's current model on `data`, caching results per plan and weights.

    With a `reference` (the unpruned model, read-only), latency is measured interleaved
    with the reference's, so that a latency change is not machine load in disguise.
    `full_data` is the whole evaluation set when `data` is a live subset of it.
    """

    def __init__(
        self,
        session: PruningSession,
        data: TensorData,
        *,
        reference: nn.Module | None = None,
        latency_batch_size: int = 64,
        latency_runs: int = 20,
        cache_size: int = 256,
        full_data: TensorData | None = None,
    ) -> None:
        self.session = session
        self.reference = reference
        self.data = data
        self.full_data = full_data
        self.latency_batch_size = latency_batch_size
        self.latency_runs = latency_runs
        self._latency_input = latency_batch(data, latency_batch_size)
        self._cache: OrderedDict[tuple[str, str, str], object] = OrderedDict()
        self._cache_size = cache_size
        # per state-dict tensor: (session revision, weights key) -> its sparse-file figures
        self._figures: dict[str, tuple[tuple[int, str], TensorFigures]] = {}
        self._dense_size: int | None = None
        self._param_names = {name for name, _ in session.model.named_parameters()}

    def _key(self, kind: str) -> tuple[str, str, str]:
        # The plan says which weights are zeroed; the weights key, what the others are.
        return (kind, self.session.plan.key(), self.session.weights_key())

    def _cached(self, kind: str, compute: Callable[[], T]) -> T:
        key = self._key(kind)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]  # type: ignore[return-value]
        value = compute()
        self._cache[key] = value
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return value

    def known(self, kind: str, plan: Plan) -> Any:
        """Figure `kind` of `plan` on the current weights if measured, else None."""
        return self._cache.get((kind, plan.key(), self.session.weights_key()))

    def remember(self, kind: str, plan: Plan, value: object) -> None:
        """Keep figure `kind` of `plan` on the current weights, measured elsewhere (the
        unpruned model's, on the pristine copy)."""
        self._cache[(kind, plan.key(), self.session.weights_key())] = value

    def has(self, kind: str) -> bool:
        """Whether figure `kind` ("eval", "eval_full", "gzip", "latency") is measured for
        the current plan and weights."""
        return self._key(kind) in self._cache

    @property
    def latency_input(self) -> Tensor:
        """The batch of real inputs latency is measured on."""
        return self._latency_input

    @property
    def population(self) -> int:
        """How many samples the whole evaluation set holds."""
        return len(self.full_data if self.full_data is not None else self.data)

    def clear(self) -> None:
        """Forget cached measurements (never needed for correctness: they are kept per plan
        and weights; frees their memory)."""
        self._cache.clear()

    def evaluate(self) -> EvalResult:
        """Task metric and loss of the current model on the (live) data."""
        return self._cached("eval", lambda: evaluate(self.session.model, self.data))

    def evaluate_full(self, stop: Stop | None = None) -> EvalResult:
        """The current model's metric on the whole evaluation set (the live data itself
        when it is not a subset); `stop` can end it (`Cancelled`)."""
        if self.full_data is None:
            return self.evaluate()
        data = self.full_data
        return self._cached("eval_full", lambda: evaluate(self.session.model, data, stop=stop))

    def _tensor_figures(self) -> list[tuple[str, TensorFigures]]:
        """Every state-dict tensor's sparse-file figures, recomputed only for the tensors
        the session wrote since they were last computed."""
        weights_key = self.session.weights_key()
        out = []
        for name, tensor in self.session.model.state_dict().items():
            stamp = (self.session.revision(name), weights_key)
            known = self._figures.get(name)
            if known is None or known[0] != stamp:
                known = (stamp, tensor_figures(name, tensor))
                self._figures[name] = known
            out.append((name, known[1]))
        return out

    def counts(self) -> tuple[int, int, int]:
        """Parameters in total and non-zero, and the sparse file's bytes (live: from the
        per-tensor figures)."""
        figures = self._tensor_figures()
        params = [f for name, f in figures if name in self._param_names]
        return (sum(f.numel for f in params), sum(f.nonzero for f in params),
                sparse_size_of(f for _, f in figures))

    def dense_size(self) -> int:
        """Bytes of the dense weights file (the same for every plan: shapes only)."""
        if self._dense_size is None:
            self._dense_size = dense_size_of(self.session.model.state_dict())
        return self._dense_size

    def gzip_size(self, stop: Stop | None = None) -> int:
        """Bytes of the dense file gzipped (slow: the whole file is compressed); `stop` can
        end it (`Cancelled`)."""
        return self._cached("gzip", lambda: gzip_size(
            dense_bytes(self.session.model.state_dict()), stop=stop))

    def sizes(self, *, gzip: bool = True) -> FileSizes:
        """Bytes of the current weights saved dense, sparse-encoded and gzipped (gzip None
        when not asked for and not measured yet)."""
        return self._sizes(self.counts()[2], gzip=gzip)

    def _sizes(self, sparse: int, *, gzip: bool) -> FileSizes:
        """The three sizes, given the sparse one; gzip measured if asked or known."""
        measured = self.gzip_size() if gzip or self.has("gzip") else None
        return FileSizes(self.dense_size(), sparse, measured)

    def latency(self) -> Latency:
        """Median CPU latency of the current model on a batch of real inputs."""
        return self._latencies()[0]

    def latency_reference(self) -> Latency | None:
        """The unpruned reference's latency, timed interleaved with `latency()`'s runs."""
        return self._latencies()[1]

    def latency_speedup(self) -> Speedup | None:
        """How much faster the current model ran than the reference, in the same rounds."""
        return self._latencies()[2]

    def _latencies(self, stop: Stop | None = None
                   ) -> tuple[Latency, Latency | None, Speedup | None]:
        def measure() -> tuple[Latency, Latency | None, Speedup | None]:
            if self.reference is None:
                alone = time_against([], self.session.model, self._latency_input,
                                     runs=self.latency_runs, stop=stop)
                return alone.reference, None, None
            timing = time_against([self.session.model], self.reference, self._latency_input,
                                  runs=self.latency_runs, stop=stop)
            return timing.candidates[0], timing.reference, timing.speedups[0]

        return self._cached("latency", measure)

    def finish(self, stop: Stop | None = None, *, latency: bool = True) -> None:
        """Measure the slow figures of the current plan that are not measured yet: the
        metric on the whole evaluation set, the latency, the gzip size. `stop` is asked
        between batches, runs and chunks (`Cancelled` when it says so); what finished
        before stays measured. The memory their forward passes freed is then given back
        to the system (`release_memory`)."""
        try:
            self.evaluate_full(stop)
            if latency:
                self._latencies(stop)
            self.gzip_size(stop)
        finally:
            release_memory()

    def macs(self) -> tuple[int, int]:
        """Weight MACs per sample: dense, and with zero weights skipped (a layer inside a
        removed block counts in neither: the model no longer runs it)."""
        dense = 0
        effective = 0.0
        for layer in self.session.layers:
            result = self.session.result(layer.name)
            if result.granularity == "removed":
                continue
            dense += layer.macs
            effective += layer.macs * (result.nonzero / layer.params if layer.params else 0.0)
        return dense, round(effective)

    def report(self, *, latency: bool = False, gzip: bool = True) -> Report:
        """Every measurement of the current model. Latency only if asked (it is the
        slowest); the gzip size unless `gzip=False` (the live path: then it is in the
        report only if already measured). Slow figures measured before for this plan
        (the whole set's metric, latency, gzip) are included whatever is asked."""
        total, nonzero, sparse = self.counts()
        macs_dense, macs_effective = self.macs()
        timed = latency or self.has("latency")
        full = None
        if self.full_data is not None and self.has("eval_full"):
            full = self.evaluate_full()
        return Report(
            model=self.session.name,
            plan=self.session.stamp(self.session.plan).to_dict(),
            evaluation=self.evaluate(),
            params_total=total,
            params_nonzero=nonzero,
            macs_dense=macs_dense,
            macs_effective=macs_effective,
            sizes=self._sizes(sparse, gzip=gzip),
            latency=self.latency() if timed else None,
            layers=self.session.results(),
            latency_reference=self.latency_reference() if timed else None,
            latency_speedup=self.latency_speedup() if timed else None,
            notes=tuple(self.session.notes),
            evaluation_full=full,
            population=self.population,
        )
