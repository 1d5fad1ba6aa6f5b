"""The shipped sample models: registry, loading, cards, metrics and deterministic training."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch

from pruneviz.data import samples as samples_module
from pruneviz.data.samples import (
    DEFAULT_SAMPLE,
    SAMPLE_DIR,
    get_spec,
    load_sample,
    sample_names,
)
from pruneviz.data.tasks import Task
from pruneviz.data.tensors import load_digits
from pruneviz.data.training import TrainRecipe, train
from pruneviz.errors import ModelError, SampleNotFoundError
from pruneviz.measure.metrics import count_params, evaluate

EXPECTED_NAMES = [
    "digits_mlp",
    "digits_cnn",
    "digits_resnet",
    "digits_lstm",
    "digits_autoencoder",
    "digits_teach",
]
# Minimum test accuracy (classification) or maximum test MSE (reconstruction).
FLOORS = {
    "digits_mlp": 0.96,
    "digits_cnn": 0.97,
    "digits_resnet": 0.97,
    "digits_lstm": 0.95,
    "digits_autoencoder": 0.03,
    "digits_teach": 0.97,
}
CARD_KEYS = {
    "name",
    "title",
    "description",
    "architecture",
    "task",
    "input_shape",
    "data",
    "training",
    "metrics",
    "params",
    "torch_version",
    "sha256",
}
DATA_KEYS = {"source", "split", "split_seed", "train_samples", "test_samples"}


def test_registry_lists_the_six_samples() -> None:
    assert sample_names() == EXPECTED_NAMES
    assert DEFAULT_SAMPLE == "digits_cnn"
    assert Path(__file__).resolve().parents[1] / "sample_models" == SAMPLE_DIR


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_load_sample_gives_eval_model_with_right_output(name: str) -> None:
    sample = load_sample(name)
    assert sample.spec.name == name
    assert sample.spec.input_shape == (1, 8, 8)
    assert not any(module.training for module in sample.model.modules())
    x = sample.example_input(batch=3)
    assert x.shape == (3, 1, 8, 8)
    assert torch.equal(x, sample.test_data().x[:3])
    with torch.inference_mode():
        out = sample.model(x)
    expected = (3, 10) if sample.spec.task is Task.CLASSIFICATION else (3, 1, 8, 8)
    assert tuple(out.shape) == expected
    assert torch.isfinite(out).all()
    if sample.spec.task is Task.RECONSTRUCTION:
        assert float(out.min()) >= 0.0
        assert float(out.max()) <= 1.0


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_card_has_all_fields_matching_the_spec(name: str) -> None:
    sample = load_sample(name)
    card, spec = sample.card, sample.spec
    assert set(card) == CARD_KEYS
    assert card["name"] == name
    assert card["title"] == spec.title
    assert card["description"] == spec.description
    assert card["description"].endswith(".")
    assert card["architecture"] == type(sample.model).__name__
    assert card["task"] == spec.task.value
    assert card["input_shape"] == list(spec.input_shape)
    assert set(card["data"]) == DATA_KEYS
    assert card["data"]["split"] == "stratified 75/25"
    assert card["data"]["split_seed"] == 0
    assert card["data"]["train_samples"] == len(sample.train_data()) == 1347
    assert card["data"]["test_samples"] == len(sample.test_data()) == 450
    assert card["training"] == {**dataclasses.asdict(spec.train_recipe), "optimizer": "Adam"}
    assert set(card["metrics"]) == {"metric_name", "metric", "loss"}
    assert card["metrics"]["metric_name"] == spec.task.metric_name
    assert card["params"] == count_params(sample.model).total
    assert card["torch_version"].startswith("2.")


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_card_sha256_matches_weights_file(name: str) -> None:
    card = load_sample(name).card
    digest = hashlib.sha256((SAMPLE_DIR / f"{name}.safetensors").read_bytes()).hexdigest()
    assert len(card["sha256"]) == 64
    assert card["sha256"] == digest


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_shipped_weights_reproduce_card_metric_and_meet_floor(name: str) -> None:
    sample = load_sample(name)
    result = evaluate(sample.model, sample.test_data())
    assert result.samples == 450
    assert result.metric == pytest.approx(sample.card["metrics"]["metric"], abs=1e-6, rel=0)
    assert result.loss == pytest.approx(sample.card["metrics"]["loss"], abs=1e-6, rel=0)
    if sample.spec.task is Task.CLASSIFICATION:
        assert result.metric >= FLOORS[name]
    else:
        assert result.metric <= FLOORS[name]


def _train_mlp_once(recipe: TrainRecipe) -> tuple[dict[str, torch.Tensor], list[float]]:
    spec = get_spec("digits_mlp")
    torch.manual_seed(recipe.seed)
    model = spec.build()
    seen: list[tuple[int, float]] = []
    losses = train(model, load_digits("train", spec.task), recipe, lambda e, v: seen.append((e, v)))
    assert seen == list(enumerate(losses, start=1))
    assert not model.training
    return {k: v.clone() for k, v in model.state_dict().items()}, losses


def test_training_is_deterministic() -> None:
    recipe = TrainRecipe(epochs=1, lr=1e-3, batch_size=50, seed=0)
    first, losses_a = _train_mlp_once(recipe)
    second, losses_b = _train_mlp_once(recipe)
    assert len(losses_a) == 1
    assert losses_a == losses_b
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key

    torch.manual_seed(0)
    untrained = get_spec("digits_mlp").build().state_dict()
    assert not torch.equal(untrained["fc1.weight"], first["fc1.weight"])
    other_seed, _ = _train_mlp_once(dataclasses.replace(recipe, seed=1))
    assert not torch.equal(other_seed["fc1.weight"], first["fc1.weight"])


def test_training_lowers_the_loss() -> None:
    losses = _train_mlp_once(TrainRecipe(epochs=3, lr=1e-3, batch_size=50))[1]
    assert losses[2] < losses[0]


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"epochs": 0, "lr": 1e-3}, "0"),
        ({"epochs": 1, "lr": 0.0}, "0.0"),
        ({"epochs": 1, "lr": -1.0}, "-1.0"),
    ],
)
def test_recipe_rejects_bad_values(kwargs: dict[str, Any], bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        TrainRecipe(**kwargs)


def test_get_spec_unknown_name_lists_allowed_names() -> None:
    with pytest.raises(SampleNotFoundError) as info:
        get_spec("nope")
    message = str(info.value)
    assert "nope" in message
    for name in EXPECTED_NAMES:
        assert name in message
    assert isinstance(info.value, LookupError)


def test_missing_weights_say_how_to_create_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(samples_module, "SAMPLE_DIR", tmp_path)
    with pytest.raises(SampleNotFoundError, match=r"python sample_models/train\.py"):
        load_sample("digits_cnn")


def test_corrupt_weights_raise_model_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "digits_cnn.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "digits_cnn.json").write_text("{}", encoding="utf-8")
    monkeypatch.setattr(samples_module, "SAMPLE_DIR", tmp_path)
    with pytest.raises(ModelError, match="digits_cnn"):
        load_sample("digits_cnn")


def test_weights_of_another_architecture_raise_model_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for suffix in (".safetensors", ".json"):
        source = SAMPLE_DIR / f"digits_mlp{suffix}"
        (tmp_path / f"digits_cnn{suffix}").write_bytes(source.read_bytes())
    monkeypatch.setattr(samples_module, "SAMPLE_DIR", tmp_path)
    with pytest.raises(ModelError, match="DigitsCNN"):
        load_sample("digits_cnn")


def test_example_input_repeats_test_images_for_large_batches() -> None:
    sample = load_sample("digits_mlp")
    x = sample.example_input(batch=500)
    assert x.shape == (500, 1, 8, 8)
    assert torch.equal(x[450:], x[:50])
    with pytest.raises(ValueError, match="0"):
        sample.example_input(batch=0)
