"""The command line, run as users run it: `python -m pruneviz ...` in a subprocess.

The independent commands start together (two cores: they overlap their imports), and
each test then checks one of them. The sensitivity and budget runs call `main` in-process
(each would otherwise spend most of its time importing torch).
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
from pruneviz.data.architectures import DigitsMLP
from pruneviz.data.samples import SAMPLE_DIR
from pruneviz.workflows.sensitivity import DEFAULT_LEVELS, SensitivityRun

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
        data: dict[str, object] = json.loads(self.stdout, parse_constant=_not_json)
        return data


def _not_json(constant: str) -> None:
    """--json output is strict JSON: NaN and Infinity are not (RFC 8259)."""
    raise AssertionError(f"--json printed {constant}, which is not JSON")


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_evaluate_json_has_every_key(runs: dict[str, Run]) -> None:
    data = runs["evaluate"].json()
    _check_report(data, 0.5)
    assert "latency_ms" not in data
    baseline = data["baseline"]
    assert isinstance(baseline, dict)
    assert baseline["params_nonzero"] == baseline["params_total"] == data["params_total"]


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_replaying_the_written_plan_gives_the_same_model(runs: dict[str, Run]) -> None:
    pruned, replay = runs["prune"].json(), runs["replay"].json()
    assert replay["metric"] == pruned["metric"]
    assert replay["loss"] == pruned["loss"]
    assert replay["params_nonzero"] == pruned["params_nonzero"]
    assert [(x["name"], x["nonzero"]) for x in replay["layers"]] == [  # type: ignore[union-attr]
        (x["name"], x["nonzero"]) for x in pruned["layers"]  # type: ignore[union-attr]
    ]


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_successful_runs_write_nothing_on_stderr(runs: dict[str, Run]) -> None:
    for key in ["samples", "evaluate", "prune", "replay"]:
        assert runs[key].returncode == 0, runs[key].stderr
        assert runs[key].stderr == "", (key, runs[key].stderr)


def test_human_summary(cnn_summary: str) -> None:
    text = cnn_summary
    assert text.startswith("model     sample:digits_cnn")
    for name in ["conv1", "conv2", "fc"]:
        assert any(line.startswith(name) for line in text.splitlines())


# -- sensitivity and budgets (in-process) --------------------------------------------------
def _call(*args: str) -> Run:
    """`main(args)` in this process, with its stdout, stderr and exit status."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("PRUNEVIZ_DEBUG", raising=False)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 1
    return Run(args, code, out.getvalue(), err.getvalue())


def _direct_sensitivity(levels: tuple[float, ...]) -> dict[str, object]:
    bench = open_workbench("sample:digits_mlp")
    run = SensitivityRun(bench.session, bench.eval_data, criterion="l1",
                         granularity="unstructured", levels=levels)
    return run.run().to_dict()


@pytest.fixture(scope="module")
def budget_runs(workdir: Path) -> dict[str, Run]:
    """Every sensitivity and `prune --target-*` run the tests below look at."""
    out = workdir / "budget"
    runs = {
        "sens_json": _call("sensitivity", "sample:digits_mlp", "--levels", "0.9, 0,0.5",
                           "--json"),
        "sens_text": _call("sensitivity", "sample:digits_mlp"),
        "macs": _call("prune", "sample:digits_mlp", "--target-macs", "0.3",
                      "--out", str(out / "macs"), "--json"),
        "size": _call("prune", "sample:digits_mlp", "--target-size-bytes", "30000",
                      "--allocate", "global", "--out", str(out / "size"), "--json"),
        "unmet_text": _call("prune", "sample:digits_mlp", "--target-sparsity", "0.99",
                            "--allocate", "uniform", "--out", str(out / "unmet_text")),
        "unmet_json": _call("prune", "sample:digits_mlp", "--target-sparsity", "0.99",
                            "--allocate", "uniform", "--out", str(out / "unmet_json"),
                            "--json"),
    }
    for method in ["uniform", "global", "sensitivity", "owl"]:
        runs[f"sparsity_{method}"] = _call(
            "prune", "sample:digits_mlp", "--target-sparsity", "0.8", "--allocate", method,
            "--out", str(out / method), "--json")
    runs["wanda"] = _call("prune", "sample:digits_mlp", "--sparsity", "0.5", "--criterion",
                          "wanda", "--out", str(out / "wanda"), "--json")
    runs["lsh_text"] = _call("prune", "sample:digits_cnn", "--sparsity", "0.25",
                             "--granularity", "filter", "--criterion", "lsh",
                             "--out", str(out / "lsh"))
    runs["owl_wanda_text"] = _call("prune", "sample:digits_mlp", "--target-sparsity", "0.7",
                                   "--allocate", "owl", "--criterion", "wanda",
                                   "--out", str(out / "owl_wanda"))
    return runs


