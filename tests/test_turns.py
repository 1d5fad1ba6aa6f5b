"""Taking turns at the cores (measure/machine.py): the passes of one process never overlap,
a waiting interactive pass goes before background ones, and a pass inside a pass does not
wait for itself."""

from __future__ import annotations

import threading
import time

import torch
from torch import Tensor, nn

from pruneviz.data.tasks import Task
from pruneviz.data.tensors import TensorData
from pruneviz.errors import Cancelled
from pruneviz.measure.machine import as_background, compute_turn
from pruneviz.measure.metrics import evaluate
from pruneviz.measure.timing import time_against

WAIT = 10.0


class Overlaps(nn.Module):
    """A model whose forward pass takes a while and notes how many passes run at once."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.lock = threading.Lock()
        self.inside = 0
        self.most = 0

    def forward(self, x: Tensor) -> Tensor:
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        time.sleep(0.005)
        with self.lock:
            self.inside -= 1
        return self.fc(x)


def test_passes_of_many_threads_never_overlap() -> None:
    model = Overlaps()
    data = TensorData(torch.randn(64, 4), torch.randint(0, 3, (64,)), Task.CLASSIFICATION)
    example = torch.randn(2, 4)

    def evaluating() -> None:
        evaluate(model, data, batch_size=8)

    def timing() -> None:
        as_background()
        time_against([model], model, example, runs=4, warmup=1)

    threads = [threading.Thread(target=t) for t in (evaluating, evaluating, timing, timing)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert model.most == 1


def test_a_waiting_interactive_pass_goes_before_background_ones() -> None:
    order: list[str] = []
    holding, release = threading.Event(), threading.Event()

    def first() -> None:
        as_background()
        with compute_turn():
            holding.set()
            release.wait(WAIT)
        order.append("first")

    def background() -> None:
        as_background()
        with compute_turn():
            order.append("background")

    def interactive() -> None:
        with compute_turn():
            order.append("interactive")

    threads = [threading.Thread(target=first)]
    threads[0].start()
    assert holding.wait(WAIT)
    for target in (background, interactive):  # the background one asked first
        threads.append(threading.Thread(target=target))
        threads[-1].start()
        time.sleep(0.05)
    release.set()
    for thread in threads:
        thread.join(WAIT)
    assert order == ["first", "interactive", "background"]


def test_a_pass_inside_a_pass_does_not_wait_for_itself() -> None:
    done = threading.Event()

    def nested() -> None:
        with compute_turn(), compute_turn():
            done.set()

    thread = threading.Thread(target=nested, daemon=True)
    thread.start()
    assert done.wait(WAIT)
    with compute_turn():  # and the turn was given back
        pass


def test_a_waiting_background_pass_stops_without_waiting_for_its_turn() -> None:
    """A page stopping a refinement must not wait while other tabs' passes hold the
    cores: the waiting background pass sees its stop flag and gives up."""
    holding, release, stop = threading.Event(), threading.Event(), threading.Event()
    outcome: list[str] = []

    def interactive() -> None:
        with compute_turn():
            holding.set()
            release.wait(WAIT)

    def background() -> None:
        as_background(stop.is_set)
        try:
            with compute_turn():
                outcome.append("ran")
        except Cancelled:
            outcome.append("cancelled")

    holder = threading.Thread(target=interactive)
    holder.start()
    assert holding.wait(WAIT)
    waiter = threading.Thread(target=background)
    waiter.start()
    time.sleep(0.1)
    stop.set()
    waiter.join(2.0)
    assert outcome == ["cancelled"]  # while the interactive pass still holds the cores
    release.set()
    holder.join(WAIT)
