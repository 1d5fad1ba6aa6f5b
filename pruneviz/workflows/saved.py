"""A Workspace kept in a WorkspaceStore as it changes, and opened again from it.

A `Saver` links one Workspace (one model's work in a tab) to history `key` of a saved
workspace. The Workspace tells it of every change — an experiment recorded or completed,
the plan on screen, fine-tuned weights, a sensitivity or fine-tuning result, notes —
and it writes that change in one transaction. Nothing is written for a tab that only
looked: the saved workspace is made (`make_id`) on the first change of the user's.

A save that fails (a full disk, a folder gone) does not stop the work: `error` says
what went wrong, and the app shows it.

`reopen` puts a saved history back into a freshly built Workspace of the same model:
the experiment log entry for entry, the weight sets, the plan on screen on the weights
it pruned, and the results.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from torch import Tensor

from pruneviz.core.plan import Plan
from pruneviz.workflows.codec import CodecError, decode_as, encode
from pruneviz.workflows.experiments import ORIGINAL, Experiment
from pruneviz.workflows.long_jobs import FinetuneOutcome
from pruneviz.workflows.sensitivity import SensitivityResult
from pruneviz.workflows.store import SavedHistory, StoreError, WorkspaceStore
from pruneviz.workflows.workspace import Workspace

WEIGHTS = "weights:"  # tensors rows of fine-tuned weight sets: "weights:fine-tuned #1"
SENSITIVITY = "sensitivity"
FINETUNE = "finetune "  # result rows of fine-tuning runs: "finetune 1"
SAVE_ERRORS = (StoreError, CodecError, sqlite3.Error, OSError)


class Saver:
    """Saves one Workspace as history `key` (`identity`: what reopens its model; `title`:
    its model for people) of the saved workspace `make_id()` returns — made when first
    needed. `tensors` are kept with it once (uploaded weights, say)."""

    def __init__(self, store: WorkspaceStore, key: str, identity: dict[str, Any],
                 title: str, make_id: Callable[[], str],
                 tensors: dict[str, dict[str, Tensor]] | None = None) -> None:
        self.store = store
        self.key = key
        self.identity = identity
        self.title = title
        self._make_id = make_id
        self._tensors = dict(tensors or {})
        self.id: str | None = None  # the saved workspace, once something is saved
        self.error: str | None = None  # why the last save failed

    def attach(self, space: Workspace, id: str | None = None) -> None:
        """Save `space`'s changes from now on (into saved workspace `id` if given: the
        history is written whole now)."""
        space.saver = self
        if id is not None:
            self.id = id
            self._guard(lambda: self._write_all(space, id))

    # -- the Workspace's changes -------------------------------------------------------------
    def experiment(self, space: Workspace, experiment: Experiment) -> None:
        if self.id is None:
            if experiment.id > 0:  # the baseline alone is not the user's work yet
                self._start(space)
            return
        id = self.id
        self._guard(lambda: self.store.put_experiments(id, self.key, [(experiment.id,
                                                                       _row(experiment))]))

    def state(self, space: Workspace) -> None:
        if self.id is None:
            if not (space.bench.session.plan.is_empty and space.weights == ORIGINAL):
                self._start(space)
            return
        id, plan = self.id, space.bench.session.plan
        self._guard(lambda: self.store.put_state(id, self.key, plan=plan.to_json(indent=None),
                                                 weights=space.weights, head=space.head))

    def weights(self, space: Workspace, name: str, state: dict[str, Tensor]) -> None:
        if self.id is None:
            self._start(space)
            return
        id = self.id
        self._guard(lambda: self.store.put_tensors(id, self.key, WEIGHTS + name, state))

    def result(self, space: Workspace, kind: str, value: object) -> None:
        if self.id is None:
            self._start(space)
            return
        id = self.id
        self._guard(lambda: self.store.put_result(id, self.key, kind,
                                                  encode(value, self.store.write_tensors)))

    def notes(self, space: Workspace, text: str) -> None:
        if self.id is None:
            self._start(space)
            return
        id = self.id
        self._guard(lambda: self.store.put_notes(id, self.key, text))

    # -- writing -----------------------------------------------------------------------------
    def _guard(self, write: Callable[[], object]) -> None:
        try:
            write()
        except SAVE_ERRORS as exc:
            self.error = str(exc)
        else:
            self.error = None

    def _start(self, space: Workspace) -> None:
        """The first change: make the saved workspace and write the whole history."""
        def start() -> None:
            id = self._make_id()
            self._write_all(space, id)
            self.id = id
        self._guard(start)

    def _write_all(self, space: Workspace, id: str) -> None:
        store, key = self.store, self.key
        store.put_history(id, key, self.identity, self.title,
                          plan=space.bench.session.plan.to_json(indent=None),
                          weights=space.weights, head=space.head)
        store.put_experiments(id, key, [(e.id, _row(e)) for e in space.log])
        for name, state in self._tensors.items():
            store.put_tensors(id, key, name, state)
        for name, state in space.weight_sets().items():
            store.put_tensors(id, key, WEIGHTS + name, state)
        if space.sensitivity is not None:
            store.put_result(id, key, SENSITIVITY, encode(space.sensitivity,
                                                          store.write_tensors))
        for run, outcome in space.finetuned.items():
            store.put_result(id, key, f"{FINETUNE}{run}", encode(outcome, store.write_tensors))
        if space.notes:
            store.put_notes(id, key, space.notes)


def _row(experiment: Experiment) -> dict[str, Any]:
    row: dict[str, Any] = encode(experiment, _no_tensors)
    return row


def _no_tensors(state: dict[str, Tensor]) -> str:
    raise CodecError("an experiment holds no tensors")


def reopen(space: Workspace, history: SavedHistory, store: WorkspaceStore) -> list[str]:
    """Put saved `history` into `space`, a freshly built Workspace of its model: its log,
    weight sets, results, notes, and the plan on screen on the weights it pruned. Returns
    what could not be restored (a damaged part, said for people); the rest is restored.
    Raises StoreError / CodecError if the log itself cannot be read (then `space` is as
    it was)."""
    experiments = [decode_as(Experiment, row, store.read_tensors)
                   for row in history.experiments]
    problems: list[str] = []
    weight_sets: dict[str, dict[str, Tensor]] = {}
    for name, digest in history.tensors.items():
        if name.startswith(WEIGHTS):
            try:
                weight_sets[name.removeprefix(WEIGHTS)] = store.read_tensors(digest)
            except StoreError as exc:
                problems.append(f"the {name.removeprefix(WEIGHTS)} weights: {exc}")
    sensitivity: SensitivityResult | None = None
    finetuned: dict[int, FinetuneOutcome] = {}
    for kind, value in history.results.items():
        try:
            if kind == SENSITIVITY:
                sensitivity = decode_as(SensitivityResult, value, store.read_tensors)
            elif kind.startswith(FINETUNE):
                outcome = decode_as(FinetuneOutcome, value, store.read_tensors)
                finetuned[outcome.run] = outcome
        except (StoreError, CodecError) as exc:
            problems.append(f"the {kind} result: {exc}")
    saver, space.saver = space.saver, None  # restoring is not a change to save
    try:
        space.log.restore(experiments)
        for name, state in weight_sets.items():
            space.remember_weights(name, state)
        space.sensitivity = sensitivity
        space.finetuned = finetuned
        space.notes = history.notes
        plan = Plan.from_json(history.plan) if history.plan else Plan()
        weights = history.weights or ORIGINAL
        if weights != ORIGINAL and weights not in weight_sets:
            problems.append(f"the {weights} weights are missing: the plan is shown on the "
                            "original weights")
            weights = ORIGINAL
        if weights != ORIGINAL:
            space.use_weights(weights, plan)
        else:
            space.restore_plan(plan)
        if history.head is not None and 0 <= history.head < len(space.log):
            space.head = history.head
    finally:
        space.saver = saver
    return problems


__all__ = ["FINETUNE", "SENSITIVITY", "WEIGHTS", "Saver", "reopen"]