def test_sensitivity_json_is_a_direct_runs_result(budget_runs: dict[str, Run]) -> None:
    run = budget_runs["sens_json"]
    data = run.json()  # stdout is exactly one JSON object: no progress in it
    assert run.stderr == ""
    assert data["levels"] == [0.0, 0.5, 0.9]
    layers = data["layers"]
    assert isinstance(layers, dict)
    assert list(layers) == ["fc1", "fc2", "fc3"]
    for layer in layers.values():
        points = layer["points"]
        assert [p["sparsity"] for p in points] == [0.0, 0.5, 0.9]
        for point in points:
            assert {"sparsity", "metric", "loss", "params_nonzero", "macs",
                    "size_bytes"} <= set(point)
    direct = _direct_sensitivity((0.0, 0.5, 0.9))
    data.pop("seconds")
    direct.pop("seconds")
    assert data == direct


def test_sensitivity_text_ranks_items(budget_runs: dict[str, Run]) -> None:
    run = budget_runs["sens_text"]
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "model     sample:digits_mlp"
    header = next(i for i, line in enumerate(lines) if line.startswith("item "))
    assert lines[header].split() == ["item", "unit", "safe",
                                     *(f"{round(v * 100):g}%" for v in DEFAULT_LEVELS)]
    rows = [line.split() for line in lines[header + 1:]]
    bench = open_workbench("sample:digits_mlp")
    result = SensitivityRun(bench.session, bench.eval_data).run()
    ranking = result.ranking()
    assert [row[0] for row in rows] == [r["item"] for r in ranking]  # most robust first
    for row, rank in zip(rows, ranking, strict=True):
        assert row[2] == f"{round(rank['safe_sparsity'] * 100):g}%"
        metrics = [p.metric for p in result.curve(rank["item"])]
        assert [float(v) for v in row[3:]] == pytest.approx(metrics, abs=5e-5)
    # progress: one line per item on stderr, none on stdout
    progress = run.stderr.splitlines()
    assert len(progress) == 3
    assert all(line.startswith("sensitivity: ") for line in progress)
    assert {line.split()[1] for line in progress} == {"fc1", "fc2", "fc3"}


def _written_sparsity(out: Path) -> float:
    dense = load_file(out / "weights.safetensors")
    total = sum(t.numel() for t in dense.values())
    nonzero = sum(int(t.count_nonzero()) for t in dense.values())
    return 1 - nonzero / total


