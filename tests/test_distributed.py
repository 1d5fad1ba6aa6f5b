"""Data-parallel fine-tuning under torchrun (2 processes, gloo on CPU).

Each process takes its share of every batch and DDP averages the gradients, so two
processes train the same model as one process on the whole batch: the written weights
agree within float rounding. The MLP has no BatchNorm (whose batch statistics would be
per share); its last batch of each epoch (57 samples) splits unequally, 29 + 28, which
the loss weighting must also get right. A BatchNorm model cannot match one process, but
its processes must still agree with each other (the command checks, and fails if not),
also while a plan removes one of its blocks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed
from safetensors.torch import load_file

from pruneviz import open_workbench
from pruneviz.data.samples import load_sample

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 180
FINETUNE = ["finetune", "sample:digits_mlp", "--sparsity", "0.5", "--epochs", "2",
            "--lr", "1e-3", "--json"]

pytestmark = [
    pytest.mark.skipif(
        not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
        reason="this PyTorch build has no torch.distributed with the gloo backend",
    ),
    pytest.mark.slow,
]


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("PRUNEVIZ_DEBUG", "WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR",
                 "MASTER_PORT"):
        env.pop(name, None)
    return env


def _start(args: list[str], processes: int) -> subprocess.Popen[str]:
    launcher = [sys.executable, "-m", "pruneviz"] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc_per_node", str(processes), "-m", "pruneviz"]
    return subprocess.Popen([*launcher, *args], cwd=ROOT, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen[str]) -> dict[str, object]:
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr
    assert "pruneviz: error" not in stderr, stderr
    data: dict[str, object] = json.loads(stdout)  # one object: only the first process prints
    return data


def test_two_processes_train_what_one_process_trains(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    procs = [_start([*FINETUNE, "--out", str(one)], 1),
             _start([*FINETUNE, "--out", str(two)], 2)]
    single, parallel = (_finish(proc) for proc in procs)
    assert single["processes"] == 1
    assert parallel["processes"] == 2
    for key in ("steps", "best_step", "stopped", "sparsity", "params_nonzero"):
        assert parallel[key] == single[key], key
    a = load_file(one / "weights.safetensors")
    b = load_file(two / "weights.safetensors")
    assert set(a) == set(b)
    difference = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert difference <= 1e-5  # measured: about 1e-7
    # the entries the plan pruned are exactly zero in both
    bench = open_workbench("sample:digits_mlp")
    bench.session.apply(bench.session.uniform_plan(0.5, "unstructured", "l1")[0])
    for name, value in bench.model.state_dict().items():
        pruned = value == 0
        assert (a[name][pruned] == 0).all(), name
        assert (b[name][pruned] == 0).all(), name
    # the training curves agree too (the logged loss is the whole batch's)
    curves = [json.loads((d / "history.json").read_text(encoding="utf-8"))["history"]
              for d in (one, two)]
    assert [r["step"] for r in curves[0]] == [r["step"] for r in curves[1]]
    for r1, r2 in zip(*curves, strict=True):
        assert r2["loss"] == pytest.approx(r1["loss"], rel=1e-4)
        assert r2["metric"] == r1["metric"]
    # only the first process wrote (one set of files, no temporaries)
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())


def test_batchnorm_processes_stay_in_step_and_train_without_a_removed_block(
        tmp_path: Path) -> None:
    """Each process's BatchNorm statistics come from its share: the processes must still
    validate the same model and stop together (the command fails if their weights or
    steps differ at the end). The plan also removes digits_resnet's `layer1`: DDP wraps the
    model without the block (its parameters are not the model's while it trains), and
    the weights written are the whole architecture's, the block's the originals."""
    out = tmp_path / "resnet"
    data = _finish(_start(["finetune", "sample:digits_resnet", "--sparsity", "0.5",
                           "--remove-blocks", "layer1", "--epochs", "1", "--max-steps", "3",
                           "--lr", "1e-3", "--out", str(out), "--json"], 2))
    assert data["processes"] == 2
    assert data["steps"] == 3
    plan = data["plan"]
    assert isinstance(plan, dict)
    assert plan["blocks"] == ["layer1"]
    weights = load_file(out / "weights.safetensors")
    pristine = load_sample("digits_resnet").model.state_dict()
    assert set(weights) == set(pristine)
    inside = [k for k in pristine if k.startswith("layer1.")]
    assert inside
    for key in inside:
        assert torch.equal(weights[key], pristine[key]), key
    assert not torch.equal(weights["fc.weight"], pristine["fc.weight"])  # it trained
