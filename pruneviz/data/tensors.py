"""Evaluation, calibration and training data.

The default data set is scikit-learn's bundled copy of the UCI handwritten digits
(1,797 8x8 grey images, 10 classes): it ships inside the scikit-learn wheel, so the
samples work offline with no download. The split is fixed and stratified.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from pruneviz.data.tasks import Scorer, Task
from pruneviz.errors import DataError

DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.25


@dataclass(frozen=True)
class TensorData:
    """An in-memory data set: inputs `x`, targets `y` and the task they belong to.

    `scorer` replaces the task's default metric (accuracy or MSE) when set, for example
    top-5 accuracy or the user's own metric function. `classes` names the class labels
    0..C-1 when they are known (image folders, MNIST).
    """

    x: Tensor
    y: Tensor
    task: Task
    name: str = "data"
    scorer: Scorer | None = None
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _validate_pair(self.x, self.y, self.name)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def metric_name(self) -> str:
        """Name of the metric this data is scored with (the scorer's, else the task's)."""
        return self.scorer.name if self.scorer is not None else self.task.metric_name

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger metric value is better."""
        if self.scorer is not None:
            return self.scorer.higher_is_better
        return self.task.higher_is_better

    def metric_sum(self, output: Tensor, target: Tensor) -> float:
        """Sum of the per-sample metric over a batch (divide by the sample count)."""
        if self.scorer is not None:
            return self.scorer.batch_sum(output, target)
        return self.task.metric_sum(output, target)

    def metric_values(self, output: Tensor, target: Tensor) -> Tensor | None:
        """Each sample's metric over a batch, None when the metric only gives batch sums
        (a user's metric function)."""
        if self.scorer is not None:
            return None if self.scorer.values is None else self.scorer.values(output, target)
        return self.task.metric_values(output, target)

    @property
    def proportion(self) -> bool:
        """Whether each sample's metric is 1 or 0 (accuracy, top-k): a binomial count."""
        return self.metric_name.endswith("accuracy")
    @property
    def device(self) -> torch.device:
        """Where the inputs and targets are."""
        return self.x.device

    def to(self, device: torch.device | str) -> TensorData:
        """The same data with inputs and targets on `device` (dtypes kept; itself when
        they are there already)."""
        x, y = self.x.to(device), self.y.to(device)
        if x is self.x and y is self.y:
            return self
        return replace(self, x=x, y=y)

    def batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield (x, y) batches in order; the last one may be smaller."""
        if batch_size < 1:
            raise DataError(f"batch size must be at least 1, got {batch_size}")
        for start in range(0, len(self), batch_size):
            yield self.x[start : start + batch_size], self.y[start : start + batch_size]

    def head(self, n: int) -> TensorData:
        """The first `n` samples (all of them if there are fewer)."""
        return replace(self, x=self.x[:n], y=self.y[:n], name=f"{self.name}[:{n}]")

    def take(self, index: Tensor, name: str) -> TensorData:
        """The samples at `index` (a 1-D tensor of positions), keeping task, scorer, classes."""
        return replace(self, x=self.x[index], y=self.y[index], name=name)

    def subset(self, n: int, seed: int = 0) -> TensorData:
        """A seeded random subset of `n` samples, in their original order.

        For classification it is stratified: each class keeps its share of the samples
        (so data sorted by class, like an image folder, stays representative). Returns
        the data itself when `n` is at least its length.
        """
        if n < 1:
            raise DataError(f"a subset needs at least 1 sample, got {n}")
        total = len(self)
        if n >= total:
            return self
        generator = torch.Generator().manual_seed(seed)
        if self.task is Task.CLASSIFICATION and self.y.dim() == 1:
            index = _stratified_index(self.y, n, generator)
        else:
            index = torch.randperm(total, generator=generator)[:n]
        return self.take(index.sort().values, f"{self.name}[{n:,} of {total:,}]")


def _stratified_index(labels: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """`n` positions drawn from every class in proportion to its size.

    Each class gets floor(n * size / total) samples; the few left over go to the
    classes with the largest remainders (ties to the smaller label).
    """
    values, counts = torch.unique(labels, return_counts=True)
    total = int(labels.shape[0])
    exact = [n * int(c) / total for c in counts]
    quotas = [int(e) for e in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] - quotas[i]), i))
    for i in by_remainder[: n - sum(quotas)]:
        quotas[i] += 1
    picked: list[Tensor] = []
    for value, quota in zip(values, quotas, strict=True):
        members = torch.nonzero(labels == value).flatten()
        order = torch.randperm(members.shape[0], generator=generator)
        picked.append(members[order[:quota]])
    return torch.cat(picked)


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
