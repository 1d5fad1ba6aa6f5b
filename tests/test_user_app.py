"""The app started on the user's own model (`streamlit run app.py -- --model ...`), through
AppTest: every page works on it, weights can be swapped and given back, and bad start
arguments or a broken model leave the app usable on the samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import apptest
from fixtures.apptest import bench_of
from safetensors.torch import save, save_file
from streamlit.testing.v1 import AppTest

from pruneviz.app import state
from pruneviz.app.keys import (
    MODEL_KEY,
    MODEL_WIDGET_KEY,
    SELECTED_LAYER_KEY,
    UPLOAD_KEY,
    widget_key,
)
from pruneviz.app.state import Upload
from pruneviz.data.tensors import load_digits

PAGES = [f"app_pages/{name}.py" for name in (
    "model", "inspect", "sensitivity", "prune", "finetune", "deploy", "tradeoffs", "export")]
USER_FILE = (Path(__file__).parent / "fixtures" / "user_models" / "digits_conv.py").read_text()


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("app_user")
    (root / "net.py").write_text(USER_FILE)
    test, train = load_digits("test"), load_digits("train")
    np.savez(root / "test.npz", x=test.x.numpy(), y=test.y.numpy())
    np.savez(root / "train.npz", x=train.x[:300].numpy(), y=train.y[:300].numpy())
    torch.manual_seed(5)
    state = {"conv.weight": torch.randn(8, 1, 3, 3), "conv.bias": torch.zeros(8),
             "fc.weight": torch.randn(10, 512) * 0.05, "fc.bias": torch.zeros(10)}
    save_file(state, str(root / "other.safetensors"))
    return {"root": root, "net": root / "net.py", "data": root / "test.npz",
            "train": root / "train.npz", "other": root / "other.safetensors"}


def start(monkeypatch: pytest.MonkeyPatch, argv: list[str], page: str | None = None) -> AppTest:
    return apptest.start(None, page, timeout=90, argv=argv, monkeypatch=monkeypatch)


def _args(user: dict[str, Path], factory: str = "build") -> list[str]:
    return ["--model", f"{user['net']}:{factory}", "--data", str(user["data"]),
            "--train-data", str(user["train"])]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_works_on_the_users_model(monkeypatch: pytest.MonkeyPatch,
                                             user: dict[str, Path], page: str) -> None:
    at = start(monkeypatch, _args(user), page)
    assert not at.error, [e.value for e in at.error]
    assert bench_of(at).name == f"{user['net']}:build"
    assert at.sidebar.selectbox(key=MODEL_WIDGET_KEY).value == f"{user['net']}:build"


def test_uploaded_weights_replace_the_originals_and_go_back(
        monkeypatch: pytest.MonkeyPatch, user: dict[str, Path]) -> None:
    from pruneviz.data.user_models import fit_weights, read_weights

    at = start(monkeypatch, _args(user))
    original = {k: v.clone() for k, v in bench_of(at).pristine.state_dict().items()}
    # AppTest cannot drive a file uploader: put what the upload button stores, as it would.
    model = bench_of(at).pristine.__class__()
    fit_weights(model, read_weights(user["other"], "other.safetensors"), "other.safetensors")
    at.session_state[UPLOAD_KEY] = Upload(f"{user['net']}:build", "other.safetensors",
                                          "0123", model.eval())
    at.run()
    assert not at.exception, at.exception
    swapped = bench_of(at).session.model.state_dict()
    assert torch.equal(swapped["fc.weight"], model.fc.weight)
    assert any("other.safetensors" in info.value for info in at.info)
    back = next(b for b in at.button if b.label == "Back to the model's own weights")
    back.click().run()
    restored = bench_of(at).session.model.state_dict()
    assert all(torch.equal(restored[k], original[k]) for k in original)


def test_uploading_the_weights_in_use_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Byte for byte or not (another file of the same values), weights identical to the
    ones the tab prunes change nothing: no new upload, so the tab keeps its workspace
    (plan, log, results), which a new upload would rebuild."""
    tab: dict[str, object] = {MODEL_KEY: "sample:digits_cnn"}  # this tab's session state
    monkeypatch.setattr(state.st, "session_state", tab)
    own = state.current_loaded().model.state_dict()
    halved = {k: (v * 0.5 if v.is_floating_point() else v).contiguous() for k, v in own.items()}
    assert state.upload_weights("same.safetensors", save(dict(own))) is None
    assert UPLOAD_KEY not in tab
    taken = state.upload_weights("halved.safetensors", save(halved))
    assert taken is not None
    assert tab[UPLOAD_KEY] is taken
    metadata = save(halved, metadata={"format": "pt", "note": "another file, same values"})
    assert state.upload_weights("again.safetensors", metadata) is None
    assert tab[UPLOAD_KEY] is taken  # still the first upload: nothing rebuilt
    assert state.upload_weights("own.safetensors", save(dict(own))) is not None  # back


