"""Saved workspaces in the app: a tab's work is saved as it happens, a new session (as after
a server restart) reopens it identical, and the Workspaces page renames, duplicates,
deletes (after asking), downloads and adds them; Trade-offs draws the history tree."""

from __future__ import annotations

import torch
from streamlit.testing.v1 import AppTest
from test_data_upload_page import npz, upload

from pruneviz.app.keys import WS_CONFIRM_KEY, widget_key
from pruneviz.data.tensors import load_digits
from pruneviz.output.tradeoff_figures import history_lanes
from pruneviz.workflows.store import WorkspaceStore, default_root
from tests.fixtures.apptest import start, workspace_of

MODEL = "sample:digits_cnn"
PRUNE = "app_pages/prune.py"
WORKSPACES = "app_pages/workspaces.py"


def store() -> WorkspaceStore:
    return WorkspaceStore(default_root())


def pruned_tab() -> AppTest:
    """A tab that moved two sliders on the Prune page, then restored the first move and
    branched from it."""
    at = start(MODEL, PRUNE)
    at.slider(key=widget_key("sp", "conv1")).set_value(70).run()
    at.slider(key=widget_key("sp", "fc")).set_value(90).run()
    workspace_of(at).settle()
    at.switch_page("app_pages/tradeoffs.py").run()
    at.selectbox(key="pv_tradeoff_choice").set_value(1).run()
    at.button(key="pv_restore").click().run()
    at.switch_page(PRUNE).run()
    at.slider(key=widget_key("sp", "conv2")).set_value(50).run()
    workspace_of(at).settle()
    assert not at.exception, at.exception
    return at


def test_a_new_session_reopens_the_saved_work_identical() -> None:
    at = pruned_tab()
    space = workspace_of(at)
    parents = [e.parent for e in space.log]
    assert parents == [None, 0, 1, 1]  # #3 branched from #1
    [saved] = store().saved()
    assert saved.experiments == 4

    again = start(MODEL)  # a new session: what a restarted server gives
    reopen = [b for b in again.sidebar.button if b.label.startswith("Reopen")]
    assert len(reopen) == 1
    reopen[0].click().run()
    again.switch_page(PRUNE).run()
    assert not again.exception, again.exception
    other = workspace_of(again)
    assert list(other.log) == list(space.log)  # every configuration and number
    assert other.bench.session.plan.key() == space.bench.session.plan.key()
    assert again.slider(key=widget_key("sp", "conv2")).value == 50
    assert other.head == space.head


def test_the_workspaces_page_renames_copies_and_deletes_after_asking() -> None:
    at = pruned_tab()
    at.switch_page(WORKSPACES).run()
    assert not at.exception, at.exception
    assert "Saved as" in " ".join(m.value for m in at.markdown)
    duplicate = next(b for b in at.button if b.label == "Duplicate")
    duplicate.click().run()
    names = sorted(s.name for s in store().saved())
    assert len(names) == 2
    assert names[1].endswith("(copy)")
    copy_id = next(s.id for s in store().saved() if s.name.endswith("(copy)"))
    at.selectbox[0].set_value(copy_id).run()
    at.text_input(key=f"pv_ws_name:{copy_id}").set_value("first try")
    next(b for b in at.button if b.label == "Rename").click().run()
    assert {s.name for s in store().saved()} >= {"first try"}
    at.selectbox[0].set_value(copy_id).run()
    next(b for b in at.button if b.label == "Delete…").click().run()
    assert at.session_state[WS_CONFIRM_KEY] == copy_id
    assert len(store().saved()) == 2  # asked, not deleted yet
    next(b for b in at.button if b.label == "Keep it").click().run()
    assert len(store().saved()) == 2
    next(b for b in at.button if b.label == "Delete…").click().run()
    next(b for b in at.button if b.label == "Delete it").click().run()
    assert [s.name for s in store().saved()] != ["first try"]
    assert len(store().saved()) == 1
    assert not at.exception, at.exception


def test_a_workspace_file_round_trips_and_a_bad_one_is_refused() -> None:
    at = pruned_tab()
    saved = store().saved()[0]
    data = store().export_bytes(saved.id)
    added = store().import_bytes(data, "mine.pvz")
    assert store().history(added, store().current(saved.id) or "") is not None
    at.switch_page(WORKSPACES).run()
    assert not at.exception, at.exception
    assert len(store().saved()) == 2


def test_trade_offs_draws_the_history_tree_with_its_branch() -> None:
    at = pruned_tab()
    at.switch_page("app_pages/tradeoffs.py").run()
    assert not at.exception, at.exception
    lanes = history_lanes(list(workspace_of(at).log))
    assert lanes[1] == lanes[2] == lanes[0]  # the first line
    assert lanes[3] != lanes[2]  # the branch from #1
    assert "History" in [h.value for h in at.subheader]


def test_a_fresh_tab_saves_nothing_until_it_changes_something() -> None:
    start(MODEL, PRUNE)
    assert store().saved() == []


def test_work_on_uploaded_data_reopens_with_that_data() -> None:
    """Data uploaded on the Model page is kept with the saved history: a new session
    reopens the work on it without the file."""
    test = load_digits("test")
    at = start(MODEL, "app_pages/model.py")
    content = npz(test.x[:200].numpy(), test.y[:200].numpy())
    upload(at, "evaluation", "few.npz", content)
    at.switch_page(PRUNE).run()
    at.slider(key=widget_key("sp", "conv1")).set_value(60).run()
    space = workspace_of(at)
    space.settle()
    assert len(space.bench.eval_data) == 200

    again = start(MODEL)
    next(b for b in again.sidebar.button if b.label.startswith("Reopen")).click().run()
    again.switch_page(PRUNE).run()
    assert not again.exception, again.exception
    other = workspace_of(again)
    assert len(other.bench.eval_data) == 200
    assert torch.equal(other.bench.eval_data.x, space.bench.eval_data.x)
    assert list(other.log) == list(space.log)


def test_results_are_saved_as_jobs_finish_without_a_page_looking() -> None:
    """A sensitivity analysis and a fine-tuning run are kept in the tab's saved workspace
    as they end (in the job's thread), not when a page next looks: a server stopped
    right after still has them."""
    from pruneviz.app.keys import BENCH_ID_KEY, FINETUNE_WORKERS_KEY, FT_MAX_STEPS_KEY, WORKERS_KEY

    at = start(MODEL, "app_pages/sensitivity.py", plan=(0.5, "unstructured"))
    at.button(key="pv_sens_run").click().run()
    key = str(at.session_state[BENCH_ID_KEY])
    analysis = at.session_state[WORKERS_KEY][key]
    assert analysis.wait(120)  # no rerun of the page while it runs or after
    space = workspace_of(at)
    assert space.sensitivity is not None
    assert space.sensitivity.complete

    at.switch_page("app_pages/finetune.py").run()
    at.number_input(key=FT_MAX_STEPS_KEY).set_value(10).run()
    at.button(key="pv_ft_run").click().run()
    tuner = at.session_state[FINETUNE_WORKERS_KEY][key]
    assert tuner.wait(180)
    assert not at.exception, at.exception
    assert list(space.finetuned) == [1]
    assert any(e.weights == "fine-tuned #1" for e in space.log)
    [saved] = store().saved()
    history = store().history(saved.id, store().current(saved.id) or "")
    assert history is not None
    assert {"sensitivity", "finetune 1"} <= set(history.results)
    assert any(row["weights"] == "fine-tuned #1" for row in history.experiments)
