"""Lesson 2's measurements: the same filters zeroed by masking and really removed (the
slimmed model), side by side with the unpruned model: file bytes, parameters, MACs,
latency timed together, accuracy; and the masked model's sparse file."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pruneviz.core.granularity import Granularity
from pruneviz.core.layers import find_prunable_layers
from pruneviz.errors import ModelError
from pruneviz.measure.forms import masked_form, slimmed_form
from pruneviz.measure.metrics import evaluate
from pruneviz.measure.storage import dense_bytes, sparse_size
from pruneviz.measure.timing import Latency, Speedup, time_against
from pruneviz.workflows.lessons.copies import open_copy

FILTER_FRACTION = 0.5
TIMING_RUNS = 20  # interleaved rounds: a few seconds on a small model
LATENCY_BATCH = 64


@dataclass(frozen=True)
class Form:
    """One form of the model: what it stores, computes and saves, its speed and accuracy."""

    name: str  # "unpruned", "masked", "slimmed"
    file_bytes: int  # its dense saved weights file
    params: int  # parameters stored (zeros included)
    nonzero: int  # parameters that are not zero
    macs: int  # weight multiply-accumulates per sample it computes (zeros included)
    latency_ms: float  # median of the interleaved rounds
    speedup: Speedup | None  # over the unpruned model, timed in the same rounds
    accuracy: float


@dataclass(frozen=True)
class MaskingResult:
    """The unpruned, masked and slimmed forms of one filter plan, measured together."""

    fraction: float
    layers: tuple[str, ...]  # the layers whose filters were pruned
    unpruned: Form
    masked: Form
    slimmed: Form
    max_abs_diff: float  # largest output difference, slimmed vs masked (the check)
    samples: int
    latency: Latency  # the unpruned model's timing (batch, threads, device, load)


@dataclass(frozen=True)
class SparseFile:
    """The masked model saved dense and saved sparse (each tensor as values + bitmask or
    CSR, whichever is smallest, or dense when that is smaller)."""

    fraction: float
    dense_bytes: int
    sparse_bytes: int
    params: int
    nonzero: int


def _nonzero(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(p)) for p in model.parameters())


def masking_vs_removing(ref: str, fraction: float = FILTER_FRACTION,
                        runs: int = TIMING_RUNS) -> MaskingResult:
    """Zero `fraction` of the filters of every layer that supports it (l1, masking), build
    the slimmed model with them removed, and measure all three forms; latency timed in
    `runs` interleaved rounds against the unpruned model (`timing.time_against`)."""
    copy = open_copy(ref)
    session = copy.session
    plan, _ = session.uniform_plan(fraction, Granularity.FILTER, "l1")
    session.apply(plan)
    batch = copy.batch(LATENCY_BATCH)
    masked = masked_form(session)
    slimmed, slim_model, _ = slimmed_form(session, batch, copy.data)
    if slim_model is None:
        raise ModelError(f"the slimmed model could not be built: {'; '.join(slimmed.notes)}")
    pristine = copy.pristine
    timing = time_against([session.model, slim_model], pristine, batch, runs=runs)
    base_acc = evaluate(pristine, copy.data)
    masked_acc = evaluate(session.model, copy.data)
    slim_acc = evaluate(slim_model, copy.data)
    unpruned = Form("unpruned", len(dense_bytes(pristine.state_dict())),
                    sum(p.numel() for p in pristine.parameters()), _nonzero(pristine),
                    sum(layer.macs for layer in find_prunable_layers(pristine, batch)),
                    timing.reference.median_ms, None, base_acc.metric)
    masked_row = Form("masked", masked.file_bytes or 0, masked.params_total,
                      _nonzero(session.model), masked.macs_dense,
                      timing.candidates[0].median_ms, timing.speedups[0], masked_acc.metric)
    slim_row = Form("slimmed", slimmed.file_bytes or 0, slimmed.params_total,
                    _nonzero(slim_model), slimmed.macs_dense,
                    timing.candidates[1].median_ms, timing.speedups[1], slim_acc.metric)
    return MaskingResult(
        fraction, tuple(plan.layers), unpruned, masked_row, slim_row,
        float(slimmed.max_abs_diff if slimmed.max_abs_diff is not None else float("nan")),
        masked_acc.samples, timing.reference)


def sparse_file(ref: str, fraction: float = FILTER_FRACTION) -> SparseFile:
    """The masked model of `masking_vs_removing` saved dense and sparse."""
    session = open_copy(ref).session
    plan, _ = session.uniform_plan(fraction, Granularity.FILTER, "l1")
    session.apply(plan)
    state = session.model.state_dict()
    return SparseFile(fraction, len(dense_bytes(state)), sparse_size(state),
                      sum(p.numel() for p in session.model.parameters()),
                      _nonzero(session.model))