def test_a_broken_model_is_explained_and_the_samples_still_work(
        monkeypatch: pytest.MonkeyPatch, user: dict[str, Path]) -> None:
    at = start(monkeypatch, _args(user, "broken"))
    assert any("the factory is broken" in e.value for e in at.error)
    at.session_state[MODEL_KEY] = "sample:digits_mlp"
    at.run()
    assert not at.exception, at.exception
    assert not at.error
    assert bench_of(at).name == "sample:digits_mlp"


def test_bad_start_arguments_fall_back_to_the_default_sample(
        monkeypatch: pytest.MonkeyPatch) -> None:
    at = start(monkeypatch, ["--model", "resnet50"])
    assert any("resnet50" in w.value for w in at.sidebar.warning)
    assert bench_of(at).name == "sample:digits_cnn"


def test_start_arguments_are_read_like_the_cli() -> None:
    source, problem = state.startup_source(
        ("--model", "net.py:build", "--weights", "w.pt", "--data", "mnist:d", "--eval-subset",
         "500", "--metric", "top3"))
    assert problem is None
    assert (source.model, source.weights, source.data, source.eval_subset, source.metric) == (
        "net.py:build", "w.pt", "mnist:d", 500, "top3")
    _, problem = state.startup_source(("--model", "sample:digits_cnn", "--bogus"))
    assert problem is not None
    assert "--bogus" in problem


FIXTURES = Path(__file__).resolve().parent / "fixtures" / "user_models"


@pytest.fixture(scope="module")
def fixture_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each fixture user model's own sample data, saved as the user would: an .npz."""
    import importlib

    root = tmp_path_factory.mktemp("fixture_data")
    paths = {}
    for name in ("residual_concat", "gru_model", "embed_transformer", "bert_classifier"):
        module = importlib.import_module(f"fixtures.user_models.{name}")
        x, y = module.sample_data(96)
        np.savez(root / f"{name}.npz", x=x.numpy(), y=y.numpy())
        paths[name] = root / f"{name}.npz"
    return paths


@pytest.mark.parametrize("name", ["residual_concat", "gru_model", "embed_transformer",
                                  "bert_classifier"])
@pytest.mark.parametrize("page", [f"app_pages/{name}.py" for name in (
    "model", "inspect", "prune", "deploy", "export")])
def test_fixture_user_models_work_on_every_page(monkeypatch: pytest.MonkeyPatch,
                                                fixture_data: dict[str, Path], name: str,
                                                page: str) -> None:
    at = start(monkeypatch, ["--model", f"{FIXTURES / name}.py:build", "--data",
                             str(fixture_data[name])], page)
    assert not at.error, [e.value for e in at.error]


