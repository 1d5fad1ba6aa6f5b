"""A Workbench bundles what one user works with: a pruning session and its meter.

`open_workbench("sample:digits_cnn")` is the one call the CLI and the app make to start:
it loads the model and its data, makes the session's private copy, and measures the
unpruned baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from pruneviz.data import TensorData
from pruneviz.errors import PrunevizError
from pruneviz.models.samples import load_sample, sample_names
from pruneviz.plan import Plan
from pruneviz.report import Meter, Report
from pruneviz.session import PruningSession

CALIBRATION_SAMPLES = 256


@dataclass
class Workbench:
    """One model under pruning: session, meter, data, and the unpruned baseline report."""

    name: str
    session: PruningSession
    meter: Meter
    eval_data: TensorData
    train_data: TensorData | None
    baseline: Report

    @property
    def model(self) -> nn.Module:
        """The session's (mutable) copy of the model."""
        return self.session.model


def parse_model_ref(ref: str) -> str:
    """Check a MODEL argument (`sample:NAME`) and return the sample name."""
    kind, sep, name = ref.partition(":")
    if not sep or kind != "sample":
        raise PrunevizError(
            f"cannot read model reference {ref!r}: use sample:NAME, where NAME is one of "
            f"{', '.join(sample_names())}"
        )
    return name


def build_workbench(
    name: str,
    model: nn.Module,
    example_input: Tensor | tuple[Tensor, ...],
    eval_data: TensorData,
    train_data: TensorData | None,
    *,
    latency_batch_size: int = 64,
) -> Workbench:
    """A workbench over any model and data (the pristine `model` is copied, never changed)."""
    calibration = (train_data or eval_data).head(CALIBRATION_SAMPLES)
    session = PruningSession(model, example_input, calibration=calibration, name=name)
    # The pristine model is only read (inference), never changed: it is the latency
    # reference that each measurement is timed against.
    meter = Meter(session, eval_data, reference=model, latency_batch_size=latency_batch_size)
    return Workbench(name, session, meter, eval_data, train_data, meter.report())


def open_workbench(ref: str) -> Workbench:
    """Load a model reference (`sample:NAME`) with its data into a fresh workbench."""
    sample = load_sample(parse_model_ref(ref))
    return build_workbench(
        f"sample:{sample.spec.name}", sample.model, sample.example_input(),
        sample.test_data(), sample.train_data(),
    )


def measure_plans(bench: Workbench, plans: list[Plan], *, latency: bool = True) -> list[Report]:
    """Measure each plan in turn (cached per plan), then restore the plan that was applied."""
    current = bench.session.plan
    reports = []
    try:
        for plan in plans:
            bench.session.apply(plan)
            reports.append(bench.meter.report(latency=latency))
    finally:
        bench.session.apply(current)
    return reports
