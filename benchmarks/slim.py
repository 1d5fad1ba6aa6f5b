"""Slim benchmark: masked vs slimmed (ours) vs Torch-Pruning on digits_resnet at 50% filters.

    python benchmarks/slim.py [--runs N] [--rounds R]

1. digits_resnet, uniform 50% filter plan by L2 (`session.uniform_plan(0.5, "filter",
   "l2")`): the masked model, our slimmed model, Torch-Pruning's own pipeline (MetaPruner
   with GroupMagnitudeImportance(p=2), pruning_ratio=0.5, ignored_layers=[fc], local
   pruning) — which picks its own channels — and Torch-Pruning given OUR channels
   (DependencyGraph.get_pruning_group + prune() per group, like tests/test_slim.py), to
   compare like with like. Params and MACs (tp.utils.count_ops_and_params, one sample),
   batch-64 latency (pruneviz.measure.timing.time_against: the four models timed together
   in `runs` x `rounds` interleaved rounds against the masked one, so that machine load
   hits every model alike; medians, and each speed-up over masked with its 95% interval),
   and the ratios with their targets.
2. slim() call time for every sample at the same plan (median of 5), or why it refuses.

Prints one JSON object. Takes about half a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn

from pruneviz.core.session import PruningSession
from pruneviz.core.slim import max_abs_diff, slim
from pruneviz.data.samples import load_sample, sample_names
from pruneviz.errors import ModelError
from pruneviz.measure.timing import time_against
from pruneviz.workflows.workbench import open_workbench

MODEL = "digits_resnet"
SPARSITY = 0.5
BATCH = 64
TARGETS = {"speedup_per_macs_reduction": ">= 0.85 (Torch-Pruning: 0.75-0.92 here)",
           "params_ours_vs_tp": "equal", "latency_ours_vs_tp": "within 10%",
           "slim_ms": "< 100"}


def tp_metapruner(pristine: nn.Module, example: Tensor) -> nn.Module:
    """Torch-Pruning's own pipeline: it ranks and picks the channels itself."""
    model = copy.deepcopy(pristine).eval()
    pruner = tp.pruner.MetaPruner(
        model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=SPARSITY, ignored_layers=[model.fc], global_pruning=False,
    )
    pruner.step()
    return model.eval()


def tp_same_channels(pristine: nn.Module, session: PruningSession) -> nn.Module:
    """Torch-Pruning removing exactly the channels our session pruned, group by group."""
    model = copy.deepcopy(pristine).eval()
    example = session.example_input
    assert isinstance(example, Tensor)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example[:1])
    for gid, units in session.pruned_units().items():
        group = session.groups[gid]
        root = session.layer_by_name[group.root].module_name
        member = next(m for m in group.members if m.module == root and m.kind == "out")
        idxs = sorted({i for i, r in zip(member.idxs, member.root, strict=True)
                       if r in set(units)})
        graph.get_pruning_group(model.get_submodule(root), tp.prune_conv_out_channels,
                                idxs=idxs).prune()
    return model.eval()


