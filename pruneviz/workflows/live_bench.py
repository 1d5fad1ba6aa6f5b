"""How live the workbench is on one model: opening it, one slider move, every slider at
once, and the memory it takes — each beside its baseline, as a JSON-ready dict.

`bench_live_model(source)` answers the questions a user asks of a real model (a sample,
or `file.py:factory` with weights and data), measured in one process:

- `open_s`: load the model and data and open a live workbench on it, as the app does
  (live subset sized from the measured forward time, baseline measured on it; its slow
  figures follow in the background); `graph_s`: Torch-Pruning's dependency graph build
  alone on the same model and input, the cost a pruning tool cannot avoid;
- `forward_ms`: one forward pass of the live evaluation set (median);
- `move_first_metric_ms`: one layer's slider moved, from the plan change to the metrics
  the Prune page shows first (median over the moves); `refine_ms`: what the background
  then measures for that plan (whole-set metric, latency, gzip size; median);
- `move_all_layers_ms`: the "all layers" filter slider dragged, 5 points a move (every
  layer's amount changes at once; masks re-applied, nothing measured), against
  torch.nn.utils.prune re-pruning every layer correctly (originals restored, masks
  computed again), timed interleaved; `jump_all_layers_ms` the same for jumps between
  random amounts (10-70%), where much more of every layer changes;
- `rss_mb` (resident memory the loaded model and open workbench added, after all the
  moves and refinements, before the torch.nn.utils.prune baseline makes its own copy;
  every reading after freed memory is given back, as the app does),
  `session_rss_mb` (what the workbench added beyond the loaded model) and `weights_mb`
  (the weights).

Nothing here asserts: the targets are in `targets` and a caller compares.
"""

from __future__ import annotations

import copy
import random
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from pruneviz.core.granularity import Granularity
from pruneviz.core.layers import eval_mode
from pruneviz.core.plan import LayerPlan, Plan
from pruneviz.data.sources import Source, load_source
from pruneviz.measure.machine import release_memory
from pruneviz.measure.metrics import evaluate, synchronize
from pruneviz.measure.timing import Speedup, speedup
from pruneviz.workflows.workbench import Workbench, workbench_for

TARGETS = {
    "move_first_metric_ms": "<= 1.5 * forward_ms + 50",
    "move_all_layers_ratio": "<= 0.05 (at least 20x faster than torch.nn.utils.prune)",
    "open_s": "<= 3 * (graph_s + forward_ms / 1000)",
    "session_rss_mb": "<= 2.5 * weights_mb",
}


def target_checks(result: dict[str, Any]) -> dict[str, bool | None]:
    """Whether each target of `TARGETS` is met by a `bench_live_model` result (None: a
    baseline figure is missing)."""
    forward, graph = result["forward_ms"], result["graph_s"]
    ratio = result["move_all_layers_ratio"]
    return {
        "move_first_metric_ms": result["move_first_metric_ms"] <= 1.5 * forward + 50,
        "move_all_layers_ratio": None if ratio is None else ratio <= 0.05,
        "open_s": None if graph is None else result["open_s"] <= 3 * (graph + forward / 1000),
        "session_rss_mb": result["session_rss_mb"] <= 2.5 * result["weights_mb"],
    }


def rss_mb() -> float:
    """This process's resident memory now (Linux /proc), else its peak (getrusage), once
    the memory it freed is given back (as the app does after opening and measuring):
    what it holds, not what the allocator kept for reuse."""
    release_memory()
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ms(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)  # on a GPU: the work itself, not only its launch
    return (time.perf_counter() - start) * 1000.0


def graph_seconds(model: nn.Module, example: Tensor | tuple[Tensor, ...]) -> float | None:
    """Seconds Torch-Pruning takes to build `model`'s dependency graph (None if it fails)."""
    import torch_pruning as tp  # the reference implementation; imported only to time it

    subject = copy.deepcopy(model).eval()
    start = time.perf_counter()
    try:
        tp.DependencyGraph().build_dependency(subject, example_inputs=example)
    except Exception:  # noqa: BLE001 - the baseline failing is a result, reported as None
        return None
    return time.perf_counter() - start


def _one_layer_plans(bench: Workbench, moves: int) -> tuple[str, list[Plan]]:
    """Plans moving the slider of the layer with the most weights, to `moves` amounts."""
    session = bench.session
    layer = max(session.layers, key=lambda item: item.params)
    amounts = [0.3 + 0.6 * i / max(moves - 1, 1) for i in range(moves)]
    plans = [session.stamp(Plan({layer.name: LayerPlan(Granularity.UNSTRUCTURED, "l1",
                                                         sparsity=round(a, 4))}))
             for a in amounts]
    return layer.name, plans


def _all_layer_plans(bench: Workbench, amounts: list[float]) -> list[Plan]:
    """Plans of the 'all layers' slider at `amounts`: every layer's filter amount at once
    (coupled layers share their group's entry; layers that cannot lose filters are
    pruned unstructured instead)."""
    session = bench.session
    plans = []
    for amount in amounts:
        plan, _ = session.uniform_plan(amount, Granularity.FILTER, "l1")
        missing = {layer.name: LayerPlan(Granularity.UNSTRUCTURED, "l1", sparsity=amount)
                   for layer in session.layers if layer.name not in plan.layers}
        plans.append(session.stamp(Plan({**plan.layers, **missing})))
    return plans


