"""Sample model architectures, their registry and loading of the shipped weights; the
user's own models (a factory in their file) and weights, read safely."""

from pruneviz.models.architectures import (
    BasicBlock,
    DigitsAutoencoder,
    DigitsCNN,
    DigitsLSTM,
    DigitsMLP,
    DigitsResNet,
)
from pruneviz.models.samples import (
    DEFAULT_SAMPLE,
    SAMPLE_DIR,
    SAMPLES,
    Sample,
    SampleSpec,
    get_spec,
    load_sample,
    sample_names,
)
from pruneviz.models.user import fit_weights, load_factory, load_user_model, read_weights

__all__ = [
    "DEFAULT_SAMPLE",
    "SAMPLES",
    "SAMPLE_DIR",
    "BasicBlock",
    "DigitsAutoencoder",
    "DigitsCNN",
    "DigitsLSTM",
    "DigitsMLP",
    "DigitsResNet",
    "Sample",
    "SampleSpec",
    "fit_weights",
    "get_spec",
    "load_factory",
    "load_sample",
    "load_user_model",
    "read_weights",
    "sample_names",
]
