"""`prune --min-metric` (the accuracy floor) and `prune --target-latency-ms` end to end on
digits_mlp, and their bad values refused with what to do."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from pruneviz.cli import main
from pruneviz.workflows.workbench import open_workbench

MODEL = "sample:digits_mlp"


def call(*args: str) -> tuple[int, str, str]:
    """`main(args)` in this process: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("PRUNEVIZ_DEBUG", raising=False)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def written_model_metric(out: Path) -> tuple[float, float]:
    """The written weights' accuracy on the sample's evaluation data, and their sparsity."""
    bench = open_workbench(MODEL)
    state = load_file(out / "weights.safetensors")
    bench.model.load_state_dict(state)
    from pruneviz.measure.metrics import evaluate

    total = sum(t.numel() for t in state.values())
    nonzero = sum(int(t.count_nonzero()) for t in state.values())
    return evaluate(bench.model, bench.eval_data).metric, 1 - nonzero / total


@pytest.mark.parametrize("method", ["uniform", "sensitivity"])
def test_min_metric_writes_a_plan_that_meets_it(tmp_path: Path, method: str) -> None:
    out = tmp_path / method
    code, stdout, stderr = call("prune", MODEL, "--min-metric", "0.95", "--allocate", method,
                                "--out", str(out), "--json")
    assert code == 0, stderr
    data: dict[str, Any] = json.loads(stdout)
    floor = data["floor"]
    assert floor["method"] == method
    assert floor["met"] is True
    assert floor["status"] == "found"
    assert floor["objective"] == "sparsity"
    chosen = floor["chosen"]
    assert chosen["metric"] >= 0.95
    assert data["metric"] == pytest.approx(chosen["metric"])
    assert data["sparsity"] == pytest.approx(chosen["sparsity"])
    assert floor["margin"] == pytest.approx(chosen["metric"] - 0.95)
    curve = floor["curve"]
    assert len(curve) == floor["evaluations"] == 17
    assert {"knob", "metric", "stderr", "sparsity", "macs_fraction", "size_bytes",
            "passes"} <= set(curve[0])
    assert any(not p["passes"] and p["sparsity"] > chosen["sparsity"] for p in curve)
    # the files written are the chosen plan's, and meet the floor when measured again
    metric, sparsity = written_model_metric(out)
    assert metric >= 0.95
    assert sparsity == pytest.approx(chosen["sparsity"], abs=1e-6)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["metric"] == pytest.approx(metric)


def test_min_metric_text_shows_the_curve(tmp_path: Path) -> None:
    code, stdout, stderr = call("prune", MODEL, "--min-metric", "0.9", "--allocate", "global",
                                "--objective", "macs", "--out", str(tmp_path / "o"))
    assert code == 0, stderr
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["knob", "phase"])
    rows = [line.split() for line in lines[header + 1:header + 18]]
    assert [float(r[0]) for r in rows] == sorted(float(r[0]) for r in rows)
    assert sum(r[-1] == "chosen" for r in rows) == 1
    assert {r[1] for r in rows} == {"start", "scan", "refine"}
    floor_line = next(line for line in lines if line.startswith("floor     "))
    assert "global keeps accuracy >= 0.9 up to" in floor_line
    assert "17 plans measured" in floor_line


def test_an_unreachable_floor_is_an_error_that_says_why(tmp_path: Path) -> None:
    out = tmp_path / "none"
    code, stdout, stderr = call("prune", MODEL, "--min-metric", "0.999", "--allocate",
                                "uniform", "--out", str(out))
    assert code == 2
    assert stdout == ""
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("pruneviz: error: --min-metric 0.999: no pruning by uniform keeps "
                           "accuracy >= 0.999")
    assert "beyond the unpruned model's accuracy" in last
    assert "lower the floor" in last
    assert "knob" in stderr  # the curve it measured, above the error
    assert not out.exists()


@pytest.mark.parametrize(("args", "words"), [
    (["--min-metric", "nan"], ["--min-metric nan is not a number", "0.98 for 98%"]),
    (["--min-metric", "98", "--allocate", "uniform"],
     ["outside accuracy's range [0, 1]", "give 0.98"]),
    (["--min-metric", "0.9", "--target-sparsity", "0.5"], ["not allowed"]),
    (["--min-metric", "0.9", "--granularity", "2:4"], ["--min-metric", "fixed sparsity"]),
    (["--min-metric", "0.9", "--scope", "global"], ["--allocate global"]),
    (["--objective", "macs", "--sparsity", "0.5"], ["--objective is for --min-metric"]),
    (["--target-latency-ms", "nan"], ["--target-latency-ms nan", "positive number of ms"]),
    (["--target-latency-ms", "0"], ["--target-latency-ms 0.0", "positive number of ms"]),
    (["--target-latency-ms", "-2"], ["positive number of milliseconds"]),
    (["--allocate", "uniform"], ["--allocate needs a target", "--min-metric",
                                 "--target-latency-ms"]),
])
def test_bad_values_say_what_to_do(tmp_path: Path, args: list[str], words: list[str]) -> None:
    out = tmp_path / "bad"
    code, stdout, stderr = call("prune", MODEL, *args, "--out", str(out))
    assert code == 2
    assert stdout == ""
    message = stderr.strip().splitlines()[-1].replace("milliseconds", "ms")
    assert message.startswith("pruneviz: error: ")
    for word in words:
        assert word.replace("milliseconds", "ms") in message, message
    assert not out.exists()


def test_target_latency_ms_meets_a_reachable_budget(tmp_path: Path) -> None:
    out = tmp_path / "latency"
    # A generous budget (10 s): any plan meets it, so the fit stops at knob 0 — what is
    # checked is the path from the option to the latency budget and its report.
    code, stdout, stderr = call("prune", MODEL, "--target-latency-ms", "10000", "--allocate",
                                "uniform", "--out", str(out), "--json")
    assert code == 0, stderr
    data = json.loads(stdout)
    allocation = data["allocation"]
    assert allocation["budget"] == {"kind": "latency_ms", "value": 10000.0}
    assert allocation["met"] is True
    assert 0 < allocation["measured"] <= 10000
    assert (out / "plan.json").exists()


def test_target_latency_ms_out_of_reach_warns(tmp_path: Path) -> None:
    out = tmp_path / "fast"
    code, stdout, stderr = call("prune", MODEL, "--target-latency-ms", "1e-6", "--allocate",
                                "uniform", "--out", str(out))
    assert code == 0
    assert "NOT met" in stdout
    assert "latency" in stderr
    assert "budget not met (at most 0.00 ms latency" in stderr
    assert not math.isnan(float(stderr.split("measured ")[1].split(" ms")[0]))
