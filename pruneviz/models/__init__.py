"""Sample model architectures, their registry and loading of the shipped weights."""

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
    "get_spec",
    "load_sample",
    "sample_names",
]
