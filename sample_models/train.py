"""Reproduce the shipped sample weights and cards.

Usage (from the repository root):  python sample_models/train.py [NAME ...]

Trains each named sample (default: all) on the digits training split with its recipe,
evaluates it on the test split and writes sample_models/NAME.safetensors and NAME.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from pruneviz.data.samples import SAMPLE_DIR, SampleSpec, get_spec, sample_names  # noqa: E402
from pruneviz.data.tensors import DIGITS_SPLIT_SEED, load_digits  # noqa: E402
from pruneviz.data.training import train  # noqa: E402
from pruneviz.errors import SampleNotFoundError  # noqa: E402
from pruneviz.measure.metrics import count_params, evaluate  # noqa: E402

DATA_SOURCE = "sklearn.datasets.load_digits (UCI ML hand-written digits, bundled with scikit-learn)"


def sha256_of(path: Path) -> str:
    """Hex SHA-256 digest of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_sample(spec: SampleSpec, out_dir: Path = SAMPLE_DIR) -> dict[str, Any]:
    """Train one sample from scratch, save its weights and card, and return the card."""
    recipe = spec.train_recipe
    train_data = load_digits("train", spec.task)
    test_data = load_digits("test", spec.task)

    torch.manual_seed(recipe.seed)
    model = spec.build()

    def report(epoch: int, loss: float) -> None:
        if epoch == 1 or epoch % 10 == 0 or epoch == recipe.epochs:
            print(f"  {spec.name} epoch {epoch:3d}/{recipe.epochs}  train loss {loss:.5f}")

    train(model, train_data, recipe, progress=report)
    result = evaluate(model, test_data)

    weights_path = out_dir / f"{spec.name}.safetensors"
    state = {key: value.detach().contiguous() for key, value in model.state_dict().items()}
    save_file(state, str(weights_path))

    card: dict[str, Any] = {
        "name": spec.name,
        "title": spec.title,
        "description": spec.description,
        "architecture": type(model).__name__,
        "task": spec.task.value,
        "input_shape": list(spec.input_shape),
        "data": {
            "source": DATA_SOURCE,
            "split": "stratified 75/25",
            "split_seed": DIGITS_SPLIT_SEED,
            "train_samples": len(train_data),
            "test_samples": len(test_data),
        },
        "training": {**dataclasses.asdict(recipe), "optimizer": "Adam"},
        "metrics": {
            "metric_name": result.metric_name,
            "metric": result.metric,
            "loss": result.loss,
        },
        "params": count_params(model).total,
        "torch_version": torch.__version__,
        "sha256": sha256_of(weights_path),
    }
    card_path = out_dir / f"{spec.name}.json"
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(description="Train the pruneviz sample models.")
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"samples to train (default all: {sample_names()})"
    )
    args = parser.parse_args(argv)
    try:
        specs = [get_spec(name) for name in (args.names or sample_names())]
    except SampleNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    try:
        torch.use_deterministic_algorithms(True)
    except RuntimeError as exc:  # pragma: no cover - depends on the torch build
        print(f"warning: deterministic algorithms unavailable ({exc})", file=sys.stderr)

    total_start = time.perf_counter()
    for spec in specs:
        start = time.perf_counter()
        print(f"training {spec.name} ({spec.train_recipe})")
        card = train_sample(spec)
        metrics = card["metrics"]
        print(
            f"  {spec.name}: test {metrics['metric_name']} {metrics['metric']:.4f}, "
            f"loss {metrics['loss']:.4f}, {card['params']} params, "
            f"{time.perf_counter() - start:.1f} s"
        )
    print(f"done in {time.perf_counter() - total_start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
