"""The user's own model, weights and data through the library and the CLI: a model file
the project has never seen, weights saved the ways users save them, data in an .npz, and
every kind of bad input answered with one clear line (and nothing unsafe run)."""

from __future__ import annotations

import io
import json
import os
import pickle
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from pruneviz.cli import main
from pruneviz.data.sources import Source, load_source
from pruneviz.data.tensors import load_digits
from pruneviz.errors import DataError, ModelError, PrunevizError
from pruneviz.measure.metrics import evaluate
from pruneviz.workflows.workbench import open_workbench

USER_FILE = textwrap.dedent(
    """
    import torch
    from torch import nn


    def build():
        torch.manual_seed(3)
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


    def broken():
        raise RuntimeError("boom from the factory")


    def not_a_module():
        return 42


    def wide_input():
        return nn.Sequential(nn.Flatten(), nn.Linear(100, 10))


    def exits():
        import sys
        sys.exit(2)


    class OnlyOne(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            assert x.shape[0] < 3, "batches of more than 2 are not supported"
            return self.fc(x.flatten(1))


    def small_batches():
        return OnlyOne()
    """
)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A user model file, its weights (.safetensors and .pt), and digits data as .npz."""
    root = tmp_path_factory.mktemp("user")
    net = root / "net.py"
    net.write_text(USER_FILE)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 10))
    train = load_digits("train")
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):  # a real (if quick) classifier, so the metric means something
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(train.x), train.y).backward()
        optimiser.step()
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(root / "w.safetensors"))
    torch.save(state, root / "w.pt")
    test = load_digits("test")
    np.savez(root / "test.npz", x=test.x.numpy(), y=test.y.numpy())
    np.savez(root / "train.npz", x=train.x.numpy(), y=train.y.numpy())
    return {"root": root, "net": net, "st": root / "w.safetensors", "pt": root / "w.pt",
            "data": root / "test.npz", "train": root / "train.npz"}


def _source(files: dict[str, Path], factory: str = "build", **kwargs: object) -> Source:
    fields: dict[str, object] = {"model": f"{files['net']}:{factory}",
                                 "weights": str(files["st"]), "data": str(files["data"])}
    fields.update(kwargs)
    return Source(**fields)  # type: ignore[arg-type]


def test_user_model_weights_and_data_load_and_measure(files: dict[str, Path]) -> None:
    loaded = load_source(_source(files))
    state = load_file(str(files["st"]))
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    bench = open_workbench(_source(files))
    expected = evaluate(loaded.model, loaded.eval_data)
    assert bench.baseline.evaluation.metric == expected.metric
    assert expected.metric > 0.8  # the trained weights were used, not the factory's own
    assert bench.name == f"{files['net']}:build"


def test_pt_state_dict_gives_the_same_model(files: dict[str, Path]) -> None:
    a = load_source(_source(files)).model.state_dict()
    b = load_source(_source(files, weights=str(files["pt"]))).model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_eval_subset_is_live_and_the_full_set_is_on_demand(files: dict[str, Path]) -> None:
    bench = open_workbench(_source(files, eval_subset=100))
    assert len(bench.eval_data) == 100
    assert len(bench.full_data) == 450
    assert bench.baseline.evaluation.samples == 100
    full = bench.evaluate_full()
    assert full.samples == 450
    assert full.metric == evaluate(bench.model, bench.full_data).metric


def test_user_model_needs_data(files: dict[str, Path]) -> None:
    with pytest.raises(DataError, match="--data"):
        load_source(_source(files, data=None))


def test_data_that_does_not_fit_the_model_is_named(files: dict[str, Path]) -> None:
    with pytest.raises(ModelError, match=r"shape \(1, 1, 8, 8\)"):
        load_source(_source(files, "wide_input", weights=None))


@pytest.mark.parametrize(("factory", "message"), [
    ("broken", "boom from the factory"),
    ("exits", "if __name__"),
    ("small_batches", r"batch of shape \(8, 1, 8, 8\).*batches of more than 2"),
    ("not_a_module", "int"),
    ("missing", "has no function 'missing'"),
])
def test_bad_factories_are_explained(files: dict[str, Path], factory: str, message: str) -> None:
    with pytest.raises(PrunevizError, match=message):
        load_source(_source(files, factory, weights=None))


def test_unknown_model_reference() -> None:
    with pytest.raises(PrunevizError, match=r"file\.py:factory"):
        open_workbench("resnet50")


def test_sample_with_weights_of_another_architecture(files: dict[str, Path]) -> None:
    with pytest.raises(ModelError) as info:
        load_source(Source(model="sample:digits_cnn", weights=str(files["st"])))
    assert "missing" in str(info.value) or "unexpected" in str(info.value)


# -- the CLI, in process: one line on stderr, exit status 2 -----------------------------------
def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_evaluates_a_user_model(files: dict[str, Path],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "evaluate", f"{files['net']}:build", "--weights",
                          str(files["st"]), "--data", str(files["data"]), "--sparsity", "0.5",
                          "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["model"] == f"{files['net']}:build"
    assert 0.45 < report["sparsity"] < 0.55


def test_cli_prune_plan_reproduces_bit_exactly(files: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    model = [f"{files['net']}:build", "--weights", str(files["st"]), "--data", str(files["data"])]
    code, _, err = _cli(capsys, "prune", *model, "--sparsity", "0.7", "--granularity", "filter",
                        "--out", str(tmp_path / "a"), "--json")
    assert code == 0, err
    code, _, err = _cli(capsys, "prune", *model, "--plan", str(tmp_path / "a" / "plan.json"),
                        "--out", str(tmp_path / "b"), "--json")
    assert code == 0, err
    a = load_file(str(tmp_path / "a" / "weights.safetensors"))
    b = load_file(str(tmp_path / "b" / "weights.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


class _Hostile:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.sentinel}",))

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel


def test_cli_refuses_a_hostile_pickle_and_runs_nothing(
        files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sentinel = tmp_path / "pwned"
    payload = tmp_path / "evil.pt"
    buffer = io.BytesIO()
    torch.save({"weight": _Hostile(sentinel)}, buffer, pickle_module=pickle)
    payload.write_bytes(buffer.getvalue())
    code, _, err = _cli(capsys, "evaluate", f"{files['net']}:build", "--weights", str(payload),
                        "--data", str(files["data"]))
    assert code == 2
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert not sentinel.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--weights", "{root}/nothing.safetensors"], "nothing.safetensors"),
    (["--data", "{root}/nothing.npz"], "nothing.npz"),
    (["--weights", "{root}/empty.pt"], "empty"),
    (["--eval-subset", "0"], "--eval-subset"),
])
def test_cli_bad_input_is_one_line(files: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                   args: list[str], message: str) -> None:
    (files["root"] / "empty.pt").write_bytes(b"")
    fields = {"--weights": str(files["st"]), "--data": str(files["data"])}
    for option, value in zip(args[::2], args[1::2], strict=True):
        fields[option] = value.format(root=files["root"])
    flat = [part for pair in fields.items() for part in pair]
    code, _, err = _cli(capsys, "evaluate", f"{files['net']}:build", *flat)
    assert code == 2, err
    assert message in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_cli_finetunes_a_user_model_on_user_training_data(
        files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "finetune", f"{files['net']}:build", "--weights",
                          str(files["st"]), "--data", str(files["data"]), "--train-data",
                          str(files["train"]), "--sparsity", "0.8", "--epochs", "1",
                          "--out", str(tmp_path / "ft"), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["model"] == f"{files['net']}:build"


def test_cli_export_of_a_user_model_verifies_and_its_command_reproduces_it(
        files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import shlex

    out = tmp_path / "export"
    code, stdout, err = _cli(capsys, "export", f"{files['net']}:build", "--weights",
                             str(files["st"]), "--data", str(files["data"]), "--sparsity",
                             "0.5", "--granularity", "filter", "--out", str(out), "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["verified"] is True
    assert (out / "slim" / "slim.json").is_file()
    # the user's model runs elsewhere too: ONNX and the .pt2 of its slimmed form
    status = {row["name"]: row["status"] for row in result["deployment"]}
    assert status["model.onnx"] == status["model.pt2"] == "passed"
    command = shlex.split(result["command"].splitlines()[0])
    assert command[:2] == ["pruneviz", "prune"]
    assert "--data" in command
    monkeypatch.chdir(out)  # the command names plan.json relative to the export folder
    code, _, err = _cli(capsys, *command[1:], "--json")
    assert code == 0, err
    a = load_file(str(out / "weights.safetensors"))
    b = load_file(str(out / "reproduced" / "weights.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_samples_metric_can_be_chosen_without_data() -> None:
    bench = open_workbench(Source(model="sample:digits_mlp", metric="top3"))
    assert bench.baseline.evaluation.metric_name == "top-3 accuracy"
    assert bench.baseline.evaluation.metric >= 0.97
    with pytest.raises(DataError, match="--data"):
        load_source(Source(model="sample:digits_mlp", task="regression"))


@pytest.mark.parametrize("verb", ["export", "prune"])
def test_outputs_never_replace_the_users_input_files(
        files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        verb: str) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    weights = folder / "weights.safetensors"
    weights.write_bytes(files["st"].read_bytes())
    before = weights.read_bytes()
    code, _, err = _cli(capsys, verb, f"{files['net']}:build", "--weights", str(weights),
                        "--data", str(files["data"]), "--sparsity", "0.5", "--out", str(folder))
    assert code == 2
    assert "one of this run's inputs" in err
    assert weights.read_bytes() == before
