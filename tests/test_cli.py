"""The command line, run as users run it: `python -m pruneviz ...` in a subprocess.

The independent commands start together (two cores: they overlap their imports), and
each test then checks one of them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fixtures.models import assert_bit_identical
from safetensors.torch import load_file

from pruneviz import Plan, decode_sparse, open_workbench
from pruneviz.cli import main
from pruneviz.models.architectures import DigitsMLP
from pruneviz.models.samples import SAMPLE_DIR

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300

REPORT_KEYS = {
    "metric_name", "metric", "loss", "params_total", "params_nonzero", "sparsity",
    "macs_dense", "macs_effective", "size_dense_bytes", "size_sparse_bytes", "size_gzip_bytes",
    "layers",
}
LAYER_KEYS = {"name", "type", "params", "nonzero", "sparsity", "threshold"}


@dataclass(frozen=True)
class Run:
    """A finished CLI run."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, object]:
        assert self.returncode == 0, self.stderr
        data: dict[str, object] = json.loads(self.stdout)
        return data


def _start(*args: str) -> tuple[tuple[str, ...], subprocess.Popen[str]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PRUNEVIZ_DEBUG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pruneviz", *args], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    return args, proc


def _finish(started: tuple[tuple[str, ...], subprocess.Popen[str]]) -> Run:
    args, proc = started
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return Run(args, proc.returncode, stdout, stderr)


def _run_all(commands: dict[str, list[str]], parallel: int = 3) -> dict[str, Run]:
    """Run the commands, `parallel` at a time; results by key."""
    results: dict[str, Run] = {}
    pending = list(commands.items())
    running: list[tuple[str, tuple[tuple[str, ...], subprocess.Popen[str]]]] = []
    while pending or running:
        while pending and len(running) < parallel:
            key, args = pending.pop(0)
            running.append((key, _start(*args)))
        key, started = running.pop(0)
        results[key] = _finish(started)
    return results


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = [n for n in ("digits_mlp", "digits_cnn")
               if not (SAMPLE_DIR / f"{n}.safetensors").is_file()]
    if missing:
        pytest.fail(f"sample weights missing for {missing}: run python sample_models/train.py")
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def cnn_summary(workdir: Path) -> str:
    """`prune sample:digits_cnn` run in-process (its plan is a plan for another model)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["prune", "sample:digits_cnn", "--sparsity", "0.3", "--out",
                     str(workdir / "cnn_out")])
    assert code == 0
    return buffer.getvalue()


@pytest.fixture(scope="module")
def runs(workdir: Path, cnn_summary: str) -> dict[str, Run]:
    """Every CLI run the tests look at, started in two waves."""
    (workdir / "not_json.json").write_text("{this is: not json", encoding="utf-8")
    missing_layer = Plan.from_dict({
        "format": "pruneviz.plan", "version": 1,
        "layers": {"fc1": {"sparsity": 0.5}, "conv9": {"sparsity": 0.5}},
    })
    (workdir / "missing_layer.json").write_text(missing_layer.to_json(), encoding="utf-8")
    mlp_out = workdir / "mlp_out"
    first = _run_all({
        "prune": ["prune", "sample:digits_mlp", "--sparsity", "0.5", "--granularity", "filter",
                  "--criterion", "l2", "--out", str(mlp_out), "--json"],
        "samples": ["samples", "--json"],
        "evaluate": ["evaluate", "sample:digits_mlp", "--sparsity", "0.5", "--json"],
        "unknown_sample": ["evaluate", "sample:digits_transformer"],
        "bad_form": ["evaluate", "digits_mlp"],
        "sparsity": ["evaluate", "sample:digits_mlp", "--sparsity", "1.5"],
        "not_json": ["evaluate", "sample:digits_mlp", "--plan", str(workdir / "not_json.json")],
        "missing_layer": ["evaluate", "sample:digits_mlp", "--plan",
                          str(workdir / "missing_layer.json")],
        "missing_file": ["evaluate", "sample:digits_mlp", "--plan",
                         str(workdir / "no_such_plan.json")],
        "foreign": ["evaluate", "sample:digits_mlp", "--plan",
                    str(workdir / "cnn_out" / "plan.json")],
    })
    second = _run_all({
        # The written plan, replayed (with --latency, which must add the latency keys).
        "replay": ["evaluate", "sample:digits_mlp", "--plan", str(mlp_out / "plan.json"),
                   "--json", "--latency"],
    })
    return {**first, **second}


def test_samples_json(runs: dict[str, Run]) -> None:
    data = runs["samples"].json()
    rows = data["samples"]
    assert isinstance(rows, list)
    names = [row["name"] for row in rows]
    assert {"digits_mlp", "digits_cnn"} <= set(names)
    for row in rows:
        assert row["model"] == f"sample:{row['name']}"
        assert row["params"] > 0
        assert {"title", "task", "metric_name", "metric", "description"} <= set(row)
        if row["metric_name"] == "accuracy":
            assert 0.5 < row["metric"] <= 1.0


def _check_report(data: dict[str, object], sparsity: float) -> None:
    assert set(data) >= REPORT_KEYS
    total, nonzero = data["params_total"], data["params_nonzero"]
    assert isinstance(total, int)
    assert isinstance(nonzero, int)
    assert 0 < nonzero < total
    assert data["sparsity"] == pytest.approx(1 - nonzero / total)
    assert 0 < data["macs_effective"] < data["macs_dense"]  # type: ignore[operator]
    assert data["size_sparse_bytes"] < data["size_dense_bytes"]  # type: ignore[operator]
    assert 0 < data["size_gzip_bytes"] < data["size_dense_bytes"]  # type: ignore[operator]
    assert data["metric_name"] == "accuracy"
    assert 0.0 <= data["metric"] <= 1.0  # type: ignore[operator]
    layers = data["layers"]
    assert isinstance(layers, list)
    assert [layer["name"] for layer in layers] == ["fc1", "fc2", "fc3"]
    for layer in layers:
        assert set(layer) >= LAYER_KEYS
        assert layer["sparsity"] == pytest.approx(1 - layer["nonzero"] / layer["params"])
        assert layer["sparsity"] == pytest.approx(sparsity, abs=1 / layer["params"] + 1e-9)
        assert isinstance(layer["threshold"], float)
    assert sum(layer["nonzero"] for layer in layers) < nonzero  # biases are counted too


def test_evaluate_json_has_every_key(runs: dict[str, Run]) -> None:
    data = runs["evaluate"].json()
    _check_report(data, 0.5)
    assert "latency_ms" not in data
    baseline = data["baseline"]
    assert isinstance(baseline, dict)
    assert baseline["params_nonzero"] == baseline["params_total"] == data["params_total"]


def test_latency_flag_adds_latency(runs: dict[str, Run]) -> None:
    data = runs["replay"].json()
    assert data["latency_ms"] > 0  # type: ignore[operator]
    latency = data["latency"]
    assert isinstance(latency, dict)
    assert latency["median_ms"] == data["latency_ms"]
    assert latency["p10_ms"] <= latency["median_ms"] <= latency["p90_ms"]
    assert latency["runs"] >= 1
    assert latency["batch_size"] >= 1
    assert latency["threads"] >= 1


def test_prune_writes_weights_plan_and_report(runs: dict[str, Run], workdir: Path) -> None:
    data = runs["prune"].json()
    out = workdir / "mlp_out"
    written = data["written"]
    assert isinstance(written, dict)
    for name in ["weights.safetensors", "weights.sparse.safetensors", "plan.json",
                 "report.json"]:
        assert (out / name).is_file()
        assert written[name] == str(out / name)
    assert not list(out.glob(".*.tmp"))  # no temporary files left behind
    plan = Plan.from_json((out / "plan.json").read_text(encoding="utf-8"))
    assert plan.model is not None
    assert plan.model.name == "sample:digits_mlp"
    # fc3's filters are the model's 10 class outputs: filter pruning skips it, and says why.
    assert set(plan.layers) == {"fc1", "fc2"}
    assert "output" in data["skipped_layers"]["fc3"]
    assert all(e.granularity.value == "filter" and e.criterion == "l2"
               for e in plan.layers.values())
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    for key, value in report.items():
        assert data[key] == value, key
    sizes_on_disk = (out / "weights.safetensors").stat().st_size
    assert data["size_dense_bytes"] == sizes_on_disk
    assert data["size_sparse_bytes"] == (out / "weights.sparse.safetensors").stat().st_size


def test_replaying_the_written_plan_gives_the_same_model(runs: dict[str, Run]) -> None:
    pruned, replay = runs["prune"].json(), runs["replay"].json()
    assert replay["metric"] == pruned["metric"]
    assert replay["loss"] == pruned["loss"]
    assert replay["params_nonzero"] == pruned["params_nonzero"]
    assert [(x["name"], x["nonzero"]) for x in replay["layers"]] == [  # type: ignore[union-attr]
        (x["name"], x["nonzero"]) for x in pruned["layers"]  # type: ignore[union-attr]
    ]


def test_written_weights_are_the_sessions_weights(runs: dict[str, Run], workdir: Path) -> None:
    assert runs["prune"].returncode == 0, runs["prune"].stderr
    out = workdir / "mlp_out"
    bench = open_workbench("sample:digits_mlp")
    bench.session.apply(Plan.from_json((out / "plan.json").read_text(encoding="utf-8")))
    expected = {k: v.detach() for k, v in bench.model.state_dict().items()}
    dense = load_file(out / "weights.safetensors")
    assert_bit_identical({k: dense[k] for k in expected}, expected)
    assert set(dense) == set(expected)
    sparse = decode_sparse((out / "weights.sparse.safetensors").read_bytes())
    assert_bit_identical({k: sparse[k] for k in expected}, expected)
    fresh = DigitsMLP()
    fresh.load_state_dict(dense, strict=True)
    fresh.eval()
    x = bench.eval_data.x[:32]
    with torch.no_grad():
        assert torch.equal(fresh(x), bench.model(x))
    # Half of fc1's 128 neurons are gone: their rows and biases are zero.
    dead = (dense["fc1.weight"] == 0).all(dim=1)
    assert int(dead.sum()) == 64
    assert (dense["fc1.bias"][dead] == 0).all()


@pytest.mark.parametrize(("key", "needles"), [
    ("unknown_sample", ["'digits_transformer'", "digits_mlp", "digits_cnn"]),
    ("bad_form", ["'digits_mlp'", "sample:NAME"]),
    ("sparsity", ["1.5", "[0, 1]"]),
    ("not_json", ["not valid JSON"]),
    ("foreign", ["made for model 'sample:digits_cnn'"]),
    ("missing_layer", ["conv9", "fc1, fc2, fc3"]),
    ("missing_file", ["cannot read plan file", "no_such_plan.json"]),
])
def test_bad_input_is_one_line_on_stderr(runs: dict[str, Run], key: str,
                                         needles: list[str]) -> None:
    run = runs[key]
    assert run.returncode == 2, (run.args, run.stderr)
    assert "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("pruneviz: error: ")
    for needle in needles:
        assert needle in lines[0]
    assert run.stdout == ""


def test_successful_runs_write_nothing_on_stderr(runs: dict[str, Run]) -> None:
    for key in ["samples", "evaluate", "prune", "replay"]:
        assert runs[key].returncode == 0, runs[key].stderr
        assert runs[key].stderr == "", (key, runs[key].stderr)


def test_human_summary(cnn_summary: str) -> None:
    text = cnn_summary
    assert text.startswith("model     sample:digits_cnn")
    for name in ["conv1", "conv2", "fc"]:
        assert any(line.startswith(name) for line in text.splitlines())
