"""An export as a long job: written and verified in a worker process, like fine-tuning.

Writing a bundle re-applies the plan in a fresh session, rebuilds the slimmed model,
reloads every file and times the model: seconds of work for a small model, minutes for a
large one, most of it Python holding the interpreter. In the server's process that
would slow every other tab's slider; so the app sends it to a job's process
(pruneviz.workflows.processes) with what it needs to rebuild the tab's workbench there:
`ExportSpec` (plain data, picklable). `run_export(session, spec, emit, cancel)` is the
job: `session` is the job's own, built over the pristine model (`SessionRecipe`); it
loads the tab's weights, applies the tab's plan, writes and verifies, and emits the
`ExportDownload` (every file's bytes and a zip). The same function runs in a thread of
the server where a job cannot go to a process (a model on a GPU, the page tests).
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from pruneviz.core.plan import Plan
from pruneviz.core.session import PruningSession
from pruneviz.data.sources import Source
from pruneviz.data.tensors import TensorData
from pruneviz.measure.meter import Meter, Report
from pruneviz.output.bundle import export_for_download
from pruneviz.workflows.experiments import ORIGINAL, ExperimentLog
from pruneviz.workflows.processes import Emit
from pruneviz.workflows.workbench import Workbench, load_weights


@dataclass(frozen=True)
class ExportSpec:
    """Everything an export of a tab's current plan needs besides the job's session:
    the tab's workbench as data (its evaluation data and subset, baseline report, source
    and notes, how its meter times latency), the weights the plan is applied to (`state`:
    their values, None for the original ones), the plan, the experiment log drawn in the
    report, and where to write (None: a temporary folder, for downloads only)."""

    name: str
    pristine: nn.Module
    eval_data: TensorData
    eval_full: TensorData | None
    train_data: TensorData | None
    baseline: Report
    source: Source | None
    notes: tuple[str, ...]
    latency_batch_size: int
    latency_runs: int
    weights: str
    state: dict[str, Tensor] | None
    plan: Plan
    log: ExperimentLog | None
    folder: Path | None
    latency: bool = True
    replace: bool = False  # replace a complete earlier export in `folder`


def export_spec(bench: Workbench, plan: Plan, *, weights: str = ORIGINAL,
                state: dict[str, Tensor] | None = None, log: ExperimentLog | None = None,
                folder: Path | None = None, latency: bool = True,
                replace: bool = False) -> ExportSpec:
    """The spec of an export of `plan` on `bench`'s model, with the weights called
    `weights` (`state`: their values; needed unless they are the originals)."""
    if weights != ORIGINAL and state is None:
        raise ValueError(f"the values of the {weights} weights are needed")
    snapshot = copy.deepcopy(log)  # the log as it is now: the tab goes on recording
    return ExportSpec(bench.name, bench.pristine, bench.eval_data, bench.eval_full,
                      bench.train_data, bench.baseline, bench.source, bench.notes,
                      bench.meter.latency_batch_size, bench.meter.latency_runs, weights,
                      None if weights == ORIGINAL else state, plan, snapshot, folder,
                      latency, replace)


def workbench_of(session: PruningSession, spec: ExportSpec) -> Workbench:
    """The tab's workbench rebuilt around the job's own `session`: the spec's weights
    loaded, its plan applied, a meter of its own on the same data."""
    if spec.state is not None:
        load_weights(session, spec.state)
    session.apply(spec.plan)
    meter = Meter(session, spec.eval_data, reference=spec.pristine,
                  latency_batch_size=spec.latency_batch_size, latency_runs=spec.latency_runs,
                  full_data=spec.eval_full)
    return Workbench(spec.name, session, meter, spec.eval_data, spec.train_data, spec.baseline,
                     spec.pristine, spec.eval_full, spec.source, spec.notes)


def run_export(session: PruningSession, spec: ExportSpec, emit: Emit,
               cancel: threading.Event) -> None:
    """The job: write and verify the export, then emit its `ExportDownload`. A cancel
    is looked at before the writing starts (a bundle half-written is worth nothing, so
    once it starts it is finished)."""
    bench = workbench_of(session, spec)
    if cancel.is_set():
        return
    emit(export_for_download(bench, spec.folder, log=spec.log, latency=spec.latency,
                             weights=spec.weights, replace=spec.replace))