@pytest.mark.parametrize("method", ["uniform", "global", "sensitivity", "owl"])
def test_prune_to_a_target_sparsity(budget_runs: dict[str, Run], workdir: Path,
                                    method: str) -> None:
    run = budget_runs[f"sparsity_{method}"]
    data = run.json()
    assert run.stderr == ""
    allocation = data["allocation"]
    assert isinstance(allocation, dict)
    assert allocation["method"] == method
    assert allocation["budget"] == {"kind": "sparsity", "value": 0.8}
    assert allocation["met"] is True
    assert allocation["notes"] == []
    assert (allocation["predicted_metric"] is None) == (method != "sensitivity")
    out = workdir / "budget" / method
    measured = _written_sparsity(out)
    assert measured >= 0.8
    assert allocation["measured"] == pytest.approx(measured)
    assert data["sparsity"] == pytest.approx(measured)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["sparsity"] == data["sparsity"]
    # the written plan re-applies to the same weights
    bench = open_workbench("sample:digits_mlp")
    bench.session.apply(Plan.from_json((out / "plan.json").read_text(encoding="utf-8")))
    dense = load_file(out / "weights.safetensors")
    state = bench.model.state_dict()
    assert_bit_identical({k: dense[k] for k in state}, {k: v.detach() for k, v in state.items()})