def _interleaved(bench: Workbench, theirs_move: Callable[[Plan], None], plans: list[Plan],
                 device: torch.device) -> tuple[float, float, Speedup]:
    """Medians (ms) of our session and torch.nn.utils.prune going through `plans` in
    order, one move each in turn (the first plan only sets both up), and our speed-up
    over torch's with its interval (`timing.speedup`: each plan's two moves are a pair)."""
    bench.session.apply(plans[0])
    theirs_move(plans[0])
    ours, theirs = [], []
    for plan in plans[1:]:
        ours.append(_ms(lambda: bench.session.apply(plan), device))  # noqa: B023
        theirs.append(_ms(lambda: theirs_move(plan), device))  # noqa: B023
    return statistics.median(ours), statistics.median(theirs), speedup(ours, theirs)


def _torch_reprune(bench: Workbench) -> Callable[[Plan], None]:
    """torch.nn.utils.prune on its own copy, done correctly for a slider move: every layer's
    original weight restored, then ln_structured (filters) or l1_unstructured again."""
    model = copy.deepcopy(bench.pristine)
    modules = dict(model.named_modules())
    targets = {layer.name: (modules[layer.module_name], layer.param_name)
               for layer in bench.session.layers}
    originals = {name: getattr(m, p).detach().clone() for name, (m, p) in targets.items()}

    def move(plan: Plan) -> None:
        for name, (module, pname) in targets.items():
            if torch_prune.is_pruned(module):
                torch_prune.remove(module, pname)  # type: ignore[no-untyped-call]
            with torch.no_grad():
                getattr(module, pname).copy_(originals[name])
            entry = plan.layers.get(name)
            if entry is None:
                continue
            amount = entry.sparsity or 0.0
            if entry.granularity is Granularity.FILTER:
                torch_prune.ln_structured(  # type: ignore[no-untyped-call]
                    module, pname, amount=amount, n=1, dim=0)
            else:
                torch_prune.l1_unstructured(  # type: ignore[no-untyped-call]
                    module, pname, amount=amount)

    return move


def bench_live_model(source: Source, *, moves: int = 5, seed: int = 0) -> dict[str, Any]:
    """Measure how live the workbench is on `source` (see the module docstring)."""
    torch.manual_seed(seed)
    import torch_pruning  # noqa: F401 - imported before the baseline memory is read

    rss_before = rss_mb()
    start = time.perf_counter()
    loaded = load_source(source)
    load_s = time.perf_counter() - start
    rss_loaded = rss_mb()
    bench = workbench_for(loaded, live=True)
    open_s = time.perf_counter() - start
    rss_open = rss_mb() - rss_before
    weights_mb = sum(p.numel() * p.element_size() for p in loaded.model.parameters()) / 2**20

    graph_s = graph_seconds(loaded.model, loaded.example_input)
    with eval_mode(bench.model):
        forward = [_ms(lambda: evaluate(bench.model, bench.eval_data), loaded.device)
                   for _ in range(3)]
    forward_ms = statistics.median(forward)

    layer, plans = _one_layer_plans(bench, moves)
    def move_and_measure(plan: Plan) -> None:  # what the Prune page does on a slider move
        bench.session.apply(plan)
        bench.meter.report(gzip=False)

    first_metric, refine = [], []
    for plan in plans:
        first_metric.append(_ms(lambda: move_and_measure(plan), loaded.device))  # noqa: B023
        refine.append(_ms(bench.meter.finish, loaded.device))  # what the background measures
    bench.session.reset()

    rng = random.Random(seed)
    drag = _all_layer_plans(bench, [round(0.3 + 0.05 * i, 2) for i in range(moves + 1)])
    jumps = _all_layer_plans(bench, [round(rng.uniform(0.1, 0.7), 3) for _ in range(moves + 1)])
    for plan in drag + jumps:  # every table built, every slider moved: what a session holds
        bench.session.apply(plan)
    rss_now = rss_mb()  # before the baseline's own model copy and masks exist
    rss_end, session_rss = rss_now - rss_before, rss_now - rss_loaded
    theirs_move = _torch_reprune(bench)
    ours_ms, theirs_ms, drag_gain = _interleaved(bench, theirs_move, drag, loaded.device)
    jump_ms, theirs_jump_ms, jump_gain = _interleaved(bench, theirs_move, jumps, loaded.device)
    bench.session.reset()
    result: dict[str, Any] = {
        "name": "live_model",
        "model": source.describe(),
        "prunable_layers": len(bench.session.layers),
        "params": int(sum(p.numel() for p in loaded.model.parameters())),
        "eval_samples": len(bench.eval_data),
        "load_s": load_s,
        "open_s": open_s,
        "graph_s": graph_s,
        "forward_ms": forward_ms,
        "moved_layer": layer,
        "move_first_metric_ms": statistics.median(first_metric),
        "move_first_metric_max_ms": max(first_metric),
        "refine_ms": statistics.median(refine),
        "move_all_layers_ms": ours_ms,
        "torch_prune_all_layers_ms": theirs_ms,
        "move_all_layers_ratio": ours_ms / theirs_ms if theirs_ms else None,
        "move_all_layers_speedup": drag_gain.to_dict(),
        "jump_all_layers_ms": jump_ms,
        "torch_prune_jump_all_layers_ms": theirs_jump_ms,
        "jump_all_layers_ratio": jump_ms / theirs_jump_ms if theirs_jump_ms else None,
        "jump_all_layers_speedup": jump_gain.to_dict(),
        "rss_mb": rss_end,
        "session_rss_mb": session_rss,
        "rss_after_open_mb": rss_open,
        "tables_mb": bench.session.memory().tables / 2**20,
        "weights_mb": weights_mb,
        "moves": moves,
        "threads": torch.get_num_threads(),
        "device": str(loaded.device),
        "targets": TARGETS,
    }
    result["meets"] = target_checks(result)
    return result


__all__ = ["TARGETS", "bench_live_model", "graph_seconds", "rss_mb", "target_checks"]
