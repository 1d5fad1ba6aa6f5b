"""A Workbench bundles what one user works with: a pruning session and its meter.

`open_workbench("sample:digits_cnn")` (or a `Source` naming the user's own model, weights
and data) is the one call the CLI makes to start: it loads the model and its data, makes
the session's private copy, and measures the unpruned baseline.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

from torch import Tensor, nn

from pruneviz.core.layers import model_device
from pruneviz.core.plan import Plan
from pruneviz.core.session import PruningSession
from pruneviz.data.sources import Loaded, Source, load_source
from pruneviz.data.tensors import TensorData
from pruneviz.errors import ModelError
from pruneviz.measure.machine import available_memory, release_memory
from pruneviz.measure.meter import Meter, Report
from pruneviz.measure.metrics import EvalResult

CALIBRATION_SAMPLES = 256
LIVE_LATENCY_RUNS = 10  # a live workbench times 10 pairs (masked, reference) per plan
# What opening a workbench takes, in multiples of the model's weight bytes: the session's
# model copy (1), the score tables of the plan in use (up to 1) and the spare ones (0.5).
SESSION_FACTOR = 2.5


def memory_needed(model: nn.Module, data: TensorData) -> int:
    """Bytes a workbench on `model` will hold beyond the model itself (an estimate: the
    session's share, the evaluation data and one batch's activations are not known
    before running; the data is counted once)."""
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return int(SESSION_FACTOR * weights) + data.x.numel() * data.x.element_size()


def check_room(name: str, model: nn.Module, data: TensorData,
               available: int | None = None) -> None:
    """Refuse, with what to do, to open a workbench the machine cannot hold (instead of
    letting the kernel kill the process, and every user's tab with it): in the memory of
    the device the model is on (a GPU's own memory for a model on CUDA)."""
    device = model_device(model)
    available = available_memory(device) if available is None else available
    needed = memory_needed(model, data)
    if available is not None and needed > available:
        where = f"{device} has" if device.type == "cuda" else "this machine has"
        raise ModelError(
            f"opening {name} needs about {needed / 2**30:.2f} GiB (a pruning copy of its "
            f"weights and its score tables), but {where} {available / 2**30:.2f} GiB "
            "free; close other tabs or programs, use a smaller evaluation set, or run "
            "pruneviz on a machine with more memory")


@dataclass
class Workbench:
    """One model under pruning: session, meter, data, and the unpruned baseline report."""

    name: str
    session: PruningSession
    meter: Meter
    eval_data: TensorData
    train_data: TensorData | None
    baseline: Report
    # The model as loaded (original weights), never changed: a fresh architecture to
    # rebuild or verify exports on, and the latency reference.
    pristine: nn.Module
    # The whole evaluation set when `eval_data` (what every live update measures) is a
    # subset of it; None when eval_data is the whole set.
    eval_full: TensorData | None = None
    source: Source | None = None  # what was loaded (the CLI options that reopen it)
    notes: tuple[str, ...] = ()  # how the weights were read (a checkpoint's key, say)

    @property
    def model(self) -> nn.Module:
        """The session's (mutable) copy of the model."""
        return self.session.model

    @property
    def full_data(self) -> TensorData:
        """The whole evaluation set (eval_data itself unless that is a subset)."""
        return self.eval_full if self.eval_full is not None else self.eval_data

    def applied(self, plan: Plan) -> AbstractContextManager[None]:
        """`with bench.applied(plan):` — `plan` applied inside the block, the plan applied
        before it restored after (also on an error); see `PruningSession.applied`."""
        return self.session.applied(plan)

    def evaluate_full(self) -> EvalResult:
        """The current model's metric on the whole evaluation set (slow for large sets;
        cached per plan)."""
        return self.meter.evaluate_full()


def build_workbench(
    name: str,
    model: nn.Module,
    example_input: Tensor | tuple[Tensor, ...],
    eval_data: TensorData,
    train_data: TensorData | None,
    *,
    latency_batch_size: int = 64,
    eval_subset: int | None = None,
    live: bool = False,
) -> Workbench:
    """A workbench over any model and data (the pristine `model` is copied, never changed).

    With `eval_subset`, live measurements use a fixed class-balanced random subset of
    that many samples; `Workbench.evaluate_full` measures the whole set on demand. A
    `live` workbench (the app's) opens without the baseline's slow figures (gzip size,
    whole-set metric): `Meter.finish` measures them later, in the background.
    """
    # Calibration (for data-driven criteria) never depends on the subset, so a plan
    # re-applied with or without one (the CLI, an export check) prunes the same structures.
    check_room(name, model, eval_data)
    calibration = (train_data or eval_data).head(CALIBRATION_SAMPLES)
    full: TensorData | None = None
    if eval_subset is not None and eval_subset < len(eval_data):
        full, eval_data = eval_data, eval_data.subset(eval_subset)
    session = PruningSession(model, example_input, calibration=calibration, name=name,
                             share_originals=True)
    # The pristine model is only read (inference), never changed: it is the latency
    # reference that each measurement is timed against.
    meter = Meter(session, eval_data, reference=model, latency_batch_size=latency_batch_size,
                  full_data=full)
    if live:
        meter.latency_runs = LIVE_LATENCY_RUNS
    baseline = meter.report(gzip=not live)
    release_memory()  # what opening (tracing, the first forward passes) freed
    return Workbench(name, session, meter, eval_data, train_data, baseline, model, full)


def workbench_for(loaded: Loaded, *, live: bool = False) -> Workbench:
    """A fresh workbench over a loaded source (its model is copied, never changed). A
    `live` one (see `build_workbench`) measures on a live subset sized from the model's
    measured forward time unless the source names a subset size."""
    subset = loaded.source.eval_subset
    if live and subset is None:
        subset = loaded.live_subset()
    bench = build_workbench(loaded.name, loaded.model, loaded.example_input, loaded.eval_data,
                            loaded.train_data, eval_subset=subset, live=live)
    bench.source = loaded.source
    bench.notes = loaded.notes
    return bench


def open_workbench(source: str | Source) -> Workbench:
    """Load a model (`sample:NAME`, or a Source with the user's model, weights and data)
    into a fresh workbench."""
    if isinstance(source, str):
        source = Source(model=source)
    return workbench_for(load_source(source))


def measure_plans(bench: Workbench, plans: list[Plan], *, latency: bool = True) -> list[Report]:
    """Measure each plan in turn (cached per plan), then restore the plan that was applied."""
    reports = []
    for plan in plans:
        with bench.applied(plan):
            reports.append(bench.meter.report(latency=latency))
    return reports


def load_weights(session: PruningSession, state: dict[str, Tensor]) -> None:
    """Make `state` the session's original weights, with nothing pruned (bit-exact)."""
    session.apply(session.stamp(Plan()))  # no removed blocks: rebase refuses them
    session.rebase(state)
