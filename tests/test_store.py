"""Saved workspaces: the store (SQLite + tensors files), the codec of our records, and a
Workspace saved as it changes and reopened identical — also after a kill -9."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import torch

from pruneviz.app.worker import FinetuneJob, FinetuneWorker, session_factory
from pruneviz.core.plan import Plan
from pruneviz.core.session import PruningSession
from pruneviz.workflows.codec import CodecError, decode_as, encode
from pruneviz.workflows.experiments import ORIGINAL, Experiment
from pruneviz.workflows.finetune import FinetuneRecipe
from pruneviz.workflows.finetune_job import LR_MASKED
from pruneviz.workflows.long_jobs import FinetuneOutcome
from pruneviz.workflows.saved import Saver, reopen
from pruneviz.workflows.sensitivity import SensitivityResult, SensitivityRun
from pruneviz.workflows.store import StoreError, WorkspaceStore
from pruneviz.workflows.workbench import Workbench
from pruneviz.workflows.workspace import Workspace
from tests.fixtures.sessions import bench_for

IDENTITY = {"model": "sample:digits_mlp", "weights": None, "subset": None}


def saved_space(store: WorkspaceStore, made: list[str] | None = None) -> Workspace:
    """A workspace on digits_mlp saved in `store` (the saved workspace made on first use)."""
    space = Workspace(bench_for("digits_mlp"))

    def make_id() -> str:
        id = store.create("my work")
        if made is not None:
            made.append(id)
        return id

    Saver(store, "key-1", IDENTITY, "digits MLP", make_id).attach(space)
    return space


def move(space: Workspace, amount: float, layer: str | None = None) -> None:
    """What a Prune slider does: apply a plan, measure it live (recorded)."""
    session = space.bench.session
    if layer is None:
        plan = session.uniform_plan(amount, "unstructured", "l1")[0]
    else:
        plan = session.uniform_plan(amount, "unstructured", "l1")[0]
        plan = Plan(layers={layer: plan.layers[layer]})
    session.apply(session.stamp(plan))
    space.measure_live()
    space.settle()


def test_the_store_keeps_renames_copies_and_deletes(tmp_path: Path) -> None:
    store = WorkspaceStore(tmp_path)
    id = store.create("  first   try ")
    store.put_history(id, "k", {"model": "m"}, "M", plan=None, weights=None, head=None)
    store.put_experiments(id, "k", [(0, {"id": 0, "x": 1.5}), (1, {"id": 1, "x": 2})])
    digest = store.put_tensors(id, "k", "weights:a", {"w": torch.arange(6.0).view(2, 3)})
    store.put_result(id, "k", "sensitivity", {"levels": [0.5]})
    saved = store.history(id, "k")
    assert saved is not None
    assert saved.experiments == [{"id": 0, "x": 1.5}, {"id": 1, "x": 2}]
    assert torch.equal(store.read_tensors(saved.tensors["weights:a"])["w"],
                       torch.arange(6.0).view(2, 3))
    assert saved.results == {"sensitivity": {"levels": [0.5]}}
    [info] = store.saved()
    assert (info.name, info.models, info.experiments) == ("first try", ("M",), 2)

    copy = store.duplicate(id, "second")
    store.rename(id, "renamed")
    assert {s.name for s in store.saved()} == {"renamed", "second"}
    store.delete(id)
    assert [s.name for s in store.saved()] == ["second"]
    assert store.read_tensors(digest)  # the copy still uses it
    store.delete(copy)
    assert not list((tmp_path / "tensors").iterdir())  # no row names it: removed
    assert store.check() == "ok"
    with pytest.raises(StoreError, match="needs a name"):
        store.create("   ")
    with pytest.raises(StoreError, match="gone"):
        store.rename(id, "x")


def test_damaged_tensors_are_refused(tmp_path: Path) -> None:
    store = WorkspaceStore(tmp_path)
    digest = store.write_tensors({"w": torch.ones(3)})
    path = tmp_path / "tensors" / f"{digest}.safetensors"
    path.write_bytes(path.read_bytes()[:-1] + b"\x01")
    with pytest.raises(StoreError, match="damaged"):
        store.read_tensors(digest)
    with pytest.raises(StoreError, match="not a tensors file"):
        store.read_tensors("../../etc/passwd")


def test_the_codec_rebuilds_our_records_and_refuses_what_does_not_fit(bench: Workbench) -> None:
    session = bench.session
    result = SensitivityRun(session, bench.eval_data, granularity="filter",
                            levels=(0.25, 0.5)).run()
    stored: dict[str, dict[str, torch.Tensor]] = {}

    def put(state: dict[str, torch.Tensor]) -> str:
        stored[str(len(stored))] = state
        return str(len(stored) - 1)

    text = json.dumps(encode(result, put))  # plain JSON
    assert decode_as(SensitivityResult, json.loads(text), stored.__getitem__) == result
    damaged = json.loads(text)
    damaged["levels"] = ["half"]
    with pytest.raises(CodecError, match=r"SensitivityResult\.levels\[0\]"):
        decode_as(SensitivityResult, damaged, stored.__getitem__)
    damaged = json.loads(text)
    damaged["granularity"] = "everything"
    with pytest.raises(CodecError, match="granularity"):
        decode_as(SensitivityResult, damaged, stored.__getitem__)


def finetuned(bench: Workbench) -> FinetuneOutcome:
    assert bench.train_data is not None
    runner = FinetuneWorker(session_factory(bench), bench.pristine, bench.train_data,
                            bench.eval_data, latency_runs=1)
    plan = bench.session.uniform_plan(0.5, "unstructured", "l1")[0]
    runner.start(FinetuneJob("oneshot", "one-shot", FinetuneRecipe(epochs=1, lr=LR_MASKED,
                                                                   max_steps=4), plan=plan))
    assert runner.wait(60)
    outcome = runner.snapshot().outcome
    assert outcome is not None, runner.snapshot().error
    return outcome


def test_a_workspace_is_saved_as_it_changes_and_reopens_identical(tmp_path: Path) -> None:
    store = WorkspaceStore(tmp_path)
    made: list[str] = []
    space = saved_space(store, made)
    space.settle()
    assert not made  # only looking saves nothing
    assert not store.saved()

    move(space, 0.3)
    assert len(made) == 1  # the first change made the saved workspace
    move(space, 0.6)
    space.restore_experiment(1)  # back to 30%, then a branch from it
    move(space, 0.45, layer="fc1")
    outcome = finetuned(space.bench)
    space.remember_weights(outcome.weights, outcome.result.state)
    space.log.record(outcome.report, outcome.plan, outcome.job.label, outcome.weights,
                     parent=space.head)
    space.keep_finetune(outcome)
    space.use_weights(outcome.weights, outcome.plan)
    result = SensitivityRun(space.bench.session, space.bench.eval_data,
                            granularity="unstructured", levels=(0.5,)).run()
    space.keep_sensitivity(result)
    space.set_notes("try filters next")
    space.settle()

    parents = {e.id: e.parent for e in space.log}
    assert [parents[1], parents[2], parents[3]] == [0, 1, 1]  # a branch from #1

    again = Workspace(bench_for("digits_mlp"))
    history = store.history(made[0], "key-1")
    assert history is not None
    assert reopen(again, history, store) == []
    assert list(again.log) == list(space.log)  # every entry, every number
    assert again.weights == outcome.weights
    assert again.bench.session.plan.key() == space.bench.session.plan.key()
    assert again.head == space.head
    assert again.sensitivity == result
    assert again.notes == "try filters next"
    kept = again.finetuned[outcome.run]
    assert kept.summary == outcome.summary
    assert kept.report == outcome.report
    for name, value in outcome.result.state.items():
        assert torch.equal(kept.result.state[name], value)  # bit for bit
    for name, value in space.bench.session.model.state_dict().items():
        assert torch.equal(again.bench.session.model.state_dict()[name], value)


def test_a_save_that_fails_says_so_and_the_work_goes_on(tmp_path: Path) -> None:
    store = WorkspaceStore(tmp_path)
    space = saved_space(store)
    move(space, 0.3)
    saver = space.saver
    assert isinstance(saver, Saver)
    assert saver.error is None
    store.delete(store.saved()[0].id)  # deleted in another tab
    move(space, 0.5)
    assert saver.error is not None
    assert "gone" in saver.error
    assert len(space.log) == 3  # the work itself goes on


def test_an_exported_workspace_imports_whole_and_hostile_files_are_refused(
        tmp_path: Path) -> None:
    store = WorkspaceStore(tmp_path / "a")
    made: list[str] = []
    space = saved_space(store, made)
    move(space, 0.4)
    space.remember_weights("mine", {k: v.clone() for k, v in
                                    space.bench.pristine.state_dict().items()})
    data = store.export_bytes(made[0])

    other = WorkspaceStore(tmp_path / "b")
    id = other.import_bytes(data, "work.pvz")
    assert other.history(id, "key-1") == store.history(made[0], "key-1")

    with pytest.raises(StoreError, match="not a zip"):
        other.import_bytes(b"not a zip", "x.pvz")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive, zipfile.ZipFile(io.BytesIO(data)) as source:
        document = json.loads(source.read("workspace.json"))
        digest = next(iter(document["histories"][0]["tensors"].values()))
        document["histories"][0]["tensors"]["weights:mine"] = "../../../etc/passwd"
        archive.writestr("workspace.json", json.dumps(document))
        archive.writestr(f"tensors/{digest}.safetensors", b"junk")
    with pytest.raises(StoreError, match="not a tensors file"):
        other.import_bytes(out.getvalue(), "evil.pvz")
    assert len(other.saved()) == 1  # nothing added by the refused ones


WRITER = textwrap.dedent("""
    import sys, torch
    from pruneviz.workflows.store import WorkspaceStore
    store = WorkspaceStore(sys.argv[1])
    id = store.create("busy")
    store.put_history(id, "k", {}, "t", plan=None, weights=None, head=None)
    n = 0
    print("ready", flush=True)
    while True:
        store.put_experiments(id, "k", [(n, {"id": n, "values": list(range(200))})])
        if n % 10 == 0:
            store.put_tensors(id, "k", f"weights:{n}", {"w": torch.full((2000,), float(n))})
        n += 1
