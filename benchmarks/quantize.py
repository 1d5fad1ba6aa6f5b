"""Quantization that covers convolutions: static int8 and int4 weight-only, against fp32.

    python benchmarks/quantize.py [--models digits_cnn,...] [--runs N] [--rounds R]
                                  [--batch B] [--out DIR]

For each sample (default: digits_cnn, the issue's claim, and digits_resnet), against the
float model as shipped (its baseline):

- static int8 (`compression.quantize_static_int8`: FX, Conv + Linear, activations
  calibrated on the workbench's calibration data, weights per output channel), of the
  original model and of the model with 50% of every layer's weights pruned (l1);
- int4 weight-only (`compression.quantize_int4`, groups of at most 128), the same two;
- dynamic int8 (`compression.quantize_dynamic_int8`, Linear only), for comparison;
- the pruned float model itself (metric and file; not timed).

Each quantized model's file is written to disk (`--out`, else a temporary folder), read
back into a fresh architecture and checked to give the identical outputs; the fp32 file is
the model's state dict as dense safetensors. Reported: file bytes and ratio to fp32, the
metric on the whole test split and its change in points, and latency at batch `--batch`
through `compression.measure_model` — the model timed interleaved, run for run, against
the unpruned fp32 model (`metrics.measure_latency_pair`, `--runs` pairs) — repeated
`--rounds` times: the median of the rounds' latency ratios (of medians, and of 10th
percentiles, the runs least disturbed by other programs) and their spread (min, max).
int4 has no CPU kernel: its latency is "storage only", not timed.

Prints one JSON object. Takes a few minutes on 2 shared cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pruneviz.data.samples import load_sample
from pruneviz.measure.compression import (
    INT4,
    INT8,
    INT8_STATIC,
    measure_model,
    quantize_dynamic_int8,
    quantize_int4,
    quantize_static_int8,
    stored_sizes,
    technique_name,
)
from pruneviz.measure.meter import latency_batch
from pruneviz.measure.quantize import load_int4, load_static_int8
from pruneviz.measure.storage import dense_bytes
from pruneviz.workflows.workbench import Workbench, open_workbench

MODELS = ("digits_cnn", "digits_resnet")
SPARSITY = 0.5


def _timed(model: nn.Module, bench: Workbench, technique: str, *, runs: int, rounds: int,
           batch: int, saved: bytes | None, notes: tuple[str, ...] = ()) -> dict[str, Any]:
    """Metric, file and (rounds of) latency interleaved with the fp32 model."""
    reports = [measure_model(model, bench.full_data, technique=technique,
                             reference=bench.pristine, runs=runs, latency_batch_size=batch,
                             saved=saved, notes=notes)
               for _ in range(rounds)]
    first = reports[0]
    ratios = [r.latency.median_ms / r.latency_reference.median_ms for r in reports
              if r.latency is not None and r.latency_reference is not None]
    quiet = [r.latency.p10_ms / r.latency_reference.p10_ms for r in reports
             if r.latency is not None and r.latency_reference is not None]
    return {
        "technique": technique,
        "metric": first.evaluation.metric,
        "file_bytes": first.sizes.dense,
        "file_gzip_bytes": first.sizes.gzip,
        "params_nonzero": first.params_nonzero,
        "latency_ms": [r.latency.median_ms for r in reports if r.latency is not None],
        "latency_fp32_ms": [r.latency_reference.median_ms for r in reports
                            if r.latency_reference is not None],
        "latency_ratio_median": statistics.median(ratios),
        "latency_ratio_min": min(ratios),
        "latency_ratio_max": max(ratios),
        # the 10th percentiles' ratio: the runs least disturbed by other programs
        "latency_p10_ratio_median": statistics.median(quiet),
        "latency_p10_ratio_min": min(quiet),
        "latency_p10_ratio_max": max(quiet),
        "notes": list(first.notes),
    }


def _untimed(model: nn.Module, bench: Workbench, technique: str, saved: bytes,
             notes: tuple[str, ...]) -> dict[str, Any]:
    report = measure_model(model, bench.full_data, technique=technique, latency=False,
                           saved=saved, notes=notes)
    return {"technique": technique, "metric": report.evaluation.metric,
            "file_bytes": report.sizes.dense, "file_gzip_bytes": report.sizes.gzip,
            "params_nonzero": report.params_nonzero, "latency": "storage only",
            "notes": list(report.notes)}


def _same(a: nn.Module, b: nn.Module, x: torch.Tensor) -> bool:
    with torch.inference_mode():
        return bool(torch.equal(a.eval()(x), b.eval()(x)))


def one_model(name: str, *, runs: int, rounds: int, batch: int, out: Path) -> dict[str, Any]:
    """Every form of one sample, measured."""
    bench = open_workbench(f"sample:{name}")
    original = bench.pristine.eval()
    assert bench.session.calibration is not None
    calibration = bench.session.calibration.x
    example = latency_batch(bench.full_data, 64)
    fp32_file = dense_bytes(original.state_dict())
    (out / f"{name}.fp32.safetensors").write_bytes(fp32_file)
    fp32 = measure_model(original, bench.full_data, technique="fp32", latency=False)
    plan, _ = bench.session.uniform_plan(SPARSITY, "unstructured", "l1")
    bench.session.apply(plan)
    pruned = bench.session.model.eval()
    # the pruned float model itself: what quantizing it starts from
    pruned_fp32 = measure_model(pruned, bench.full_data, technique="prune", latency=False)
    rows: list[dict[str, Any]] = [{
        "technique": "prune (fp32)", "metric": pruned_fp32.evaluation.metric,
        "file_bytes": pruned_fp32.sizes.dense, "file_gzip_bytes": pruned_fp32.sizes.gzip,
        "params_nonzero": pruned_fp32.params_nonzero, "latency": "not timed"}]
    for model, is_pruned in ((original, False), (pruned, True)):
        tag = ("prune50." if is_pruned else "") + name
        quantized, saved = quantize_static_int8(model, calibration, example)
        path = out / f"{tag}.int8-static.safetensors"
        path.write_bytes(saved)
        reloaded = load_static_int8(path, load_sample(name).model, example[:1])
        row = _timed(quantized.model, bench, technique_name(INT8_STATIC, pruned=is_pruned),
                     runs=runs, rounds=rounds, batch=batch, saved=saved, notes=quantized.notes)
        row.update(flow=quantized.flow, quantized_layers=list(quantized.layers),
                   engine=str(torch.backends.quantized.engine), file=str(path),
                   reloads_identical=_same(quantized.model, reloaded, bench.full_data.x))
        rows.append(row)
        int4, saved4 = quantize_int4(model, example)
        path4 = out / f"{tag}.int4-w.safetensors"
        path4.write_bytes(saved4)
        reloaded4 = load_int4(path4, load_sample(name).model)
        row4 = _untimed(int4.model, bench, technique_name(INT4, pruned=is_pruned), saved4,
                        int4.notes)
        row4.update(file=str(path4),
                    reloads_identical=_same(int4.model, reloaded4, bench.full_data.x))
        rows.append(row4)
    dynamic = quantize_dynamic_int8(original)
    dyn = _timed(dynamic, bench, technique_name(INT8, pruned=False), runs=runs, rounds=rounds,
                 batch=batch, saved=None)
    dyn["file_bytes"] = stored_sizes(dynamic).dense
    rows.append(dyn)
    for row in rows:
        row["file_ratio_vs_fp32"] = row["file_bytes"] / len(fp32_file)
        row["metric_change_points"] = 100 * (row["metric"] - fp32.evaluation.metric)
    return {
        "model": name,
        "metric_name": fp32.evaluation.metric_name,
        "eval_samples": fp32.evaluation.samples,
        "fp32": {"metric": fp32.evaluation.metric, "file_bytes": len(fp32_file)},
        "calibration_samples": int(calibration.shape[0]),
        "pruned_sparsity": SPARSITY,
        "forms": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--runs", type=int, default=30, help="timed pairs per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", type=Path, help="folder for the files (default: temporary)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        results = [one_model(m.strip(), runs=args.runs, rounds=args.rounds, batch=args.batch,
                             out=out) for m in args.models.split(",") if m.strip()]
    print(json.dumps({
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "batch": args.batch,
        "runs_per_round": args.runs,
        "rounds": args.rounds,
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
