"""Other techniques benchmark: int8 and low-rank next to pruning, on three samples.

    python benchmarks/compress.py [--runs N] [--rounds R] [--models a,b]

For digits_mlp, digits_lstm and digits_cnn: the original float model; pruning 50%
unstructured (l1, every layer) alone; dynamic int8 (`compress.quantize_dynamic_int8`) of
the original; the 50% pruned model in int8; low-rank SVD at 50% of each Linear's full
rank (`compress.low_rank`). For each: the metric on the whole test split, the bytes of
its weight file (dense safetensors, and the sparse encoding — `compress.stored_sizes`),
stored parameters, and median latency at batch 64 and batch 1
(`pruneviz.measure.timing.time_against`: the five models timed together in `runs` x
`rounds` interleaved rounds against the original, so that machine load hits every model
alike; medians, and each speed-up over the original with its 95% interval and verdict);
ratios against the original float model.

Prints one JSON object. Takes under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import torch
from torch import nn

from pruneviz.measure.compression import low_rank, measure_model, quantize_dynamic_int8
from pruneviz.measure.meter import latency_batch
from pruneviz.measure.timing import time_against
from pruneviz.workflows.workbench import open_workbench

MODELS = ("digits_mlp", "digits_lstm", "digits_cnn")
SPARSITY = 0.5
RANK = 0.5
BATCHES = (64, 1)


def configurations(name: str) -> tuple[dict[str, nn.Module], Any, list[str]]:
    """The five models of one sample, its test data, and notes (layers SVD left)."""
    bench = open_workbench(f"sample:{name}")
    original = bench.pristine.eval()
    plan, _ = bench.session.uniform_plan(SPARSITY, "unstructured", "l1")
    bench.session.apply(plan)
    pruned = bench.session.model.eval()
    factored = low_rank(original, RANK, example=latency_batch(bench.full_data, 2))
    models = {
        "original": original,
        "prune50": pruned,
        "int8": quantize_dynamic_int8(original),
        "prune50+int8": quantize_dynamic_int8(pruned),
        "svd50": factored.model.eval(),
    }
    return models, bench.full_data, list(factored.notes)


def latencies(models: dict[str, nn.Module], data: Any, runs: int, rounds: int
              ) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, dict[str, object]]]]:
    """Median latency (ms) per model and batch size, every model timed together against
    the first ("original") in `runs` x `rounds` interleaved rounds (timing.time_against),
    and each one's speed-up over it with its 95% interval and verdict."""
    out: dict[str, dict[int, float]] = {name: {} for name in models}
    gains: dict[str, dict[int, dict[str, object]]] = {name: {} for name in models}
    names = list(models)
    for batch_size in BATCHES:
        batch = latency_batch(data, batch_size)
        timing = time_against([models[n] for n in names[1:]], models[names[0]], batch,
                              runs=runs * rounds)
        for name, latency in zip(names, [timing.reference, *timing.candidates], strict=True):
            out[name][batch_size] = latency.median_ms
        for name, gain in zip(names[1:], timing.speedups, strict=True):
            gains[name][batch_size] = gain.to_dict()
    return out, gains


def one_sample(name: str, runs: int, rounds: int) -> dict[str, Any]:
    models, data, notes = configurations(name)
    timed, gains = latencies(models, data, runs, rounds)
    rows: dict[str, Any] = {}
    for config, model in models.items():
        measured = measure_model(model, data, technique=config, latency=False)
        rows[config] = {
            "metric": round(measured.evaluation.metric, 4),
            "params": measured.params_total,
            "params_nonzero": measured.params_nonzero,
            "file_bytes": measured.sizes.dense,
            "sparse_file_bytes": measured.sizes.sparse,
            "latency_ms_b64": round(timed[config][64], 4),
            "latency_ms_b1": round(timed[config][1], 4),
        }
        if gains.get(config):
            rows[config]["speedup_vs_original_b64"] = gains[config][64]
            rows[config]["speedup_vs_original_b1"] = gains[config][1]
    base = rows["original"]
    for row in rows.values():
        row["file_ratio"] = round(row["file_bytes"] / base["file_bytes"], 3)
        row["sparse_file_ratio"] = round(row["sparse_file_bytes"] / base["file_bytes"], 3)
        row["latency_ratio_b64"] = round(row["latency_ms_b64"] / base["latency_ms_b64"], 3)
        row["latency_ratio_b1"] = round(row["latency_ms_b1"] / base["latency_ms_b1"], 3)
        row["metric_change"] = round(row["metric"] - base["metric"], 4)
    return {"metric_name": measured.evaluation.metric_name, "eval_samples": len(data),
            "svd_notes": notes, "configurations": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    result: dict[str, Any] = {
        "torch": torch.__version__,
        "quantized_engine": str(torch.backends.quantized.engine),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "runs": args.runs,
        "rounds": args.rounds,
        "prune": f"{SPARSITY:.0%} unstructured l1, every layer",
        "svd_rank": f"{RANK:.0%} of each Linear's full rank",
        "models": {name: one_sample(name, args.runs, args.rounds)
                   for name in args.models.split(",")},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