def test_attention_heads_are_shown_and_pruned_as_structures(
        monkeypatch: pytest.MonkeyPatch, fixture_data: dict[str, Path]) -> None:
    at = start(monkeypatch, ["--model", f"{FIXTURES}/embed_transformer.py:build", "--data",
                             str(fixture_data["embed_transformer"])], "app_pages/prune.py")
    session = bench_of(at).session
    attention = next(n for n in session.layer_names if n.endswith("self_attn"))
    at.selectbox(key=widget_key("gran", attention)).set_value("filter").run()
    at.slider(key=widget_key("sp", attention)).set_value(50).run()
    assert not at.exception, at.exception
    result = bench_of(at).session.result(attention)
    assert (result.structures_pruned, result.structures) == (2, 4)  # 2 of 4 heads
    at.selectbox(key=SELECTED_LAYER_KEY).set_value(attention).run()
    assert any("attention heads" in c.value for c in at.caption)
    at.switch_page("app_pages/deploy.py").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_bert_heads_are_pruned_as_heads_by_measured_importance(
        monkeypatch: pytest.MonkeyPatch, fixture_data: dict[str, Path]) -> None:
    at = start(monkeypatch, ["--model", f"{FIXTURES}/bert_classifier.py:build", "--data",
                             str(fixture_data["bert_classifier"])], "app_pages/prune.py")
    query = "bert.encoder.layer.0.attention.self.query"
    at.selectbox(key=widget_key("gran", query)).set_value("filter").run()
    at.selectbox(key=widget_key("crit", query)).set_value("taylor").run()
    at.slider(key=widget_key("sp", query)).set_value(50).run()
    assert not at.exception, at.exception
    session = bench_of(at).session
    group = session.group_of(query)
    assert group is not None
    assert group.unit == "head"
    assert len(session.pruned_units()[group.id]) == 2  # 2 of 4 heads
    assert session.plan.layers[query].criterion == "taylor"
    at.selectbox(key=SELECTED_LAYER_KEY).set_value(query).run()
    assert any("attention heads" in c.value for c in at.caption)
    assert any("from the module's attributes" in c.value for c in at.caption)
    at.switch_page("app_pages/deploy.py").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_bert_heads_are_pruned_by_ablation_and_other_layers_say_why_not(
        monkeypatch: pytest.MonkeyPatch, fixture_data: dict[str, Path]) -> None:
    at = start(monkeypatch, ["--model", f"{FIXTURES}/bert_classifier.py:build", "--data",
                             str(fixture_data["bert_classifier"])], "app_pages/prune.py")
    query = "bert.encoder.layer.0.attention.self.query"
    ffn = "bert.encoder.layer.0.intermediate.dense"
    at.selectbox(key=widget_key("gran", query)).set_value("filter").run()
    assert "ablation" in at.selectbox(key=widget_key("crit", query)).options
    at.selectbox(key=widget_key("crit", query)).set_value("ablation").run()
    at.slider(key=widget_key("sp", query)).set_value(25).run()
    assert not at.exception, at.exception
    session = bench_of(at).session
    group = session.group_of(query)
    assert group is not None
    assert len(session.pruned_units()[group.id]) == 1  # 1 of 4 heads, measured
    assert session.plan.layers[query].criterion == "ablation"
    at.selectbox(key=widget_key("gran", ffn)).set_value("filter").run()
    at.selectbox(key=widget_key("crit", ffn)).set_value("ablation").run()
    assert not at.exception, at.exception
    assert any("measures whole attention heads" in w.value and "taylor" in w.value
               for w in at.warning), [w.value for w in at.warning]


@pytest.mark.parametrize("subset", ["50", "5000"])
def test_an_eval_subset_outside_the_input_range_is_shown_not_raised(
        monkeypatch: pytest.MonkeyPatch, user: dict[str, Path], subset: str) -> None:
    at = start(monkeypatch, [*_args(user), "--eval-subset", subset])
    assert not at.error, [e.value for e in at.error]
    assert len(bench_of(at).eval_data) == min(int(subset), 450)


def test_a_60_layer_model_keeps_each_edit_while_others_are_edited(
        monkeypatch: pytest.MonkeyPatch, user: dict[str, Path]) -> None:
    """60 prunable layers: the Prune page edits one at a time; every edit survives the
    next ones (editing a second layer used to reset the first to unpruned)."""
    model = f"{FIXTURES / 'deep_mlp.py'}:build"
    at = start(monkeypatch, ["--model", model, "--data", str(user["data"])],
               "app_pages/prune.py")
    session = apptest.bench_of(at).session
    assert len(session.layers) == 60
    edits = {"blocks.0": 40, "blocks.30": 60, "blocks.59": 20}
    for name, percent in edits.items():
        at.multiselect(key=widget_key("edit_layers")).set_value([name]).run()
        at.slider(key=widget_key("sp", name)).set_value(percent).run()
        assert not at.exception, at.exception
    at.multiselect(key=widget_key("edit_layers")).set_value(["blocks.10"]).run()
    plan = apptest.bench_of(at).session.plan
    assert {n: e.sparsity for n, e in plan.layers.items()} == {
        n: pytest.approx(p / 100) for n, p in edits.items()}


def test_width_under_layer_norm_is_noted_and_deployed_as_its_own_model(
        monkeypatch: pytest.MonkeyPatch, fixture_data: dict[str, Path]) -> None:
    at = start(monkeypatch, ["--model", f"{FIXTURES}/embed_transformer.py:build", "--data",
                             str(fixture_data["embed_transformer"])], "app_pages/prune.py")
    at.selectbox(key=widget_key("gran", "encoder.linear2")).set_value("filter").run()
    at.slider(key=widget_key("sp", "encoder.linear2")).set_value(25).run()
    assert not at.exception, at.exception
    assert bench_of(at).session.result("encoder.linear2").structures_pruned == 6
    # The Prune page says the live figures are the masked model's.
    assert any("normalise all its channels together" in i.value for i in at.info)
    at.switch_page("app_pages/deploy.py").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    warned = [w.value for w in at.warning if "not the masked model, by design" in w.value]
    assert len(warned) == 1
    assert "encoder.norm1" in warned[0]
    assert "measured on its own: accuracy" in warned[0]
    assert any("this model's own" in m.label for m in at.metric)
