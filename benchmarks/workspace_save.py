"""What saving a tab's work as it happens costs a slider move.

A slider move on the Prune page applies a plan and measures it live (Workspace.measure_live),
which records an experiment; with a saved workspace that also writes the experiment and
the plan on screen to SQLite (two transactions). This times moves on two workspaces of
the same model, one saved and one not, interleaved move for move, and prints JSON:
the median move with and without saving, their ratio, and the median cost of the writes
alone (timed around the Saver's calls).

    python benchmarks/workspace_save.py [--model sample:digits_resnet] [--moves 40]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from pruneviz.core.plan import Plan
from pruneviz.data.sources import Source, load_source
from pruneviz.workflows.saved import Saver
from pruneviz.workflows.store import WorkspaceStore
from pruneviz.workflows.workbench import build_workbench
from pruneviz.workflows.workspace import Workspace


def workspace(model: str) -> Workspace:
    loaded = load_source(Source(model=model))
    bench = build_workbench(model, loaded.model, loaded.example_input, loaded.eval_data,
                            loaded.train_data, live=True)
    return Workspace(bench)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="sample:digits_resnet")
    parser.add_argument("--moves", type=int, default=40)
    args = parser.parse_args()
    plain, saved = workspace(args.model), workspace(args.model)
    with tempfile.TemporaryDirectory() as folder:
        store = WorkspaceStore(Path(folder))
        saver = Saver(store, "key", {"model": args.model}, args.model,
                      lambda: store.create("benchmark"))
        saver.attach(saved)
        writes: list[float] = []
        for name in ("experiment", "state"):  # time the writes alone, around the Saver
            inner = getattr(saver, name)

            def timed(*a: Any, _inner: Any = inner) -> None:
                start = time.perf_counter()
                _inner(*a)
                writes.append((time.perf_counter() - start) * 1000)
            setattr(saver, name, timed)
        times: dict[str, list[float]] = {"plain": [], "saved": []}
        for move in range(args.moves):
            amount = 0.05 + 0.9 * (move % 19) / 19
            for name, space in (("plain", plain), ("saved", saved))[:: 1 if move % 2 else -1]:
                session = space.bench.session
                plan = session.uniform_plan(amount + move * 1e-4, "unstructured", "l1")[0]
                start = time.perf_counter()
                session.apply(session.stamp(plan))
                space.measure_live()
                times[name].append((time.perf_counter() - start) * 1000)
                space.refiner.stop()
        plain.restore_plan(Plan())
        result = {
            "model": args.model, "moves": args.moves,
            "move_ms_median": {k: round(statistics.median(v), 3) for k, v in times.items()},
            "ratio_saved_to_plain": round(statistics.median(times["saved"])
                                          / statistics.median(times["plain"]), 3),
            "save_writes_ms_median": round(statistics.median(writes), 3),
            "save_writes_ms_p90": round(sorted(writes)[int(0.9 * (len(writes) - 1))], 3),
            "saved_experiments": store.saved()[0].experiments,
            "save_error": saver.error,
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
