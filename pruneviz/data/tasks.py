"""Task types and metrics: what a model's output means, its training loss and its metric.

A `Task` decides the loss (cross-entropy for classification, mean squared error for
regression and reconstruction) and the default metric (accuracy or MSE). A `Scorer`
replaces the default metric when the user asks for another one: top-k accuracy, or a
metric function from their own file (`path/to/file.py:function`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import Tensor

from pruneviz.data.userfile import UserFileError, is_file_ref, load_callable
from pruneviz.errors import DataError


class Task(StrEnum):
    """The kind of problem a model solves; decides loss and metric."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"  # targets are given values; MSE, like reconstruction
    RECONSTRUCTION = "reconstruction"  # targets are the inputs themselves (autoencoders)

    @property
    def metric_name(self) -> str:
        """Name of the task metric shown to users."""
        return "accuracy" if self is Task.CLASSIFICATION else "mse"

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger metric value is better (accuracy) or worse (MSE)."""
        return self is Task.CLASSIFICATION

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """Mean training loss of a batch: cross-entropy or mean squared error."""
        if self is Task.CLASSIFICATION:
            return F.cross_entropy(output, target)
        out, tgt = _per_sample(output, target)
        return F.mse_loss(out, tgt)

    def metric_sum(self, output: Tensor, target: Tensor) -> float:
        """Sum of the per-sample metric over a batch (divide by the sample count)."""
        if self is Task.CLASSIFICATION:
            return float((output.argmax(dim=1) == target).sum())
        return _squared_error_sum(output, target)

    def metric_values(self, output: Tensor, target: Tensor) -> Tensor:
        """The metric of each sample of a batch: 1.0 right / 0.0 wrong, or its MSE."""
        if self is Task.CLASSIFICATION:
            return (output.argmax(dim=1) == target).double()
        out, tgt = _per_sample(output, target)
        return (out - tgt).pow(2).mean(dim=1).double()

    def loss_sum(self, output: Tensor, target: Tensor) -> float:
        """Sum of the per-sample loss over a batch (divide by the sample count)."""
        if self is Task.CLASSIFICATION:
            return float(F.cross_entropy(output, target, reduction="sum"))
        return _squared_error_sum(output, target)


def _per_sample(output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Output and target as (batch, values) so that (N,) and (N, 1) compare alike.

    Refuses outputs and targets of different sizes instead of letting them broadcast
    into a meaningless (N, N) difference.
    """
    n = target.shape[0]
    out = output.reshape(output.shape[0], -1)
    tgt = target.reshape(n, -1)
    if out.shape != tgt.shape:
        raise DataError(
            f"the model's output has shape {tuple(output.shape)} but the targets have shape "
            f"{tuple(target.shape)}; each sample's output must have as many values as its "
            "target (check the model's last layer, or the task)")
    return out, tgt.to(out.dtype)


def _squared_error_sum(output: Tensor, target: Tensor) -> float:
    out, tgt = _per_sample(output, target)
    return float((out - tgt).pow(2).mean(dim=1).sum())


def parse_task(value: str | Task) -> Task:
    """Turn a string into a Task, naming the allowed values if it is not one."""
    if isinstance(value, Task):
        return value
    try:
        return Task(value)
    except ValueError:
        allowed = ", ".join(t.value for t in Task)
        raise DataError(f"unknown task {value!r}; allowed: {allowed}") from None


BatchSum = Callable[[Tensor, Tensor], float]


@dataclass(frozen=True)
class Scorer:
    """A metric other than the task's default one.

    `batch_sum(output, target)` returns the SUM of the per-sample metric over a batch
    (evaluation divides the total by the sample count), like `Task.metric_sum`.
    `spec` is the text it was made from ("top5", "path/file.py:f1"), for reports.
    """

    name: str
    higher_is_better: bool
    batch_sum: BatchSum
    spec: str = ""
    # each sample's metric, when the scorer can tell (a user's batch mean cannot)
    values: Callable[[Tensor, Tensor], Tensor] | None = None


