"""Sparse deployment benchmark: CSR vs dense for unstructured-pruned layers and models.

    python benchmarks/sparse_deploy.py [--runs N]

1. A 4096x4096 Linear at 50/75/90/95% sparsity, batch 1/8/128: SparseLinear vs the dense
   masked layer (the baseline), timed interleaved, median ms and speed-up.
2. Each sample model pruned to 90% unstructured (uniform L1 plan): `sparse_deploy`'s
   per-layer decisions, whole-model batch-64 latency dense vs deployed (interleaved), the
   largest output difference, and file sizes.
3. A wider MLP (1024-4096-4096-10, 90% unstructured by magnitude), as in 2.
4. Pointwise (1x1) convs at 90%: dense vs SparseConv1x1's two forms (batched, per-sample).

Prints one JSON object. Takes under a minute on 2 cores (longer when the machine is busy).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import torch
from torch import Tensor, nn

from pruneviz.data.samples import load_sample, sample_names
from pruneviz.measure.sparse import SparseConv1x1, SparseLinear, deployed_state_bytes, sparse_deploy
from pruneviz.measure.storage import dense_bytes, sparse_bytes
from pruneviz.measure.timing import Latency, time_against
from pruneviz.workflows.workbench import open_workbench

SIZE = 4096
CONV_SHAPES = ((64, 256, 512, 8), (8, 1024, 1024, 14), (256, 1024, 1024, 1))  # N, C, O, HxW
SPARSITIES = (0.5, 0.75, 0.9, 0.95)
BATCHES = (1, 8, 128)
MODEL_BATCH = 64


def _masked_linear(in_features: int, out_features: int, sparsity: float,
                   generator: torch.Generator) -> nn.Linear:
    """A Linear with random weights, the smallest `sparsity` fraction by magnitude zeroed."""
    layer = nn.Linear(in_features, out_features)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * 0.02)
        k = round(sparsity * layer.weight.numel())
        order = layer.weight.abs().view(-1).argsort()
        layer.weight.view(-1)[order[:k]] = 0.0
    return layer.eval()


def _pair(candidate: nn.Module, reference: nn.Module, x: Tensor,
          runs: int) -> tuple[Latency, Latency]:
    """The candidate's and the reference's latency, timed together (timing.time_against)."""
    timing = time_against([candidate], reference, x, runs=runs)
    return timing.candidates[0], timing.reference


def bench_layer(runs: int) -> list[dict[str, Any]]:
    """Dense masked 4096x4096 Linear vs its SparseLinear at each sparsity and batch."""
    generator = torch.Generator().manual_seed(0)
    rows = []
    for sparsity in SPARSITIES:
        dense = _masked_linear(SIZE, SIZE, sparsity, generator)
        sparse = SparseLinear.from_dense(dense)
        for batch in BATCHES:
            x = torch.randn(batch, SIZE, generator=generator)
            csr, ref = _pair(sparse, dense, x, runs)
            with torch.inference_mode():
                diff = float((sparse(x) - dense(x)).abs().max())
            rows.append({
                "sparsity": sparsity,
                "batch": batch,
                "dense_ms": round(ref.median_ms, 3),
                "csr_ms": round(csr.median_ms, 3),
                "speedup": round(ref.median_ms / csr.median_ms, 2),
                "max_abs_diff": diff,
            })
    return rows


def _deploy_report(name: str, model: nn.Module, example: Tensor, runs: int) -> dict[str, Any]:
    """sparse_deploy `model` on `example`; decisions, whole-model latency, diff, sizes."""
    start = time.perf_counter()
    dep = sparse_deploy(model, example)
    deploy_s = time.perf_counter() - start
    deployed, dense = _pair(dep.model, model, example, runs)
    with torch.inference_mode():
        model.eval()
        diff = float((dep.model(example) - model(example)).abs().max())
    state = model.state_dict()
    return {
        "model": name,
        "deploy_seconds": round(deploy_s, 2),
        "layers": [
            {
                "name": layer.name,
                "type": layer.type,
                "sparsity": round(layer.sparsity, 4),
                "dense_ms": round(layer.dense_ms, 4),
                "csr_ms": round(layer.sparse_ms, 4),
                "speedup": round(layer.speedup, 2),
                "chosen": layer.chosen,
            }
            for layer in dep.layers
        ],
        "converted": dep.converted,
        "batch": int(example.shape[0]),
        "dense_ms": round(dense.median_ms, 3),
        "deployed_ms": round(deployed.median_ms, 3),
        "speedup": round(dense.median_ms / deployed.median_ms, 2),
        "max_abs_diff": diff,
        "bytes_dense_file": len(dense_bytes(state)),
        "bytes_deployed_file": deployed_state_bytes(dep),
        "bytes_sparse_encoding": len(sparse_bytes(state)),
    }


def bench_samples(runs: int) -> list[dict[str, Any]]:
    """Every sample model pruned to 90% unstructured, deployed and measured."""
    out = []
    for name in sample_names():
        bench = open_workbench(f"sample:{name}")
        plan, skipped = bench.session.uniform_plan(0.9)
        bench.session.apply(plan)
        example = load_sample(name).example_input(MODEL_BATCH)
        report = _deploy_report(name, bench.session.model, example, runs)
        report["plan_skipped_layers"] = skipped
        out.append(report)
    return out


def bench_wide_mlp(runs: int) -> dict[str, Any]:
    """A 1024-4096-4096-10 MLP at 90% unstructured, deployed and measured."""
    generator = torch.Generator().manual_seed(1)
    model = nn.Sequential(
        _masked_linear(1024, 4096, 0.9, generator), nn.ReLU(),
        _masked_linear(4096, 4096, 0.9, generator), nn.ReLU(),
        _masked_linear(4096, 10, 0.9, generator),
    ).eval()
    example = torch.randn(MODEL_BATCH, 1024, generator=generator)
    return _deploy_report("wide_mlp_1024-4096-4096-10", model, example, runs)


def bench_pointwise(runs: int) -> list[dict[str, Any]]:
    """A 90%-sparse 1x1 conv: dense vs SparseConv1x1 batched and per-sample."""
    generator = torch.Generator().manual_seed(2)
    rows = []
    for n, c, o, hw in CONV_SHAPES:
        conv = nn.Conv2d(c, o, 1).eval()
        with torch.no_grad():
            weight = torch.randn(conv.weight.shape, generator=generator)
            weight[torch.rand(weight.shape, generator=generator) < 0.9] = 0.0
            conv.weight.copy_(weight)
        x = torch.randn(n, c, hw, hw, generator=generator)
        row: dict[str, Any] = {"shape_nchw": [n, c, hw, hw], "out_channels": o}
        for form, per_sample in (("batched", False), ("per_sample", True)):
            sparse = SparseConv1x1.from_dense(conv, per_sample=per_sample)
            csr, ref = _pair(sparse, conv, x, runs)
            row[f"{form}_ms"] = round(csr.median_ms, 3)
            row[f"{form}_dense_ms"] = round(ref.median_ms, 3)
            row[f"{form}_speedup"] = round(ref.median_ms / csr.median_ms, 2)
        rows.append(row)
    return rows


def main() -> None:
    """Run all three parts and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30, help="timed runs per latency")
    args = parser.parse_args()
    start = time.perf_counter()
    load_before = os.getloadavg()
    result = {
        "name": "sparse_deploy",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "baseline": "the dense masked layer/model (same zeros, dense kernels)",
        "linear_4096": bench_layer(args.runs),
        "samples_90pct": bench_samples(args.runs),
        "wide_mlp_90pct": bench_wide_mlp(args.runs),
        "pointwise_conv_90pct": bench_pointwise(args.runs),
    }
    result["load_average_1min_before_after"] = [round(load_before[0], 2),
                                                round(os.getloadavg()[0], 2)]
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
