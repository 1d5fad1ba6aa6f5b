"""Fine-tuning acceptance benchmark: the issue's three recipes, run and measured.

    python benchmarks/finetune.py [--only cnn|mlp|resnet]

1. digits_cnn, the reference recipe: polynomial decay 50% -> 90% over 1,000 steps while
   training (every 100 steps, unstructured l1, one global ranking), then fine-tuning at
   90%, distilled from the unpruned model (weight 0.5). Target: 90% +- 0.5% of the
   prunable weights zero, test metric within 1 point.
2. digits_mlp at 92% unstructured (Han et al.'s LeNet-300-100 ratio: 1.64% -> 1.59% error
   on MNIST): pruned gradually (poly 30% -> 92%, global l1) with masked retraining.
   Target: within 0.5 point of the unpruned test metric.
3. digits_resnet, Network Slimming: L1 on the BatchNorm scales for the first steps, then
   50% of the channels removed by BN scale (one global ranking of the coupled groups),
   then fine-tuning; the slimmed model's latency against the unpruned one (batch 64).
   Target: within 1 point, and a real speed-up.

Each prints the test metric before pruning, right after pruning (the final plan applied
to the unpruned weights, one-shot, no retraining) and after retraining, with the
training time. Prints one JSON object. Takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import torch

from pruneviz.finetune import FinetuneRecipe, PruneSpec, finetune
from pruneviz.forms import masked_form, slimmed_form
from pruneviz.metrics import evaluate
from pruneviz.models.samples import load_sample
from pruneviz.report import latency_batch
from pruneviz.schedules import Schedule
from pruneviz.session import PruningSession
from pruneviz.workbench import open_workbench

RECIPES: dict[str, dict[str, Any]] = {
    "cnn": {
        "model": "digits_cnn", "target": "sparsity 90% +- 0.5%, metric within 1 point",
        "tolerance": 0.01,
        "recipe": FinetuneRecipe(epochs=100, lr=2e-3, patience=15, distill=0.5),
        "schedule": Schedule("poly", final=0.9, initial=0.5, begin_step=0, end_step=1000,
                             frequency=100),
        "prune": PruneSpec("unstructured", "l1", scope="global"),
        "teacher": True,
    },
    "mlp": {
        "model": "digits_mlp", "target": "92% unstructured, metric within 0.5 point",
        "tolerance": 0.005,
        "recipe": FinetuneRecipe(epochs=80, lr=1e-3, patience=10),
        "schedule": Schedule("poly", final=0.92, initial=0.3, begin_step=0, end_step=1000,
                             frequency=50),
        "prune": PruneSpec("unstructured", "l1", scope="global"),
        "teacher": False,
    },
    "resnet": {
        "model": "digits_resnet", "target": "50% channels by BN scale, within 1 point, faster",
        "tolerance": 0.01,
        "recipe": FinetuneRecipe(epochs=25, lr=1e-3, patience=6, regularizer="bn_l1",
                                 strength=1e-3),
        "schedule": Schedule("oneshot", final=0.5, begin_step=200),
        "prune": PruneSpec("filter", "bn_scale", scope="global"),
        "teacher": False,
    },
}


def weight_sparsity(session: PruningSession) -> float:
    """Fraction of the prunable layers' weights that are zero."""
    params = dict(session.model.named_parameters())
    weights = [params[layer.weight] for layer in session.layers]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def run(key: str) -> dict[str, Any]:
    spec = RECIPES[key]
    bench = open_workbench(f"sample:{spec['model']}")
    session, test = bench.session, bench.eval_data
    before = evaluate(session.model, test).metric
    teacher = load_sample(spec["model"]).model if spec["teacher"] else None
    start = time.perf_counter()
    result = finetune(session, bench.train_data, spec["recipe"], schedule=spec["schedule"],
                      prune=spec["prune"], teacher=teacher)
    seconds = time.perf_counter() - start
    after = evaluate(session.model, test).metric
    out: dict[str, Any] = {
        "model": spec["model"], "target": spec["target"],
        "metric_before": round(before, 4),
        "metric_after_retraining": round(after, 4),
        "drop_points": round(100 * (before - after), 2),
        "within_target": before - after <= spec["tolerance"] + 1e-9,
        "weight_sparsity": round(weight_sparsity(session), 4),
        "steps": result.steps, "best_step": result.best_step, "stopped": result.stopped,
        "train_s": round(seconds, 1),
    }
    # right after pruning: the final plan one-shot on the unpruned weights
    fresh = open_workbench(f"sample:{spec['model']}").session
    fresh.apply(spec["prune"].plan(fresh, spec["schedule"].final))
    out["metric_right_after_pruning"] = round(evaluate(fresh.model, test).metric, 4)
    if key == "resnet":
        batch = latency_batch(test, 64)
        masked = masked_form(session, batch, runs=50)
        slimmed, _ = slimmed_form(session, batch, runs=50)
        out["params"] = {"masked": masked.params, "slimmed": slimmed.params}
        out["latency_ms"] = {"unpruned_masked_shapes": round(masked.latency_ms or 0, 3),
                             "slimmed": round(slimmed.latency_ms or 0, 3)}
        out["speedup"] = round((masked.latency_ms or 0) / (slimmed.latency_ms or 1), 2)
        out["slim_max_abs_diff"] = slimmed.max_abs_diff
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=list(RECIPES))
    args = parser.parse_args()
    load = os.getloadavg()[0]
    keys = [args.only] if args.only else list(RECIPES)
    report = {"threads": torch.get_num_threads(), "results": {k: run(k) for k in keys},
              "load_1min": {"before": round(load, 2), "after": round(os.getloadavg()[0], 2),
                            "cores": os.cpu_count()}}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
