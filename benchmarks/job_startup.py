"""What a long job's child process costs before it reports: the seconds from `start()`
to the first message of a sensitivity analysis (its first pass starting, on the child's
own session), in a child process and in a thread, on the digits sample and on our
ResNet-50 (64x64 inputs, random images).

    python benchmarks/job_startup.py [--models sample:digits_cnn,resnet50] [--samples 256]

Prints one JSON object: per model, how big the task sent to the child is and how long
pickling it takes, and each way the seconds to the child's process being set up (torch
imported), to the first message, and to the first point measured (the analysis is then
cancelled).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from live import source_for, synthetic_images

from pruneviz.app.worker import SensitivityWorker, session_factory
from pruneviz.data.sources import load_source
from pruneviz.workflows.long_jobs import SensitivitySpec, run_sensitivity
from pruneviz.workflows.processes import ChildTask, dumps
from pruneviz.workflows.workbench import workbench_for


class Timed(SensitivityWorker):
    """A worker that notes when its first message came."""

    first: float | None = None

    def receive(self, message: object) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        super().receive(message)


def timed(worker: Timed) -> dict[str, float | None]:
    """Seconds from start() to the child being set up, the first message and the first
    point."""
    begin = time.perf_counter()
    worker.start("l1", "unstructured", [0.5])
    ready: float | None = None
    while worker.running and worker.snapshot().done == 0:
        job = worker.job
        if ready is None and job is not None and job.info is not None:
            ready = time.perf_counter() - begin
        time.sleep(0.005)
    point = time.perf_counter() - begin
    worker.cancel()
    assert worker.wait(3600)
    error = worker.snapshot().error
    assert error is None, error
    first = None if worker.first is None else round(worker.first - begin, 2)
    return {"process_ready_s": None if ready is None else round(ready, 2),
            "first_message_s": first, "first_point_s": round(point, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="sample:digits_cnn,resnet50")
    parser.add_argument("--samples", type=int, default=256)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = str(synthetic_images(Path(tmp), samples=args.samples))
        for name in args.models.split(","):
            bench = workbench_for(load_source(source_for(name, data)))
            recipe = session_factory(bench)
            spec = SensitivitySpec(bench.eval_data, None, "l1", "unstructured", (0.5,), {})
            start = time.perf_counter()
            payload, _ = dumps(ChildTask(run_sensitivity, recipe, spec))
            pickling = time.perf_counter() - start
            figures: dict[str, object] = {"task_mb": round(len(payload) / 2**20, 1),
                                          "pickle_s": round(pickling, 2)}
            for way, child in (("child", True), ("thread", False)):
                worker = Timed(recipe, bench.eval_data, child_process=child)
                figures[way] = timed(worker)
            results[name] = figures
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
