"""Data given in the browser, through Streamlit's AppTest: the Model page's evaluation and
training data uploaders rebuild the tab's workspace on new data (the old one is kept and
comes back), refuse data that does not fit with a message and change nothing, and take
identical data as no change; Fine-tune on a model without training data says what it
needs instead of failing, and offers fine-tuning once training data is uploaded."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fixtures import apptest
from fixtures.apptest import bench_of, workspace_of
from streamlit.testing.v1 import AppTest

from pruneviz.app import state
from pruneviz.app.keys import (
    BENCH_ID_KEY,
    DATA_UPLOAD_KEY,
    FT_RECIPE_KEY,
    KEPT_KEY,
    MODEL_KEY,
    WORKSPACE_KEY,
    data_widget_key,
)
from pruneviz.data.tensors import load_digits
from pruneviz.data.uploads import data_digest

MODEL_PAGE = "app_pages/model.py"
FINETUNE_PAGE = "app_pages/finetune.py"
PAGES = [f"app_pages/{name}.py" for name in (
    "model", "inspect", "sensitivity", "prune", "finetune", "deploy", "tradeoffs", "export")]
USER_FILE = (Path(__file__).parent / "fixtures" / "user_models" / "digits_conv.py").read_text()


def npz(x: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A user's model file and evaluation data, and no training data."""
    root = tmp_path_factory.mktemp("data_upload")
    (root / "net.py").write_text(USER_FILE)
    test = load_digits("test")
    np.savez(root / "test.npz", x=test.x.numpy(), y=test.y.numpy())
    return {"net": root / "net.py", "data": root / "test.npz"}


def upload(at: AppTest, split: str, name: str, content: bytes) -> None:
    """Give the `split` uploader a file and press its "Use this ... data" button."""
    at.file_uploader(key=data_widget_key("file", split)).upload(name, content)
    at.run()
    at.button(key=data_widget_key("use", split)).click().run()
    assert not at.exception, at.exception


def test_uploaded_evaluation_data_rebuilds_the_workspace_and_the_old_one_comes_back(
        ) -> None:
    at = apptest.start("sample:digits_cnn", MODEL_PAGE, plan=(0.5, "unstructured"))
    before = workspace_of(at)
    before.measure_live()
    entries = len(before.log)
    assert entries >= 2
    test = load_digits("test")
    x, y = test.x[:150].numpy(), test.y[:150].numpy()
    upload(at, "evaluation", "mine.npz", npz(x, y))
    assert not at.error, [e.value for e in at.error]
    space = workspace_of(at)
    assert space is not before
    assert len(space.log) == 1  # a new experiment log: the baseline on the new data
    assert len(space.bench.full_data) == 150
    assert space.bench.session.plan.is_empty
    assert np.array_equal(space.bench.full_data.x.numpy(), x)
    assert space.bench.source is not None
    assert space.bench.source.data == "mine.npz"
    assert any("now uses **mine.npz** as its evaluation data" in s.value for s in at.success)
    uploaded = at.session_state[DATA_UPLOAD_KEY][("sample:digits_cnn", "evaluation")]
    assert uploaded.digest == data_digest(space.bench.full_data)
    assert any("uploaded **mine.npz**" in m.value for m in at.markdown)
    assert at.get("image"), "a few samples are drawn as images"
    # Back to the model's own data: the workspace before, with its plan and experiments.
    at.button(key=data_widget_key("reset", "evaluation")).click().run()
    assert not at.exception, at.exception
    assert workspace_of(at) is before
    assert len(before.log) == entries
    assert not before.bench.session.plan.is_empty
    assert len(at.session_state[KEPT_KEY]) >= 1


def test_data_that_does_not_fit_is_refused_and_nothing_changes() -> None:
    at = apptest.start("sample:digits_cnn", MODEL_PAGE)
    before = workspace_of(at)
    colour = np.zeros((20, 3, 8, 8), np.float32)
    upload(at, "evaluation", "colour.npz", npz(colour, np.arange(20) % 10))
    (error,) = [e.value for e in at.error]
    assert "Not used: the uploaded colour.npz does not fit the model" in error
    assert "numbers of shape (3, 8, 8), but the model takes numbers of shape (1, 8, 8)" in error
    assert "The tab's data is unchanged" in error
    assert at.session_state[WORKSPACE_KEY] is before
    assert DATA_UPLOAD_KEY not in at.session_state or not at.session_state[DATA_UPLOAD_KEY]
    upload(at, "training", "bad.zip", b"not a zip at all")
    assert any("bad.zip is not a valid zip file" in e.value for e in at.error)
    assert at.session_state[WORKSPACE_KEY] is before