""")


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.05, 0.2, 0.5, 1.0])
def test_a_kill_during_writes_loses_at_most_the_change_in_flight(tmp_path: Path,
                                                                 delay: float) -> None:
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)],
                             stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert child.stdout is not None
    assert child.stdout.readline().strip() == b"ready"
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait(10)

    store = WorkspaceStore(tmp_path)
    assert store.check() == "ok"
    [info] = store.saved()
    history = store.history(info.id, "k")
    assert history is not None
    ids = [row["id"] for row in history.experiments]
    assert ids == list(range(len(ids)))  # no gap: every committed change is there
    assert all(row["values"] == list(range(200)) for row in history.experiments)
    for name, digest in history.tensors.items():  # every named tensors file is whole
        assert store.read_tensors(digest)["w"][0].item() == float(name.split(":")[1])
    store.remove_unused_tensors()  # a file written but not yet named goes
    named = set(history.tensors.values())
    assert {p.stem for p in (tmp_path / "tensors").iterdir()} == named


def test_the_experiment_row_round_trips_through_json() -> None:
    experiment = Experiment(3, "x", "{}", "k", "accuracy", 0.1 + 0.2, 0.5, 10, 5, 0.5, 100,
                            50, 40, 20, None, 1.25, ORIGINAL, parent=1)
    row = json.loads(json.dumps(encode(experiment, lambda s: "")))
    assert decode_as(Experiment, row, lambda r: {}) == experiment  # floats bit for bit


def test_a_copy_of_a_saved_log_is_not_saved(tmp_path: Path) -> None:
    """An export snapshots the log (deepcopy, then pickled to its worker): the copy
    holds the entries, not the saved workspace it reports to."""
    import copy
    import pickle

    store = WorkspaceStore(tmp_path)
    space = saved_space(store)
    move(space, 0.3)
    snapshot = copy.deepcopy(space.log)
    assert snapshot.listener is None
    assert list(pickle.loads(pickle.dumps(snapshot))) == list(space.log)
    assert space.log.listener is not None


@pytest.mark.parametrize("name", ["resnet50", "densenet121", "vit_timm", "bert", "llama_mha",
                                  "stacked_lstm"])
def test_real_architectures_plans_and_weights_round_trip(tmp_path: Path, name: str) -> None:
    """The fixture zoo (torchvision / timm / Hugging Face style): a filter plan (heads,
    coupled residual and concatenated channels, GQA, LSTM units) and the pruned model's
    weights (every dtype and buffer) come back from the store exactly."""
    from tests.test_zoo import TINY

    torch.manual_seed(0)
    session = PruningSession(TINY[name][0]().eval(), TINY[name][1]())
    plan = session.stamp(session.uniform_plan(0.5, "filter", "l1")[0])
    session.apply(plan)
    store = WorkspaceStore(tmp_path)
    id = store.create(name)
    store.put_history(id, "k", {"model": name}, name, plan=plan.to_json(indent=None),
                      weights=ORIGINAL, head=0)
    state = session.model.state_dict()
    store.put_tensors(id, "k", "weights:pruned", state)
    again = WorkspaceStore(tmp_path).history(id, "k")
    assert again is not None
    assert again.plan is not None
    assert Plan.from_json(again.plan).key() == plan.key()
    back = store.read_tensors(again.tensors["weights:pruned"])
    assert back.keys() == state.keys()
    for key, value in state.items():
        assert back[key].dtype == value.dtype
        assert torch.equal(back[key], value), key
