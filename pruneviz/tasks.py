"""Task types: what a model's output means, its training loss and its task metric."""

from __future__ import annotations

from enum import StrEnum

import torch.nn.functional as F
from torch import Tensor


class Task(StrEnum):
    """The kind of problem a model solves; decides loss and metric."""

    CLASSIFICATION = "classification"
    RECONSTRUCTION = "reconstruction"

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
        return F.mse_loss(output, target)

    def metric_sum(self, output: Tensor, target: Tensor) -> float:
        """Sum of the per-sample metric over a batch (divide by the sample count)."""
        if self is Task.CLASSIFICATION:
            return float((output.argmax(dim=1) == target).sum())
        per_sample = (output - target).pow(2).flatten(1).mean(dim=1)
        return float(per_sample.sum())

    def loss_sum(self, output: Tensor, target: Tensor) -> float:
        """Sum of the per-sample loss over a batch (divide by the sample count)."""
        if self is Task.CLASSIFICATION:
            return float(F.cross_entropy(output, target, reduction="sum"))
        return float((output - target).pow(2).flatten(1).mean(dim=1).sum())


def parse_task(value: str | Task) -> Task:
    """Turn a string into a Task, naming the allowed values if it is not one."""
    if isinstance(value, Task):
        return value
    try:
        return Task(value)
    except ValueError:
        allowed = ", ".join(t.value for t in Task)
        raise ValueError(f"unknown task {value!r}; allowed: {allowed}") from None


__all__ = ["Task", "parse_task"]
