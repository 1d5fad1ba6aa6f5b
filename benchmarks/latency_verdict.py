"""Latency verdict benchmark: does pruneviz claim only the speed-ups it can show?

    python benchmarks/latency_verdict.py [--repeats N] [--cli-runs N]

1. Identical models: a small conv net timed against its own copy (`timing.time_against`,
   10 interleaved rounds), `--repeats` times; the fraction of "within noise" verdicts.
   Target: >= 0.95.
2. Half the MACs: an 8-conv net against the same net with 4 convs (exactly half the
   weight MACs); the verdict, the speed-up and its 95% interval, and whether the
   machine was busy. Target: "faster".
3. The CLI's slim speed-up on digits_resnet, uniform 50% filters (`prune --slim --latency
   --json`, in this process), `--cli-runs` times: each run's slimmed-vs-masked speed-up
   and interval, against an independent timing of the exported slim program (the slimmed
   model rebuilt from the `slim/` files the CLI wrote, exported with torch.export as
   `slim.pt2` is, at batch 64) vs the dense unpruned model, interleaved in one run.
   For contrast, what the old path did: the masked and the slimmed model timed separately,
   one after the other (`measure_latency` each), the ratio of their medians, same count.
   Target: every verdict "faster", each CLI speed-up within 10% of the independent one
   (also reported: whether each CLI interval overlaps the independent one's; two programs
   — the module in memory and the exported graph — may differ by a few percent).

Prints one JSON object, with the machine's load before and after (it is shared: a load
above the core count means other programs competed). Takes about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pruneviz.cli import main as cli_main
from pruneviz.core.granularity import Granularity
from pruneviz.measure.forms import slimmed_form
from pruneviz.measure.meter import latency_batch
from pruneviz.measure.metrics import measure_latency
from pruneviz.measure.timing import FASTER, WITHIN_NOISE, time_against
from pruneviz.output.model_files import export_program, load_slimmed
from pruneviz.workflows.workbench import open_workbench

MODEL = "digits_resnet"
TARGETS = {"identical_within_noise": ">= 0.95", "half_macs_verdict": FASTER,
           "cli_slim": "every verdict faster; each speed-up within 10% of the independent one"}


class Program(nn.Module):
    """An exported program's module for timing: it is already in inference form and
    refuses `eval()`, so it is held outside the module tree."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.__dict__["program"] = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.__dict__["program"](x)
        return out


def conv_net(layers: int, width: int = 16) -> nn.Module:
    """`layers` 3x3 convs of `width` channels: weight MACs proportional to `layers`."""
    torch.manual_seed(0)
    body: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.ReLU()]
    for _ in range(layers - 1):
        body += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*body).eval()


def bench_identical(repeats: int) -> dict[str, Any]:
    model = conv_net(4)
    twin = copy.deepcopy(model)
    x = torch.randn(4, 3, 16, 16)
    verdicts = [time_against([twin], model, x, runs=10, warmup=1).speedups[0].verdict
                for _ in range(repeats)]
    return {"repeats": repeats, "pairs_each": 10,
            "within_noise_fraction": round(verdicts.count(WITHIN_NOISE) / repeats, 3),
            "verdicts": {v: verdicts.count(v) for v in sorted(set(verdicts))}}


def bench_half_macs() -> dict[str, Any]:
    full, half = conv_net(8), conv_net(4)
    timing = time_against([half], full, torch.randn(8, 3, 16, 16), runs=20)
    gain = timing.speedups[0]
    return {"full_ms": round(timing.reference.median_ms, 3),
            "half_ms": round(timing.candidates[0].median_ms, 3), **gain.to_dict(),
            "machine_busy": timing.busy()}


def _cli_slim(out: Path) -> dict[str, Any]:
    """`prune sample:digits_resnet --sparsity 0.5 --granularity filter --slim --latency`."""
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        code = cli_main(["prune", f"sample:{MODEL}", "--sparsity", "0.5", "--granularity",
                         "filter", "--out", str(out), "--force", "--latency", "--slim",
                         "--json"])
    if code != 0:
        raise RuntimeError(f"prune exited with {code}")
    data: dict[str, Any] = json.loads(text.getvalue())
    return data


def bench_cli_slim(runs: int) -> dict[str, Any]:
    bench = open_workbench(f"sample:{MODEL}")
    plan, _ = bench.session.uniform_plan(0.5, Granularity.FILTER, "l1")
    batch = latency_batch(bench.eval_data, 64)
    cli: list[dict[str, Any]] = []
    old: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            data = _cli_slim(Path(tmp) / f"run{i}")
            gain = data["slim"]["latency_vs_masked"]
            cli.append({k: gain[k] for k in ("speedup", "ci_low", "ci_high", "verdict")}
                       | {"machine_busy": data.get("machine_busy") is not None})
        # The CLI's program is exported at batch 8 (torch.export fixes the batch): rebuild the
        # slimmed model from the files the CLI wrote and export it the same way at batch 64.
        slim_dir = Path(tmp) / "run0" / "slim"
        rebuilt = load_slimmed(slim_dir / "slim.json", slim_dir / "slim.safetensors",
                               bench.pristine)
        error = export_program(rebuilt, batch, Path(tmp) / "slim64.pt2")
        if error is not None:
            raise RuntimeError(f"the slimmed model could not be exported: {error}")
        program = Program(torch.export.load(Path(tmp) / "slim64.pt2").module())
        # the independent timing: the exported program against the dense unpruned model
        independent = time_against([program], bench.pristine, batch, runs=30)
        # the old path: masked then slimmed, each timed on its own, one after the other
        with bench.applied(plan):
            _, slim_model, _ = slimmed_form(bench.session, batch)
            assert slim_model is not None
            for _ in range(runs):
                masked_ms = measure_latency(bench.session.model, batch).median_ms
                old.append(round(masked_ms / measure_latency(slim_model, batch).median_ms, 3))
    truth = independent.speedups[0]
    agree = [c["ci_low"] is not None and c["ci_low"] <= (truth.high) and
             truth.low <= c["ci_high"] for c in cli]
    return {"cli_runs": cli, "independent_program_vs_dense": truth.to_dict()
            | {"machine_busy": independent.busy()},
            "cli_intervals_meet_independent": agree,
            "cli_over_independent": [round(c["speedup"] / truth.ratio, 3) for c in cli],
            "old_separate_timings_ratio": old,
            "old_spread": [min(old), max(old)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--cli-runs", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    report: dict[str, Any] = {"targets": TARGETS,
                              "identical": bench_identical(args.repeats),
                              "half_macs": bench_half_macs(),
                              "cli_slim": bench_cli_slim(args.cli_runs)}
    report["load_1min"] = {"before": round(load_before, 2),
                           "after": round(os.getloadavg()[0], 2), "cores": os.cpu_count()}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