def top_k(k: int) -> Scorer:
    """Top-k accuracy: a sample counts as right if its label is among the k best scores."""
    if k < 1:
        raise DataError(f"top-k accuracy needs k of at least 1, got {k}")

    def values(output: Tensor, target: Tensor) -> Tensor:
        if output.dim() != 2:
            raise DataError(
                f"top-{k} accuracy needs (batch, classes) scores, but the model returned "
                f"shape {tuple(output.shape)}; choose the mse metric for this model")
        if output.shape[1] < k:
            raise DataError(
                f"top-{k} accuracy needs at least {k} classes, but the model scores "
                f"{output.shape[1]}; choose a smaller k")
        best = output.topk(k, dim=1).indices
        return (best == target.reshape(-1, 1)).any(dim=1).double()

    def batch_sum(output: Tensor, target: Tensor) -> float:
        return float(values(output, target).sum())

    return Scorer(f"top-{k} accuracy", True, batch_sum, f"top{k}", values)


def user_metric(ref: str) -> Scorer:
    """A metric function from the user's file, `path/to/file.py:function`.

    The function is called as `function(output, target)` with the batch's tensors and
    returns the batch MEAN of its metric (a number or a one-element tensor); it is
    multiplied by the batch size to give the sum. Higher is better unless the function
    has an attribute `higher_is_better = False`.
    """
    function = load_callable(ref, "metric function")
    name = str(getattr(function, "__name__", ref.rpartition(":")[2]))
    higher = getattr(function, "higher_is_better", True)
    if not isinstance(higher, bool):
        raise UserFileError(
            f"{ref}: higher_is_better must be True or False, got {higher!r}; "
            "set `function.higher_is_better = False` for metrics where lower is better")

    def batch_sum(output: Tensor, target: Tensor) -> float:
        try:
            value = function(output, target)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's code may raise anything
            raise UserFileError(
                f"the metric function {ref} raised {type(exc).__name__}: {exc}; "
                "fix the function and try again") from None
        mean = _as_number(value, ref)
        return mean * int(target.shape[0])

    return Scorer(name, higher, batch_sum, ref)


def _as_number(value: object, ref: str) -> float:
    """The finite float a metric function returned, or a UserFileError explaining why not."""
    number: float | None = None
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex():
        number = float(value.detach().reshape(()).to(torch.float64))
    elif isinstance(value, numbers.Real):
        number = float(value)
    if number is None:
        shape = f" of shape {tuple(value.shape)}" if isinstance(value, Tensor) else ""
        raise UserFileError(
            f"the metric function {ref} returned a {type(value).__name__}{shape}, not a number; "
            "it must return the batch mean as a float (or a one-element tensor)")
    if not math.isfinite(number):
        raise UserFileError(
            f"the metric function {ref} returned {number} (not finite); "
            "check it for a division by zero or a log of zero")
    return number


def _parse_k(text: str) -> int | None:
    """k from "top5" / "top-5" / "top_5" (None if `text` is not of that form)."""
    if not text.startswith("top"):
        return None
    digits = text[3:].lstrip("-_ ")
    return int(digits) if digits.isdigit() else None


METRIC_HELP = "accuracy, top5 (any k: top3, top-10), mse, or path/file.py:function"


def parse_metric(value: str | None, task: Task) -> Scorer | None:
    """The Scorer a `--metric` value names, or None for the task's default metric.

    Accepts None or "" (the default), "accuracy", "topK" / "top-K" (classification),
    "mse" (regression, reconstruction) or `path/to/file.py:function` (any task).
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if is_file_ref(text):
        return user_metric(text)
    lowered = text.lower()
    k = _parse_k(lowered)
    if lowered == "accuracy" or k is not None:
        if task is not Task.CLASSIFICATION:
            raise DataError(
                f"the metric {text!r} needs class labels, but the task is {task.value}; "
                "use mse, or a metric function path/file.py:function")
        if k is None or k == 1:
            return None  # plain accuracy is the classification default
        return top_k(k)
    if lowered == "mse":
        if task is Task.CLASSIFICATION:
            raise DataError(
                "mse compares outputs with target values, but the task is classification "
                "(targets are class labels); use accuracy or topK, or pass --task regression")
        return None
    raise DataError(f"unknown metric {text!r}; allowed: {METRIC_HELP}")


__all__ = [
    "METRIC_HELP",
    "Scorer",
    "Task",
    "parse_metric",
    "parse_task",
    "top_k",
    "user_metric",
]
