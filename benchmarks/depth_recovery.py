"""Depth pruning that recovers: one residual stage of digits_resnet removed, then retrained.

    python benchmarks/depth_recovery.py [--block layer1] [--epochs 5] [--lr 1e-3]

The block is replaced by the identity and the model fine-tuned without it (masked
fine-tuning, `pruneviz.workflows.finetune`), once on the labels alone and once distilled
from the unpruned model (weight 0.5, temperature 4). Prints one JSON object: the test
accuracy unpruned, one-shot (the block removed, no retraining), fine-tuned and fine-tuned
with distillation, each with its binomial standard error on the test set; the removable
blocks' measured importance; parameters and MACs per sample of the unpruned and the
depth-pruned model; the slimmed fine-tuned model's agreement with the masked one; the
training time of each run; and the latency (batch 64) of the unpruned model against the
slimmed depth-pruned one, timed in interleaved rounds. The baseline is the one-shot
removal: what depth pruning gives without the recovery it needs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import Any

import torch

from pruneviz.core.plan import Plan
from pruneviz.core.slim import max_abs_diff, slim
from pruneviz.measure.meter import latency_batch
from pruneviz.measure.metrics import EvalResult, evaluate
from pruneviz.measure.timing import time_against
from pruneviz.workflows.finetune import FinetuneRecipe, finetune
from pruneviz.workflows.workbench import Workbench, open_workbench

MODEL = "sample:digits_resnet"


def accuracy(ev: EvalResult) -> dict[str, float]:
    """The metric with its binomial standard error on the test samples."""
    se = math.sqrt(ev.metric * (1 - ev.metric) / ev.samples)
    return {"accuracy": round(ev.metric, 4), "standard_error": round(se, 4)}


def depth_pruned(block: str) -> Workbench:
    bench = open_workbench(MODEL)
    bench.session.apply(bench.session.stamp(Plan(blocks=(block,))))
    return bench


def run(block: str, epochs: int, lr: float) -> dict[str, Any]:
    bench = open_workbench(MODEL)
    test = bench.eval_data
    unpruned = evaluate(bench.model, test)
    baseline = bench.meter.report()
    blocks = [{"name": b.name, "params": b.params, "importance": round(b.importance, 4)}
              for b in bench.session.blocks()]
    out: dict[str, Any] = {"model": MODEL, "block": block, "test_samples": len(test),
                           "removable_blocks": blocks, "recipe": {"epochs": epochs, "lr": lr}}
    oneshot_bench = depth_pruned(block)
    oneshot = evaluate(oneshot_bench.model, test)
    pruned = oneshot_bench.meter.report()
    out["accuracy"] = {"unpruned": accuracy(unpruned), "one_shot": accuracy(oneshot)}
    out["params"] = {"unpruned": baseline.params_total, "depth_pruned": pruned.params_total}
    out["macs_per_sample"] = {"unpruned": baseline.macs_dense, "depth_pruned": pruned.macs_dense}
    out["train_s"] = {}
    for name, distill in (("fine_tuned", 0.0), ("fine_tuned_distilled", 0.5)):
        tuned = depth_pruned(block)
        assert tuned.train_data is not None
        recipe = FinetuneRecipe(epochs=epochs, lr=lr, distill=distill, patience=epochs)
        start = time.perf_counter()
        result = finetune(tuned.session, tuned.train_data, recipe,
                          teacher=tuned.pristine if distill else None)
        out["train_s"][name] = round(time.perf_counter() - start, 1)
        after = evaluate(tuned.model, test)
        out["accuracy"][name] = {**accuracy(after), "steps": result.steps,
                                 "best_step": result.best_step, "stopped": result.stopped}
        if distill:
            continue
        slimmed = slim(tuned.session)
        batch = latency_batch(test, 64)
        out["slimmed"] = {"params": slimmed.params,
                          "max_abs_diff_vs_masked": max_abs_diff(tuned.model, slimmed.model,
                                                                 batch)}
        timing = time_against([slimmed.model], tuned.pristine, batch, runs=30)
        out["latency_ms_batch64"] = {
            "unpruned": round(timing.reference.median_ms, 3),
            "depth_pruned_slimmed": round(timing.candidates[0].median_ms, 3),
            "speedup": timing.speedups[0].to_dict()}
    gain = out["accuracy"]["fine_tuned"]["accuracy"] - out["accuracy"]["one_shot"]["accuracy"]
    out["recovered_points"] = round(100 * gain, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block", default="layer1")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    start = time.perf_counter()
    result = run(args.block, args.epochs, args.lr)
    report = {"threads": torch.get_num_threads(), "result": result,
              "total_s": round(time.perf_counter() - start, 1),
              "load_1min": {"before": round(load, 2), "after": round(os.getloadavg()[0], 2),
                            "cores": os.cpu_count()}}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
