"""Evaluation, calibration and training data.

The default data set is scikit-learn's bundled copy of the UCI handwritten digits
(1,797 8x8 grey images, 10 classes): it ships inside the scikit-learn wheel, so the
samples work offline with no download. The split is fixed and stratified.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from pruneviz.errors import DataError
from pruneviz.tasks import Task

DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.25


@dataclass(frozen=True)
class TensorData:
    """An in-memory data set: inputs `x`, targets `y` and the task they belong to."""

    x: Tensor
    y: Tensor
    task: Task
    name: str = "data"

    def __post_init__(self) -> None:
        _validate_pair(self.x, self.y, self.name)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield (x, y) batches in order; the last one may be smaller."""
        if batch_size < 1:
            raise DataError(f"batch size must be at least 1, got {batch_size}")
        for start in range(0, len(self), batch_size):
            yield self.x[start : start + batch_size], self.y[start : start + batch_size]

    def head(self, n: int) -> TensorData:
        """The first `n` samples (all of them if there are fewer)."""
        return TensorData(self.x[:n], self.y[:n], self.task, f"{self.name}[:{n}]")


def _validate_pair(x: Tensor, y: Tensor, name: str) -> None:
    if x.shape[0] == 0:
        raise DataError(f"{name} is empty: it needs at least one sample to evaluate on")
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"{name} has {x.shape[0]} inputs but {y.shape[0]} targets; they must match"
        )
    if not torch.isfinite(x).all():
        raise DataError(f"{name} inputs contain NaN or infinite values; clean the data first")


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        labels,
        test_size=DIGITS_TEST_FRACTION,
        stratify=labels,
        random_state=DIGITS_SPLIT_SEED,
    )
    return x_train, x_test, y_train, y_test


def load_digits(split: Literal["train", "test"], task: Task = Task.CLASSIFICATION) -> TensorData:
    """The bundled digits, split 75/25 stratified by class with a fixed seed.

    Inputs are (N, 1, 8, 8) float32 in [0, 1]. For classification the targets are the
    class labels; for reconstruction (autoencoders) they are the inputs themselves.
    """
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; allowed: train, test")
    x_train, x_test, y_train, y_test = _digits_arrays()
    x = torch.from_numpy(x_train if split == "train" else x_test).clone()
    labels = torch.from_numpy(y_train if split == "train" else y_test).clone()
    y = labels if task is Task.CLASSIFICATION else x
    return TensorData(x, y, task, f"digits/{split}")
