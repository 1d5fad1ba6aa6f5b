"""The sample models shipped in sample_models/: their registry, recipes and loading."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from pruneviz.data.architectures import (
    DigitsAutoencoder,
    DigitsCNN,
    DigitsLSTM,
    DigitsMLP,
    DigitsResNet,
    DigitsTeachCNN,
)
from pruneviz.data.tasks import Task
from pruneviz.data.tensors import TensorData, load_digits
from pruneviz.data.training import TrainRecipe
from pruneviz.errors import ModelError, SampleNotFoundError
from pruneviz.i18n import N_

SAMPLE_DIR: Path = Path(__file__).resolve().parents[2] / "sample_models"
DIGITS_INPUT_SHAPE: tuple[int, ...] = (1, 8, 8)
TRAIN_COMMAND = "python sample_models/train.py"
# 1,347 training images: batches of 64 would leave a last batch of 3, which makes the
# ResNet's BatchNorm statistics jumpy; batches of 50 leave 47. Used by every sample.
TRAIN_BATCH = 50


@dataclass(frozen=True)
class SampleSpec:
    """Everything needed to build, train and describe one sample model."""

    name: str
    title: str
    description: str
    build: Callable[[], nn.Module]
    task: Task
    input_shape: tuple[int, ...]
    train_recipe: TrainRecipe

    @property
    def weights_path(self) -> Path:
        """Where the shipped weights live (safetensors)."""
        return SAMPLE_DIR / f"{self.name}.safetensors"

    @property
    def card_path(self) -> Path:
        """Where the shipped model card lives (JSON)."""
        return SAMPLE_DIR / f"{self.name}.json"


SAMPLES: dict[str, SampleSpec] = {
    spec.name: spec
    for spec in (
        SampleSpec(
            name="digits_mlp",
            title=N_("Digits MLP"),
            description=N_(
                "A plain fully connected network that reads all 64 pixels of a handwritten "
                "digit at once and says which digit (0-9) it is."
            ),
            build=DigitsMLP,
            task=Task.CLASSIFICATION,
            input_shape=DIGITS_INPUT_SHAPE,
            train_recipe=TrainRecipe(epochs=60, lr=1e-3, batch_size=TRAIN_BATCH),
        ),
        SampleSpec(
            name="digits_cnn",
            title=N_("Digits CNN"),
            description=N_(
                "A small convolutional network that scans a handwritten digit with learned "
                "3x3 filters and says which digit (0-9) it is."
            ),
            build=DigitsCNN,
            task=Task.CLASSIFICATION,
            input_shape=DIGITS_INPUT_SHAPE,
            train_recipe=TrainRecipe(epochs=30, lr=2e-3, batch_size=TRAIN_BATCH),
        ),
        SampleSpec(
            name="digits_resnet",
            title=N_("Digits ResNet"),
            description=N_(
                "A small residual network, the design behind many photo recognisers, that looks "
                "at an enlarged handwritten digit and says which digit (0-9) it is."
            ),
            build=DigitsResNet,
            task=Task.CLASSIFICATION,
            input_shape=DIGITS_INPUT_SHAPE,
            train_recipe=TrainRecipe(epochs=20, lr=2e-3, batch_size=TRAIN_BATCH),
        ),
        SampleSpec(
            name="digits_lstm",
            title=N_("Digits LSTM"),
            description=N_(
                "A recurrent network that reads a handwritten digit one pixel row at a time, "
                "top to bottom, and then says which digit (0-9) it is."
            ),
            build=DigitsLSTM,
            task=Task.CLASSIFICATION,
            input_shape=DIGITS_INPUT_SHAPE,
            train_recipe=TrainRecipe(epochs=80, lr=2e-3, batch_size=TRAIN_BATCH),
        ),
        SampleSpec(
            name="digits_autoencoder",
            title=N_("Digits autoencoder"),
            description=N_(
                "A network that squeezes a handwritten digit into a small code and redraws it "
                "from that code; it is scored by how closely the redrawing matches."
            ),
            build=DigitsAutoencoder,
            task=Task.RECONSTRUCTION,
            input_shape=DIGITS_INPUT_SHAPE,
            train_recipe=TrainRecipe(epochs=60, lr=3e-3, batch_size=TRAIN_BATCH),
        ),
        SampleSpec(
            name="digits_teach",
            title=N_("Digits CNN for lessons"),
            description=N_(
                "A small convolutional network trained to spread what it knows across its "
                "filters, so pruning costs accuracy gradually; made for the guided lessons."
            ),
            build=DigitsTeachCNN,
            task=Task.CLASSIFICATION,
            input_shape=DIGITS_INPUT_SHAPE,
            train_recipe=TrainRecipe(epochs=30, lr=2e-3, batch_size=TRAIN_BATCH),
        ),
    )
}

DEFAULT_SAMPLE = "digits_cnn"


def sample_names() -> list[str]:
    """Names of all sample models, in registry order."""
    return list(SAMPLES)


def get_spec(name: str) -> SampleSpec:
    """The spec of sample `name`; raises SampleNotFoundError listing the allowed names."""
    try:
        return SAMPLES[name]
    except KeyError:
        allowed = ", ".join(SAMPLES)
        raise SampleNotFoundError(f"unknown sample model {name!r}; allowed: {allowed}") from None


@dataclass(frozen=True)
class Sample:
    """A loaded sample: its spec, the model (eval mode, shipped weights) and its card."""

    spec: SampleSpec
    model: nn.Module
    card: dict[str, Any]

    def test_data(self) -> TensorData:
        """The held-out digits split, with targets for this sample's task."""
        return load_digits("test", self.spec.task)

    def train_data(self) -> TensorData:
        """The training digits split, with targets for this sample's task."""
        return load_digits("train", self.spec.task)

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """The first `batch` test images, shape (batch, *input_shape), repeated if needed."""
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        x = self.test_data().x
        if batch > x.shape[0]:
            x = x.repeat(-(-batch // x.shape[0]), *([1] * (x.dim() - 1)))
        return x[:batch].reshape(batch, *self.spec.input_shape).clone()


def load_sample(name: str) -> Sample:
    """Build sample `name` and load its shipped weights and card from sample_models/."""
    spec = get_spec(name)
    for path in (spec.weights_path, spec.card_path):
        if not path.is_file():
            raise SampleNotFoundError(
                f"sample model {name!r} is missing its file {path}; "
                f"run `{TRAIN_COMMAND}` from the repository root to create it"
            )
    retrain = f"run `{TRAIN_COMMAND} {name}` to recreate it"
    try:
        state = load_file(spec.weights_path)
    except SafetensorError as exc:
        raise ModelError(
            f"{spec.weights_path} is not a readable safetensors file ({exc}); {retrain}"
        ) from None
    model = spec.build()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(
            f"the weights in {spec.weights_path} do not fit the {type(model).__name__} "
            f"architecture ({exc}); {retrain}"
        ) from None
    model.eval()
    try:
        card = json.loads(spec.card_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelError(f"{spec.card_path} is not valid JSON ({exc}); {retrain}") from None
    if not isinstance(card, dict):
        raise ModelError(f"{spec.card_path} must hold a JSON object; {retrain}")
    return Sample(spec=spec, model=model, card=card)


__all__ = [
    "DEFAULT_SAMPLE",
    "SAMPLES",
    "SAMPLE_DIR",
    "Sample",
    "SampleSpec",
    "get_spec",
    "load_sample",
    "sample_names",
]