def test_prune_with_wanda_prunes_each_output_row_its_share(budget_runs: dict[str, Run],
                                                           workdir: Path) -> None:
    data = budget_runs["wanda"].json()
    assert [layer["sparsity"] for layer in data["layers"]] == [0.5, 0.5, 0.5]
    assert [layer["threshold"] for layer in data["layers"]] == [None, None, None]
    dense = load_file(workdir / "budget" / "wanda" / "weights.safetensors")
    for name in ("fc1", "fc2", "fc3"):
        weight = dense[f"{name}.weight"]
        assert ((weight == 0).sum(dim=1) == weight.shape[1] // 2).all()


def test_prune_allocated_by_owl_with_wanda_says_the_outlier_ratios(
        budget_runs: dict[str, Run]) -> None:
    run = budget_runs["owl_wanda_text"]
    assert run.returncode == 0, run.stderr
    assert "allocated owl: measured 70.0% overall sparsity (met)" in run.stdout
    line = next(line for line in run.stdout.splitlines() if line.startswith("outliers "))
    for name in ("fc1", "fc2", "fc3"):
        assert f"{name} " in line
    sparsities = {row.split()[0]: row.split()[4] for row in run.stdout.splitlines()
                  if row.split() and row.split()[0] in ("fc1", "fc2", "fc3")}
    assert len(set(sparsities.values())) > 1  # owl does not prune every layer alike


def test_prune_notes_say_lsh_found_no_duplicates_and_ranked_like_l2(
        budget_runs: dict[str, Run]) -> None:
    run = budget_runs["lsh_text"]
    assert run.returncode == 0, run.stderr
    notes = [line for line in run.stdout.splitlines() if line.startswith("note: conv2: ")]
    assert any("lsh found no near-duplicate filters among its 64" in n
               and "exactly as l2 does" in n for n in notes), notes
    assert any("would remove the same 16 of 64 filters as lsh" in n for n in notes), notes


def test_prune_to_a_macs_budget(budget_runs: dict[str, Run]) -> None:
    data = budget_runs["macs"].json()
    allocation = data["allocation"]
    assert isinstance(allocation, dict)
    assert allocation["method"] == "sensitivity"  # the default
    assert allocation["budget"] == {"kind": "macs", "value": 0.3}
    assert allocation["met"] is True
    assert isinstance(allocation["predicted_metric"], float)
    fraction = data["macs_effective"] / data["macs_dense"]  # type: ignore[operator]
    assert fraction <= 0.3
    assert allocation["measured"] == pytest.approx(fraction, abs=1e-4)


def test_prune_to_a_size_budget(budget_runs: dict[str, Run], workdir: Path) -> None:
    data = budget_runs["size"].json()
    allocation = data["allocation"]
    assert isinstance(allocation, dict)
    assert allocation["method"] == "global"
    assert allocation["met"] is True
    on_disk = (workdir / "budget" / "size" / "weights.sparse.safetensors").stat().st_size
    assert on_disk <= 30000
    assert allocation["measured"] == data["size_sparse_bytes"] == on_disk


def test_an_unmet_budget_writes_the_closest_plan_and_warns(budget_runs: dict[str, Run],
                                                           workdir: Path) -> None:
    text, js = budget_runs["unmet_text"], budget_runs["unmet_json"]
    assert text.returncode == 0, text.stderr
    warning = text.stderr.splitlines()
    assert len(warning) == 1
    assert warning[0].startswith("pruneviz: warning: budget not met")
    assert "NOT met" in text.stdout
    assert (workdir / "budget" / "unmet_text" / "plan.json").is_file()
    data = js.json()
    assert js.stderr == ""
    allocation = data["allocation"]
    assert isinstance(allocation, dict)
    assert allocation["met"] is False
    assert 0.9 < allocation["measured"] < 0.99
    assert "cannot reach" in allocation["notes"][0]
    assert _written_sparsity(workdir / "budget" / "unmet_json") == pytest.approx(
        allocation["measured"])


@pytest.mark.parametrize(("args", "needles"), [
    (["sensitivity", "sample:digits_transformer"], ["'digits_transformer'", "digits_mlp"]),
    (["sensitivity", "sample:digits_mlp", "--levels", "0,abc"], ["--levels", "'abc'"]),
    (["sensitivity", "sample:digits_mlp", "--levels", "0,1.5"], ["--levels", "1.5", "[0, 1]"]),
    (["sensitivity", "sample:digits_mlp", "--levels", "-0.1"], ["-0.1", "[0, 1]"]),
    (["sensitivity", "sample:digits_mlp", "--granularity", "2:4"], ["2:4", "fixed sparsity"]),
    (["prune", "sample:digits_mlp", "--target-sparsity", "1.5"], ["--target-sparsity", "1.5"]),
    (["prune", "sample:digits_mlp", "--target-macs", "0"], ["--target-macs", "(0, 1]"]),
    (["prune", "sample:digits_mlp", "--target-size-bytes", "-5"], ["--target-size-bytes"]),
    (["prune", "sample:digits_mlp", "--target-sparsity", "0.5", "--target-macs", "0.5"],
     ["--target-macs", "--target-sparsity", "not allowed"]),
    (["prune", "sample:digits_mlp", "--target-sparsity", "0.5", "--plan", "plan.json"],
     ["--plan", "--target-sparsity", "not allowed"]),
    (["prune", "sample:digits_mlp", "--target-macs", "0.5", "--sparsity", "0.5"],
     ["--sparsity", "not allowed"]),
    (["prune", "sample:digits_mlp", "--target-macs", "0.5", "--scope", "global"],
     ["--scope", "--allocate global"]),
    (["prune", "sample:digits_mlp", "--target-macs", "0.5", "--remove-blocks", "fc2"],
     ["--remove-blocks"]),
    (["prune", "sample:digits_mlp", "--target-sparsity", "0.5", "--granularity", "2:4"],
     ["2:4", "fixed sparsity"]),
    (["prune", "sample:digits_mlp", "--target-sparsity", "0.5", "--max-layer-sparsity", "0"],
     ["--max-layer-sparsity", "(0, 1]"]),
    (["prune", "sample:digits_mlp", "--sparsity", "0.5", "--allocate", "global"],
     ["--allocate needs a target"]),
    (["prune", "sample:digits_mlp", "--sparsity", "0.5", "--max-layer-sparsity", "0.9"],
     ["--max-layer-sparsity needs --scope global"]),
])
def test_bad_budget_or_sensitivity_input_is_one_line(workdir: Path, args: list[str],
                                                     needles: list[str]) -> None:
    if args[0] == "prune":
        args = [*args, "--out", str(workdir / "never_written")]
    run = _call(*args)
    assert run.returncode == 2, (run.args, run.stderr)
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("pruneviz: error: ")
    for needle in needles:
        assert needle in lines[0]
    assert run.stdout == ""
    assert not (workdir / "never_written").exists()


# -- finetune (in-process) -----------------------------------------------------------------
FINETUNE_FILES = ["weights.safetensors", "weights.sparse.safetensors", "history.json",
                  "report.json"]
METRIC_LINES = ["before pruning", "right after pruning", "after retraining"]


@pytest.fixture(scope="module")
def finetune_runs(workdir: Path) -> dict[str, Run]:
    """Every `finetune` run the tests below look at (digits_mlp, 1-3 epochs)."""
    out = workdir / "finetune"
    out.mkdir()
    bench = open_workbench("sample:digits_mlp")
    plan, _ = bench.session.uniform_plan(0.6, "filter", "l2")
    (out / "plan.json").write_text(plan.to_json(), encoding="utf-8")
    return {
        "plan": _call("finetune", "sample:digits_mlp", "--plan", str(out / "plan.json"),
                      "--epochs", "1", "--out", str(out / "plan"), "--json"),
        "sparsity": _call("finetune", "sample:digits_mlp", "--sparsity", "0.5", "--epochs", "2",
                          "--lr", "1e-3", "--out", str(out / "sparsity")),
        "distill": _call("finetune", "sample:digits_mlp", "--sparsity", "0.7", "--scope",
                         "global", "--epochs", "1", "--distill", "--temperature", "2",
                         "--out", str(out / "distill"), "--json"),
        "poly": _call("finetune", "sample:digits_mlp", "--schedule", "poly", "--initial", "0.5",
                      "--final", "0.9", "--begin-step", "0", "--end-step", "30",
                      "--frequency", "10", "--epochs", "3", "--out", str(out / "poly"),
                      "--json"),
    }


def _report(workdir: Path, key: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(
        (workdir / "finetune" / key / "report.json").read_text(encoding="utf-8"))
    return data


def _pruned_model(plan: Plan) -> tuple[dict[str, torch.Tensor], object]:
    """The sample's weights with `plan` applied (no training), and its test evaluation."""
    from pruneviz.measure.metrics import evaluate

    bench = open_workbench("sample:digits_mlp")
    bench.session.apply(plan)
    state = {k: v.detach().clone() for k, v in bench.model.state_dict().items()}
    return state, evaluate(bench.model, bench.eval_data)


def _evaluate_weights(path: Path) -> tuple[float, float]:
    from pruneviz.measure.metrics import evaluate

    bench = open_workbench("sample:digits_mlp")
    bench.model.load_state_dict(load_file(path), strict=True)
    result = evaluate(bench.model, bench.eval_data)
    return result.metric, result.loss


@pytest.mark.slow
@pytest.mark.parametrize("key", ["plan", "sparsity", "distill", "poly"])
def test_finetune_writes_weights_history_and_report(finetune_runs: dict[str, Run],
                                                    workdir: Path, key: str) -> None:
    run = finetune_runs[key]
    assert run.returncode == 0, run.stderr
    out = workdir / "finetune" / key
    for name in FINETUNE_FILES:
        assert (out / name).is_file(), name
    assert not list(out.glob(".*.tmp"))
    dense = load_file(out / "weights.safetensors")
    sparse = decode_sparse((out / "weights.sparse.safetensors").read_bytes())
    assert_bit_identical({k: sparse[k] for k in dense}, dense)
    report = _report(workdir, key)
    history = json.loads((out / "history.json").read_text(encoding="utf-8"))
    assert history["steps"] == report["steps"] > 0
    assert history["history"]
    # the reported metric after retraining is the written weights' metric
    metric, loss = _evaluate_weights(out / "weights.safetensors")
    after = report["after_retraining"]
    assert isinstance(after, dict)
    assert (after["metric"], after["loss"]) == (metric, loss)
    total = sum(t.numel() for t in dense.values())
    nonzero = sum(int(t.count_nonzero()) for t in dense.values())
    assert report["sparsity"] == pytest.approx(1 - nonzero / total)


@pytest.mark.slow
@pytest.mark.parametrize("key", ["plan", "sparsity", "distill"])
def test_finetune_right_after_pruning_is_the_pruned_model(finetune_runs: dict[str, Run],
                                                          workdir: Path, key: str) -> None:
    assert finetune_runs[key].returncode == 0, finetune_runs[key].stderr
    report = _report(workdir, key)
    bench = open_workbench("sample:digits_mlp")
    if key == "plan":
        plan = Plan.from_json((workdir / "finetune" / "plan.json").read_text(encoding="utf-8"))
    elif key == "sparsity":
        plan, _ = bench.session.uniform_plan(0.5, "unstructured", "l1")
    else:
        from pruneviz.core.plan import GlobalPlan

        plan = bench.session.stamp(Plan(global_=GlobalPlan("unstructured", "l1", sparsity=0.7)))
    pruned, evaluation = _pruned_model(plan)
    assert report["after_pruning"] == {"metric": evaluation.metric,  # type: ignore[attr-defined]
                                       "loss": evaluation.loss,  # type: ignore[attr-defined]
                                       "samples": 450}
    base = bench.baseline.evaluation
    assert report["before_pruning"] == {"metric": base.metric, "loss": base.loss, "samples": 450}
    # every entry the plan pruned is still exactly zero (+0.0) after training
    dense = load_file(workdir / "finetune" / key / "weights.safetensors")
    for name, value in pruned.items():
        zero = value == 0
        assert zero.any() or not name.endswith("weight"), name
        assert (dense[name][zero] == 0).all(), name
        assert not torch.signbit(dense[name][zero]).any(), name
    changed = [k for k in pruned if not torch.equal(pruned[k], dense[k])]
    assert changed  # and the kept weights were trained


@pytest.mark.slow
def test_finetune_plan_json_is_one_object(finetune_runs: dict[str, Run], workdir: Path) -> None:
    run = finetune_runs["plan"]
    data = run.json()  # the whole of stdout is one JSON object
    assert run.stderr == ""  # no progress in --json mode
    written = data.pop("written")
    assert written == {name: str(workdir / "finetune" / "plan" / name)
                       for name in FINETUNE_FILES}
    assert data == _report(workdir, "plan")
    assert data["pruning"] == {"source": "plan",
                               "file": str(workdir / "finetune" / "plan.json")}
    assert data["recipe"]["lr"] == 1e-4  # type: ignore[index]  # the masked default
    assert data["recipe"]["epochs"] == 1  # type: ignore[index]
    assert data["processes"] == 1
    assert data["stopped"] == "done"
    layers = {x["name"]: x for x in data["layers"]}  # type: ignore[attr-defined]
    assert layers["fc1"]["sparsity"] == pytest.approx(0.6, abs=0.01)
    # fc3's filters are the classes: the filter plan removed none of them (only the inputs
    # from fc2's pruned neurons)
    fc3 = load_file(workdir / "finetune" / "plan" / "weights.safetensors")["fc3.weight"]
    assert (fc3 != 0).any(dim=1).all()
    assert layers["fc3"]["sparsity"] == pytest.approx(0.6, abs=0.01)


@pytest.mark.slow
def test_finetune_text_output(finetune_runs: dict[str, Run]) -> None:
    run = finetune_runs["sparsity"]
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "model     sample:digits_mlp"
    metric_lines = [x.split(None, 2) for x in lines if x.startswith("accuracy  ")]
    assert len(metric_lines) == 3
    for (_, value, label), expected in zip(metric_lines, METRIC_LINES, strict=True):
        assert label.startswith(expected)
        assert 0.5 < float(value) <= 1.0
    assert any(x.startswith("sparsity  ") and "fc1 50.0%" in x for x in lines)
    assert any(x.startswith("training  ran all 36 steps (2 epochs)") for x in lines)
    progress = run.stderr.splitlines()  # one line per epoch, on stderr
    assert len(progress) == 2
    assert progress[0].startswith("finetune: epoch 1/2  step 18/36")
    assert progress[1].startswith("finetune: epoch 2/2  step 36/36")


@pytest.mark.slow
def test_finetune_poly_schedule_reaches_its_final_sparsity(finetune_runs: dict[str, Run],
                                                           workdir: Path) -> None:
    data = finetune_runs["poly"].json()
    pruning = data["pruning"]
    assert isinstance(pruning, dict)
    assert pruning["source"] == "schedule"
    assert pruning["schedule"]["kind"] == "poly"
    assert pruning["events"][0] == [0, 0.5]
    assert pruning["events"][-1] == [30, 0.9]
    assert data["recipe"]["lr"] == 1e-3  # type: ignore[index]  # the schedule default
    dense = load_file(workdir / "finetune" / "poly" / "weights.safetensors")
    for layer in ["fc1", "fc2", "fc3"]:
        weight = dense[f"{layer}.weight"]
        assert float((weight == 0).float().mean()) == pytest.approx(0.9, abs=1 / weight.numel())
    assert data["best_step"] > 30  # chosen after the last pruning event
    events = [r["event"] for r in json.loads(
        (workdir / "finetune" / "poly" / "history.json").read_text(encoding="utf-8"))["history"]
        if r["event"]]
    assert events[0] == "pruned to 50%"
    assert events[-1] == "pruned to 90%"
    # right after pruning: the final 90% one-shot on the unpruned weights, as it says
    assert "one-shot" in str(data["after_pruning_is"])
    bench = open_workbench("sample:digits_mlp")
    _, evaluation = _pruned_model(bench.session.uniform_plan(0.9, "unstructured", "l1")[0])
    assert data["after_pruning"]["metric"] == evaluation.metric  # type: ignore[index,attr-defined]


@pytest.mark.parametrize(("args", "needles"), [
    (["--plan", "plan.json", "--sparsity", "0.5"], ["--sparsity", "--plan", "not allowed"]),
    (["--sparsity", "0.5", "--schedule", "poly"], ["--schedule", "--sparsity", "not allowed"]),
    ([], ["needs what to prune", "--plan", "--sparsity", "--schedule"]),
    (["--final", "0.9"], ["--final", "needs --schedule"]),
    (["--schedule", "poly"], ["needs --final"]),
    (["--schedule", "poly", "--initial", "0.95", "--final", "0.9"], ["0.95", "above", "0.9"]),
    (["--schedule", "poly", "--final", "1.0"], ["final", "[0, 1)"]),
    (["--schedule", "poly", "--final", "0.9", "--frequency", "0"], ["frequency", "at least 1"]),
    (["--schedule", "poly", "--final", "0.9", "--begin-step", "10", "--end-step", "5"],
     ["end step 5", "begin step 10"]),
    (["--schedule", "poly", "--final", "0.9", "--end-step", "1000"],
     ["step 1000", "180 steps"]),
    (["--schedule", "oneshot", "--final", "0.5", "--rounds", "3"], ["--rounds", "iterative"]),
    (["--schedule", "poly", "--final", "0.9", "--granularity", "2:4"], ["2:4", "fixed"]),
    (["--schedule", "poly", "--final", "0.9", "--begin-step", "5", "--regularizer", "bn_l1"],
     ["BatchNorm"]),
    (["--schedule", "poly", "--final", "0.9", "--regularizer", "l1"], ["--begin-step above 0"]),
    (["--sparsity", "0.5", "--regularizer", "l1"], ["--regularizer", "--schedule"]),
    (["--sparsity", "0.5", "--distill", "--distill-weight", "2"], ["--distill-weight", "[0, 1]"]),
    (["--sparsity", "0.5", "--distill-weight", "0.5"], ["--distill-weight", "needs --distill"]),
    (["--sparsity", "0.5", "--epochs", "0"], ["epochs", "at least 1"]),
    (["--sparsity", "1.5"], ["1.5", "[0, 1]"]),
    (["--plan", "plan.json", "--granularity", "filter"], ["--granularity", "plan file"]),
    (["--plan", "no_such_plan.json"], ["cannot read plan file"]),
])
def test_bad_finetune_input_is_one_line(workdir: Path, args: list[str],
                                        needles: list[str]) -> None:
    args = [str(workdir / "finetune" / a) if a.endswith(".json") else a for a in args]
    never = workdir / "never_finetuned"
    run = _call("finetune", "sample:digits_mlp", *args, "--out", str(never))
    assert run.returncode == 2, (run.args, run.stderr)
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("pruneviz: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert run.stdout == ""
    assert not never.exists()


# -- bench live MODEL ---------------------------------------------------------------------
def test_bench_live_measures_one_model_against_its_baselines() -> None:
    run = _call("bench", "live", "sample:digits_mlp", "--moves", "2", "--json")
    assert run.returncode == 0, run.stderr
    data = run.json()
    assert data["model"] == "sample:digits_mlp"
    assert data["prunable_layers"] == 3
    assert data["params"] == 17_226
    assert data["weights_mb"] == pytest.approx(17_226 * 4 / 2**20)
    for key in ("open_s", "graph_s", "forward_ms", "move_first_metric_ms",
                "move_all_layers_ms", "torch_prune_all_layers_ms"):
        assert isinstance(data[key], float), key
        assert data[key] > 0, key
    assert data["move_all_layers_ratio"] == pytest.approx(
        data["move_all_layers_ms"] / data["torch_prune_all_layers_ms"])
    gain = data["move_all_layers_speedup"]  # from the same moves, with its interval
    assert isinstance(gain, dict)
    assert gain["pairs"] == 2
    assert gain["verdict"] == "within noise"  # 2 moves are too few for an interval
    assert data["open_s"] >= data["load_s"]


def test_bench_takes_a_model_only_for_live() -> None:
    run = _call("bench", "slider", "sample:digits_mlp")
    assert run.returncode == 2
    assert run.stderr.strip() == (
        "pruneviz: error: a MODEL is measured by 'bench live MODEL' only, not by 'bench slider'")


# -- the slimmed model's latency: timed with the masked model, one verdict rule ---------------
@pytest.mark.slow
def test_prune_slim_latency_times_the_forms_together_with_an_interval(workdir: Path) -> None:
    """`prune --slim --latency` once timed the slimmed model on its own, at another moment
    than the masked one: on digits_resnet at 50% filters it read 2.49x in one run and 0.74x
    in another. Now the forms are timed in the same interleaved rounds, and the speed-up
    comes with its interval and a verdict."""
    run = _call("prune", "sample:digits_resnet", "--sparsity", "0.5", "--granularity",
                "filter", "--out", str(workdir / "slim_latency"), "--latency", "--slim",
                "--json")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    gain = data["slim"]["latency_vs_masked"]
    assert gain["pairs"] == data["latency"]["runs"]  # the meter's number of rounds
    assert gain["ci_low"] <= gain["speedup"] <= gain["ci_high"]
    assert data["sparse_deployed"]["latency_vs_masked"]["pairs"] == gain["pairs"]
    if data.get("machine_busy") is None:  # a quiet machine: 4x fewer MACs must show
        assert gain["verdict"] == "faster", gain
        assert data["fastest_form"] in ("slimmed", None)


def test_a_form_line_names_a_change_only_when_its_interval_excludes_1x() -> None:
    from pruneviz.cli.output import form_line

    def form(verdict: str, low: float | None, high: float | None) -> dict[str, object]:
        return {"latency_ms": 2.5, "latency_vs_masked": {
            "speedup": 1.7, "ci_low": low, "ci_high": high, "confidence": 0.95,
            "pairs": 20, "verdict": verdict}}

    assert form_line("slim", form("faster", 1.5, 1.9)) == (
        "slim: latency 2.50 ms, against the masked model in the same rounds: 1.70x faster "
        "(95% CI 1.50-1.90x)")
    assert "within noise (speed-up 1.70x, too few runs (20) for an interval)" in form_line(
        "slim", form("within noise", None, None))
    assert form_line("slim", {"latency_ms": None}) == "slim: latency not measured"
