"""Measurements of a model: task metric and loss, parameter counts, MACs, file sizes, latency.

Every number here is measured on the real model: the metric by running the eval data,
sizes by serialising the actual files, latency by timing repeated forward passes on the
device the model is on (on a GPU, each timed pass waits for the GPU to finish: CUDA runs
asynchronously) and saying which device that was; comparisons of latency go through the
one timing routine, `timing.time_against`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pruneviz.core.layers import eval_mode
from pruneviz.data.tensors import TensorData
from pruneviz.errors import Cancelled
from pruneviz.measure.machine import compute_turn
from pruneviz.measure.timing import Latency, Stop, synchronize, time_against


@dataclass(frozen=True)
class EvalResult:
    """Task metric and mean loss of a model on a data set.

    `stderr` is the standard error of the metric as an estimate of the mean over the
    population the samples were drawn from (None when the metric gives no per-sample
    values: a user's batch-mean function); `proportion` says the metric counts right
    answers (accuracy, top-k), whose interval is a binomial one.
    """

    metric_name: str
    metric: float
    loss: float
    samples: int
    stderr: float | None = None
    proportion: bool = False

    def interval(self, population: int | None = None,
                 z: float = 1.96) -> tuple[float, float] | None:
        """The ~95% interval of the metric over the `population` the samples were drawn
        from without replacement (None: an unlimited one), or None if unknown. Accuracy:
        the Wilson score interval; other metrics: mean +- z standard errors."""
        if self.stderr is None or self.samples < 2 or math.isnan(self.metric):
            return None
        n = self.samples
        shrink = 1.0
        if population is not None:
            if population <= n:
                return (self.metric, self.metric)  # the whole set: nothing left to estimate
            shrink = math.sqrt((population - n) / (population - 1))
        if self.proportion:
            p = self.metric
            zz = (z * shrink) ** 2
            centre = (p + zz / (2 * n)) / (1 + zz / n)
            half = z * shrink * math.sqrt(p * (1 - p) / n + zz / (4 * n * n)) / (1 + zz / n)
            return (max(0.0, centre - half), min(1.0, centre + half))
        half = z * self.stderr * shrink
        return (self.metric - half, self.metric + half)


def evaluate(model: nn.Module, data: TensorData, batch_size: int = 1024, *,
             stop: Stop | None = None) -> EvalResult:
    """Run `data` through `model` (eval mode, no grad) and return metric and loss, with the
    metric's standard error when the metric has per-sample values; the data must be on the
    model's device (`TensorData.to`). `stop` is asked before each batch; when it says so,
    `Cancelled` is raised."""
    metric_total = 0.0
    square_total = 0.0
    per_sample = True
    loss_total = 0.0
    with eval_mode(model), torch.inference_mode():
        for x, y in data.batches(batch_size):
            if stop is not None and stop():
                raise Cancelled("the evaluation was stopped")
            with compute_turn():  # one batch at a time in this process (machine.py)
                out = model(x)
                values = data.metric_values(out, y) if per_sample else None
                if values is None:
                    per_sample = False
                    metric_total += data.metric_sum(out, y)
                else:
                    metric_total += float(values.sum())
                    square_total += float(values.pow(2).sum())
                loss_total += data.task.loss_sum(out, y)
    n = len(data)
    mean = metric_total / n
    stderr = None
    if per_sample and n > 1:
        variance = max(0.0, square_total / n - mean * mean) * n / (n - 1)
        stderr = math.sqrt(variance / n)
    return EvalResult(data.metric_name, mean, loss_total / n, n, stderr, data.proportion)


@dataclass(frozen=True)
class ParamCounts:
    """Total and non-zero parameter counts of a model."""

    total: int
    nonzero: int

    @property
    def sparsity(self) -> float:
        """Fraction of parameters that are exactly zero."""
        return 1.0 - self.nonzero / self.total if self.total else 0.0


def count_params(model: nn.Module) -> ParamCounts:
    """Count every parameter of `model`, and those that are not zero."""
    total = 0
    nonzero = 0
    with torch.no_grad():
        for p in model.parameters():
            total += p.numel()
            nonzero += int(torch.count_nonzero(p))
    return ParamCounts(total, nonzero)


def measure_latency(
    model: nn.Module, example: Tensor, *, runs: int = 20, warmup: int = 3
) -> Latency:
    """Time `runs` forward passes of `example` after `warmup` untimed ones (eval, no grad),
    on the model's device (`example` must be there too). To compare two models, time them
    together: `timing.time_against`."""
    return time_against([], model, example, runs=runs, warmup=warmup).reference


__all__ = ["EvalResult", "Latency", "ParamCounts", "Stop", "count_params", "evaluate",
           "measure_latency", "synchronize"]
