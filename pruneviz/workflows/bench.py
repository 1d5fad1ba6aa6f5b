"""Benchmarks of the engine, each against its baseline; results are JSON-ready dicts.

Run with `python -m pruneviz bench [NAME] --json` or `python benchmarks/engine.py`.
They report medians and ratios; they assert nothing (targets are in `target`). They run
on the CPU unless given another `device` (the CLI passes its --device); on a GPU every
timed call waits for the GPU to finish.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from pruneviz.core.granularity import Granularity
from pruneviz.core.layers import model_device
from pruneviz.core.plan import LayerPlan, Plan
from pruneviz.data.samples import load_sample, sample_names
from pruneviz.data.sources import Source
from pruneviz.measure.metrics import synchronize
from pruneviz.workflows.workbench import Workbench, open_workbench

CPU = "cpu"


def _open(sample: str, device: str) -> Workbench:
    return open_workbench(Source(model=f"sample:{sample}", device=device))


def _random_plans(layer_names: list[str], count: int, seed: int) -> list[Plan]:
    rng = random.Random(seed)
    plans = []
    for _ in range(count):
        amounts = {n: round(rng.uniform(0.05, 0.95), 3) for n in layer_names}
        plans.append(Plan({n: LayerPlan(Granularity.UNSTRUCTURED, "l1", sparsity=a)
                           for n, a in amounts.items()}))
    return plans


def bench_slider(
    sample: str = "digits_resnet", moves: int = 20, repeats: int = 5, device: str = CPU
) -> dict[str, Any]:
    """Re-threshold every layer `moves` times: ours vs torch.nn.utils.prune done correctly."""
    bench = _open(sample, device)
    session = bench.session
    on = model_device(session.model)
    plans = _random_plans(session.layer_names, moves, seed=1)
    session.apply(plans[0])  # scores are computed once per session, before any slider move
    session.reset()

    def ours() -> None:
        for plan in plans:
            session.apply(plan)

    # The baseline: its own copy; for every move, restore the original weights of every
    # layer and apply l1_unstructured again (masks through forward pre-hooks).
    baseline_model: nn.Module = load_sample(sample).model.to(on)
    modules = dict(baseline_model.named_modules())
    targets = [(modules[layer.module_name], layer.param_name) for layer in session.layers]
    originals = {id(m): getattr(m, p).detach().clone() for m, p in targets}

    def theirs() -> None:
        for plan in plans:
            for (module, pname), layer in zip(targets, session.layers, strict=True):
                if torch_prune.is_pruned(module):
                    torch_prune.remove(module, pname)  # type: ignore[no-untyped-call]
                with torch.no_grad():
                    getattr(module, pname).copy_(originals[id(module)])
                amount = plan.layers[layer.name].sparsity
                torch_prune.l1_unstructured(  # type: ignore[no-untyped-call]
                    module, pname, amount=amount
                )

    ours_ms = _median_ms(ours, repeats, on) / moves
    theirs_ms = _median_ms(theirs, repeats, on) / moves
    # Same masks? Compare the last plan's weights.
    ours_weights = dict(session.model.named_parameters())
    same = all(
        torch.equal(getattr(m, p).detach() != 0, ours_weights[layer.weight].detach() != 0)
        for (m, p), layer in zip(targets, session.layers, strict=True)
    )
    return {
        "name": "slider",
        "sample": sample,
        "moves": moves,
        "layers": len(session.layers),
        "params_pruned_layers": sum(layer.params for layer in session.layers),
        "ours_ms_per_move_median": ours_ms,
        "torch_prune_ms_per_move_median": theirs_ms,
        "ratio_ours_over_baseline": ours_ms / theirs_ms,
        "masks_identical_to_baseline": same,
        "target": "ratio <= 0.05 (ours at most 1/20 of torch.nn.utils.prune's time)",
        "threads": torch.get_num_threads(),
        "device": str(on),
    }


def bench_live(samples: list[str] | None = None, moves: int = 15,
               device: str = CPU) -> dict[str, Any]:
    """Plan change + re-evaluation of the test split, per sample (median per move)."""
    results = {}
    on = torch.device(CPU)
    for sample in samples or sample_names():
        bench = _open(sample, device)
        on = model_device(bench.model)
        plans = _random_plans(bench.session.layer_names, moves + 1, seed=2)
        bench.session.apply(plans[0])
        bench.meter.evaluate()
        times = []
        for plan in plans[1:]:
            synchronize(on)
            start = time.perf_counter()
            bench.session.apply(plan)
            bench.meter.evaluate()
            synchronize(on)
            times.append((time.perf_counter() - start) * 1000.0)
        results[sample] = {
            "median_ms": statistics.median(times),
            "max_ms": max(times),
            "eval_samples": len(bench.eval_data),
        }
    return {
        "name": "live",
        "moves": moves,
        "samples": results,
        "target": "median_ms < 100 per sample on 2 cores",
        "threads": torch.get_num_threads(),
        "device": str(on),
    }


def bench_size(samples: list[str] | None = None, sparsity: float = 0.9,
               device: str = CPU) -> dict[str, Any]:
    """Sparse encoding size at 90% unstructured sparsity vs the values + 1-bit-mask limit."""
    results = {}
    for sample in samples or sample_names():
        bench = _open(sample, device)
        plan, _ = bench.session.uniform_plan(sparsity)
        bench.session.apply(plan)
        state = bench.session.model.state_dict()
        limit = 0
        for tensor in state.values():
            nonzero = int(torch.count_nonzero(tensor))
            limit += nonzero * tensor.element_size() + (tensor.numel() + 7) // 8
        sizes = bench.meter.sizes()
        results[sample] = {
            "size_dense_bytes": sizes.dense,
            "size_sparse_bytes": sizes.sparse,
            "size_gzip_bytes": sizes.gzip,
            "limit_bytes": limit,
            "sparse_over_limit": sizes.sparse / limit,
            "sparse_over_dense": sizes.sparse / sizes.dense,
            "gzip_over_dense": (sizes.gzip or 0) / sizes.dense,
            "sparsity": bench.meter.report().sparsity,
        }
    return {
        "name": "size",
        "layer_sparsity": sparsity,
        "samples": results,
        "target": "sparse_over_limit <= 1.05",
    }


def _median_ms(fn: Callable[[], None], repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


BENCHMARKS: dict[str, Callable[..., dict[str, Any]]] = {
    "slider": bench_slider,
    "live": bench_live,
    "size": bench_size,
}


def run_benchmarks(name: str | None = None, device: str = CPU) -> dict[str, Any]:
    """Run one benchmark by name, or all of them, on `device` (a --device name); returns
    {name: result}."""
    if name is not None and name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; allowed: {', '.join(BENCHMARKS)}")
    names = [name] if name else list(BENCHMARKS)
    return {n: BENCHMARKS[n](device=device) for n in names}