def same_state(a: nn.Module, b: nn.Module) -> bool:
    """Same tensor names, shapes and values (so: the same channels were removed)."""
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(
        sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


def count(model: nn.Module, one: Tensor) -> tuple[int, int]:
    """(MACs, params) by Torch-Pruning's counter, on one sample."""
    macs, params = tp.utils.count_ops_and_params(model, one)
    return int(macs), int(params)


def latencies(models: dict[str, nn.Module], x: Tensor, runs: int,
              rounds: int) -> dict[str, dict[str, Any]]:
    """Batch latency per model, every model timed together against the first in
    `runs` x `rounds` interleaved rounds (timing.time_against), and each one's speed-up over
    the first with its 95% interval and verdict."""
    names = list(models)
    timing = time_against([models[n] for n in names[1:]], models[names[0]], x,
                          runs=runs * rounds)
    out: dict[str, dict[str, Any]] = {
        name: {"median_ms": round(lat.median_ms, 3), "p10_ms": round(lat.p10_ms, 3),
               "p90_ms": round(lat.p90_ms, 3)}
        for name, lat in zip(names, [timing.reference, *timing.candidates], strict=True)}
    for name, gain in zip(names[1:], timing.speedups, strict=True):
        out[name][f"speedup_vs_{names[0]}"] = gain.to_dict()
    return out


def bench_resnet(runs: int, rounds: int) -> dict[str, Any]:
    bench = open_workbench(f"sample:{MODEL}")
    session = bench.session
    plan, skipped = session.uniform_plan(SPARSITY, "filter", "l2")
    session.apply(plan)
    result = slim(session)
    pristine = load_sample(MODEL).model
    one = session.example_input
    assert isinstance(one, Tensor)
    models = {
        "masked": session.model,
        "ours": result.model,
        "tp_metapruner": tp_metapruner(pristine, one),
        "tp_our_channels": tp_same_channels(pristine, session),
    }
    x = bench.eval_data.x[:BATCH]
    counts = {name: count(m, one) for name, m in models.items()}
    lat = latencies(models, x, runs, rounds)
    dense_macs, ours_macs = counts["masked"][0], counts["ours"][0]
    macs_reduction = dense_macs / ours_macs
    speedup = lat["masked"]["median_ms"] / lat["ours"]["median_ms"]
    with torch.inference_mode():
        scale = float(session.model(x).abs().max())
    return {
        "model": MODEL, "plan": f"uniform {SPARSITY} filter l2", "skipped": sorted(skipped),
        "batch": BATCH, "runs": runs, "rounds": rounds, "threads": torch.get_num_threads(),
        "models": {name: {"params": counts[name][1], "macs": counts[name][0],
                          "latency_ms": lat[name]["median_ms"],
                          "latency_p10_p90_ms": [lat[name]["p10_ms"], lat[name]["p90_ms"]],
                          "speedup_vs_masked": lat[name].get("speedup_vs_masked")}
                   for name in models},
        "ours_vs_masked_max_rel_diff": max_abs_diff(session.model, result.model, x) / scale,
        "macs_reduction": round(macs_reduction, 3),
        "speedup": round(speedup, 3),
        "speedup_per_macs_reduction": round(speedup / macs_reduction, 3),
        "tp_metapruner_speedup_per_macs_reduction": round(
            (lat["masked"]["median_ms"] / lat["tp_metapruner"]["median_ms"])
            / (dense_macs / counts["tp_metapruner"][0]), 3),
        "tp_metapruner_picked_our_channels": same_state(models["ours"],
                                                        models["tp_metapruner"]),
        "tp_our_channels_bit_identical_to_ours": same_state(models["ours"],
                                                            models["tp_our_channels"]),
        "params_ours_vs_tp_metapruner": [counts["ours"][1], counts["tp_metapruner"][1]],
        "params_ours_vs_tp_our_channels": [counts["ours"][1], counts["tp_our_channels"][1]],
        "latency_ours_vs_tp_metapruner": round(
            lat["ours"]["median_ms"] / lat["tp_metapruner"]["median_ms"], 3),
        "latency_ours_vs_tp_our_channels": round(
            lat["ours"]["median_ms"] / lat["tp_our_channels"]["median_ms"], 3),
    }


def bench_slim_time(repeats: int = 5) -> dict[str, Any]:
    """Wall time of slim() per sample at the same plan (median of `repeats`)."""
    out: dict[str, Any] = {}
    for name in sample_names():
        session = open_workbench(f"sample:{name}").session
        plan, _ = session.uniform_plan(SPARSITY, "filter", "l2")
        session.apply(plan)
        times = []
        try:
            for _ in range(repeats):
                start = time.perf_counter()
                slim(session)
                times.append((time.perf_counter() - start) * 1000.0)
        except ModelError as exc:
            out[name] = {"refused": str(exc).split(";")[0]}
            continue
        out[name] = {"slim_ms": round(statistics.median(times), 2),
                     "all_ms": [round(t, 2) for t in times]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    report: dict[str, Any] = {"targets": TARGETS,
                              "resnet": bench_resnet(args.runs, args.rounds),
                              "slim_time": bench_slim_time()}
    # The machine is shared: a load above the core count means other programs competed.
    report["load_1min"] = {"before": round(load_before, 2),
                           "after": round(os.getloadavg()[0], 2), "cores": os.cpu_count()}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
