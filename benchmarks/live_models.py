"""Factories for the live benchmark: our own ResNet-50, DenseNet-121 and ViT-B/16
(tests/fixtures/zoo.py) at full width, for 64x64 RGB inputs and 1,000 classes, named the
way a user names their model: `benchmarks/live_models.py:resnet50`."""

from __future__ import annotations

import sys
from pathlib import Path

from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fixtures import zoo


def resnet50() -> nn.Module:
    return zoo.resnet50()


def densenet121() -> nn.Module:
    return zoo.densenet121()


def vit_b_16() -> nn.Module:
    return zoo.vit_b_16(image_size=64)
