"""Fine-tuning acceptance benchmark: the issue's three recipes, run and measured.

    python benchmarks/finetune.py [--only cnn_poly|mlp_92|resnet_slimming]

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

The recipes are pruneviz.workflows.finetune.REFERENCES. Each prints the test metric before
pruning, right after pruning (the final plan applied to the unpruned weights, one-shot,
no retraining) and after retraining, with the training time. Prints one JSON object.
Takes under a minute on 2 quiet cores.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import torch

from pruneviz.core.session import PruningSession
from pruneviz.data.samples import load_sample
from pruneviz.measure.forms import measure_forms
from pruneviz.measure.meter import latency_batch
from pruneviz.measure.metrics import evaluate
from pruneviz.workflows.finetune import REFERENCES, finetune
from pruneviz.workflows.workbench import open_workbench


def weight_sparsity(session: PruningSession) -> float:
    """Fraction of the prunable layers' weights that are zero."""
    params = dict(session.model.named_parameters())
    weights = [params[layer.weight] for layer in session.layers]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def run(key: str) -> dict[str, Any]:
    spec = REFERENCES[key]
    bench = open_workbench(f"sample:{spec.model}")
    session, test = bench.session, bench.eval_data
    before = evaluate(session.model, test).metric
    teacher = load_sample(spec.model).model if spec.distill_from_unpruned else None
    start = time.perf_counter()
    result = finetune(session, bench.train_data, spec.recipe, schedule=spec.schedule,
                      prune=spec.prune, teacher=teacher)
    seconds = time.perf_counter() - start
    after = evaluate(session.model, test).metric
    out: dict[str, Any] = {
        "model": spec.model, "target": spec.target,
        "metric_before": round(before, 4),
        "metric_after_retraining": round(after, 4),
        "drop_points": round(100 * (before - after), 2),
        "within_target": before - after <= spec.tolerance + 1e-9,
        "weight_sparsity": round(weight_sparsity(session), 4),
        "steps": result.steps, "best_step": result.best_step, "stopped": result.stopped,
        "train_s": round(seconds, 1),
    }
    # right after pruning: the final plan one-shot on the unpruned weights
    fresh = open_workbench(f"sample:{spec.model}").session
    fresh.apply(spec.prune.plan(fresh, spec.schedule.final))
    out["metric_right_after_pruning"] = round(evaluate(fresh.model, test).metric, 4)
    if spec.prune.granularity.structured:
        batch = latency_batch(test, 64)
        forms = measure_forms(session, batch, runs=50)  # timed together, interleaved
        masked, slimmed = forms.masked, forms.slimmed
        out["params"] = {"masked": masked.params, "slimmed": slimmed.params}
        out["latency_ms"] = {"unpruned_masked_shapes": round(masked.latency_ms or 0, 3),
                             "slimmed": round(slimmed.latency_ms or 0, 3)}
        gain = slimmed.latency_speedup
        out["speedup"] = None if gain is None else gain.to_dict()
        out["slim_max_abs_diff"] = slimmed.max_abs_diff
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=list(REFERENCES))
    args = parser.parse_args()
    load = os.getloadavg()[0]
    keys = [args.only] if args.only else list(REFERENCES)
    report = {"threads": torch.get_num_threads(), "results": {k: run(k) for k in keys},
              "load_1min": {"before": round(load, 2), "after": round(os.getloadavg()[0], 2),
                            "cores": os.cpu_count()}}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
