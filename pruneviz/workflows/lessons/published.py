"""Published pruning results that the lessons draw beside the learner's own measurements.

Each figure is as its paper reports it; where a figure is read off a plot, `approximate` says
so. They are other models on other data: the lessons show them as a reference shape, never as
a prediction of this model's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from pruneviz.i18n import N_


@dataclass(frozen=True)
class PublishedPoint:
    """One reported measurement: what was done (`stage`) and the accuracy after it."""

    stage: str  # N_-marked: shown through _()
    accuracy: float  # a fraction, 0-1
    weights_kept: float | None = None  # fraction of the weights (or channels) left
    approximate: bool = False  # read off a figure, not a table


@dataclass(frozen=True)
class PublishedResult:
    """A paper's result: who, which model on which data, and its points."""

    citation: str
    model: str  # N_-marked
    points: tuple[PublishedPoint, ...]
    note: str  # N_-marked: what it shows, in one sentence


HAN_2015 = PublishedResult(
    citation="Han et al. 2015, Learning both Weights and Connections for Efficient Neural "
    "Networks (NeurIPS)",
    model=N_("LeNet-300-100 on MNIST"),
    points=(
        PublishedPoint(N_("unpruned"), 1 - 0.0164, 1.0),
        PublishedPoint(N_("12x fewer weights, retrained"), 1 - 0.0159, 22 / 267),
    ),
    note=N_("With retraining, 12x fewer weights kept the same error. Without retraining, "
            "accuracy starts to drop once about a third of the weights are removed."),
)
# Without retraining, accuracy starts to fall at about 1/3 of the weights removed (their
# trade-off figure; approximate): drawn as a marker line, not as points.
HAN_2015_DROP_WITHOUT_RETRAINING = 1 / 3

NETWORK_SLIMMING = PublishedResult(
    citation="Liu et al. 2017, Learning Efficient Convolutional Networks through Network "
    "Slimming (ICCV)",
    model=N_("VGG-19 on CIFAR-10, 70% of channels removed"),
    points=(
        PublishedPoint(N_("unpruned"), 0.9377, 1.0),
        PublishedPoint(N_("pruned, before fine-tuning"), 0.3254, 0.3),
        PublishedPoint(N_("after fine-tuning"), 0.9378, 0.3),
    ),
    note=N_("Removing 70% of the channels at once collapsed the accuracy; fine-tuning "
            "brought all of it back."),
)
