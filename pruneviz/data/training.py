"""A plain, deterministic training loop (Adam, seeded shuffling, the task's own loss)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from pruneviz.data.tensors import TensorData


@dataclass(frozen=True)
class TrainRecipe:
    """How to train a model: epochs, Adam learning rate, batch size, weight decay and seed."""

    epochs: int
    lr: float
    batch_size: int = 64
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"learning rate (lr) must be a positive number, got {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be zero or positive, got {self.weight_decay}")


def train(
    model: nn.Module,
    data: TensorData,
    recipe: TrainRecipe,
    progress: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train `model` in place on `data`; return the mean loss of each epoch."""
    torch.manual_seed(recipe.seed)
    shuffle = torch.Generator().manual_seed(recipe.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    n = len(data)
    epoch_losses: list[float] = []
    model.train()
    try:
        for epoch in range(1, recipe.epochs + 1):
            order = torch.randperm(n, generator=shuffle)
            loss_total = 0.0
            for start in range(0, n, recipe.batch_size):
                index = order[start : start + recipe.batch_size]
                x, y = data.x[index], data.y[index]
                optimizer.zero_grad(set_to_none=True)
                loss = data.task.loss(model(x), y)
                torch.autograd.backward(loss)
                optimizer.step()
                loss_total += float(loss.detach()) * int(index.numel())
            epoch_loss = loss_total / n
            if not math.isfinite(epoch_loss):
                raise ValueError(
                    f"training diverged: epoch {epoch} mean loss is {epoch_loss}; "
                    f"try a smaller learning rate than lr={recipe.lr}"
                )
            epoch_losses.append(epoch_loss)
            if progress is not None:
                progress(epoch, epoch_loss)
    finally:
        model.eval()
    return epoch_losses


__all__ = ["TrainRecipe", "train"]