def test_identical_data_changes_nothing() -> None:
    at = apptest.start("sample:digits_cnn", MODEL_PAGE)
    before = workspace_of(at)
    own = load_digits("test")
    upload(at, "evaluation", "same.npz", npz(own.x.numpy(), own.y.numpy()))
    assert not at.error, [e.value for e in at.error]
    assert any("already uses, value for value: nothing changed" in i.value for i in at.info)
    assert at.session_state[WORKSPACE_KEY] is before


@pytest.mark.parametrize("page", PAGES)
def test_every_page_opens_on_a_model_without_training_data(
        monkeypatch: pytest.MonkeyPatch, user: dict[str, Path], page: str) -> None:
    at = apptest.start(None, page, timeout=90, monkeypatch=monkeypatch,
                       argv=["--model", f"{user['net']}:build", "--data", str(user["data"])])
    assert not at.error, [e.value for e in at.error]
    assert bench_of(at).train_data is None


def test_fine_tune_without_training_data_says_what_it_needs_then_offers_it(
        monkeypatch: pytest.MonkeyPatch, user: dict[str, Path]) -> None:
    at = apptest.start(None, FINETUNE_PAGE, timeout=90, monkeypatch=monkeypatch,
                       argv=["--model", f"{user['net']}:build", "--data", str(user["data"])])
    assert not at.error, [e.value for e in at.error]
    (warning,) = [w.value for w in at.warning if "no training data" in w.value]
    assert "Upload them on the Model page" in warning
    assert "--train-data FILE" in warning
    assert "could not be loaded" not in warning
    assert FT_RECIPE_KEY not in [r.key for r in at.radio]
    (link,) = at.get("page_link")
    assert link.proto.label == "Upload training data on the Model page"
    # Training data uploaded on the Model page: Fine-tune offers to train.
    at.switch_page(MODEL_PAGE).run()
    assert any("This model has no training data" in w.value for w in at.warning)
    train = load_digits("train")
    upload(at, "training", "train.npz", npz(train.x[:200].numpy(), train.y[:200].numpy()))
    assert not at.error, [e.value for e in at.error]
    assert len(bench_of(at).train_data or ()) == 200
    at.switch_page(FINETUNE_PAGE).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert not [w.value for w in at.warning if "no training data" in w.value]
    assert at.radio(key=FT_RECIPE_KEY).value in ("oneshot", "iterative")
    assert any("200 training samples of train.npz" in c.value for c in at.caption)


def test_a_workspace_that_cannot_open_on_the_data_leaves_the_tab_as_it_was(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The workspace is opened on new data before the upload is kept: if that fails, the
    tab keeps its data and its workspace; once it works, the upload's digest is part of
    the workspace's identity."""
    tab: dict[object, object] = {MODEL_KEY: "sample:digits_mlp"}  # this tab's session state
    monkeypatch.setattr(state.st, "session_state", tab)
    space = state.workspace()
    test = load_digits("test")
    content = npz(test.x[:120].numpy(), test.y[:120].numpy())

    def fails(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no room for another workbench")

    opens = state.build_workbench
    monkeypatch.setattr(state, "build_workbench", fails)
    with pytest.raises(RuntimeError, match="no room"):
        state.upload_data("evaluation", "e.npz", content)
    assert state.current_data_upload("evaluation") is None
    monkeypatch.setattr(state, "build_workbench", opens)
    assert state.workspace() is space
    taken = state.upload_data("evaluation", "e.npz", content)
    assert taken is not None
    assert state.current_data_upload("evaluation") is taken
    assert taken.digest in tab[BENCH_ID_KEY]  # type: ignore[operator]
    assert state.workspace() is not space
    assert state.upload_data("evaluation", "again.npz", content) is None  # identical
