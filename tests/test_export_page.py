"""The Export page through Streamlit's AppTest: what will be written is shown, the Export
button writes and verifies the bundle in the background (a job: the page polls until it
is in), offers the zip and each file for download, shows
the checks, optionally writes into a folder, and shows problems as messages."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from fixtures import apptest
from fixtures.apptest import bench_of
from safetensors.torch import load
from streamlit.testing.v1 import AppTest

from pruneviz.app.worker import ExportWorker
from pruneviz.output.bundle import ExportDownload

PAGE = "app_pages/export.py"


def start(model: str, granularity: str | None = None, sparsity: float = 0.5) -> AppTest:
    """The app on the Export page; with `granularity`, the tab's plan prunes every layer
    (that supports it) `sparsity` of it, set as the Prune page would."""
    plan = None if granularity is None else (sparsity, granularity)
    return apptest.start(model, PAGE, plan=plan, no_errors=True)


def exporter(at: AppTest) -> ExportWorker:
    """The tab's export worker (one per model; the tab has one model)."""
    (worker,) = at.session_state["pv_export_workers"].values()
    assert isinstance(worker, ExportWorker)
    return worker


def click_export(at: AppTest) -> None:
    """Press Export and re-run the page, as its polling does, until the export is in."""
    at.button(key="pv_export_run").click().run()
    assert not at.exception, at.exception
    apptest.rerun_while_running(at, exporter(at), 120)


def export(at: AppTest) -> ExportDownload:
    click_export(at)
    found = at.session_state["pv_export"]
    download = found[1]
    assert isinstance(download, ExportDownload)
    return download


def test_preview_lists_the_files_and_why_there_is_no_slimmed_model() -> None:
    at = start("sample:digits_cnn", "unstructured")
    (table,) = at.dataframe
    assert list(table.value["file"]) == ["weights.safetensors", "weights.sparse.safetensors",
                                         "plan.json", "model.onnx", "model.pt2",
                                         "masked_sparse.onnx", "model.csr.safetensors",
                                         "report.html", "summary.md", "manifest.json"]
    assert all("if its check on the evaluation data passes" in what
               for what in table.value["holds"][3:7])
    assert any("No slimmed model was written" in c.value for c in at.caption)
    assert any("pruneviz prune sample:digits_cnn" in c.value for c in at.code)
    assert not at.get("download_button")  # nothing until the user exports


def test_export_offers_every_download_and_shows_the_checks() -> None:
    at = start("sample:digits_resnet", "filter")
    download = export(at)
    result = download.result
    assert result.passed, result.checks
    assert not at.error, [e.value for e in at.error]
    (success,) = at.success
    assert "verified: outputs identical on 450 eval samples" in success.value
    checks = [m.value for m in at.markdown if m.value.startswith(("✓", "✗"))]
    assert len(checks) == len(result.checks) == 5 + sum(
        row.status == "passed" for row in result.deploy)
    assert all(c.startswith("✓") for c in checks)
    # The files to run elsewhere, each with its size and its check.
    (table,) = [t.value for t in at.dataframe if "check" in t.value.columns]
    assert list(table["file"]) == ["model.onnx", "model.pt2", "masked_sparse.onnx",
                                   "model.csr.safetensors"]
    assert list(table["check"][:2]) == ["passed", "passed"]
    assert table["size"][0] == f"{len(download.files['model.onnx']):,} B"
    assert "onnxruntime runs the slimmed model" in table["detail"][0]
    buttons = at.get("download_button")
    labels = [b.proto.label for b in buttons]
    assert labels[0].startswith("Everything (")
    assert labels[1:] == ["report.html", "summary.md", "weights.safetensors", "plan.json"]

    names = set(zipfile.ZipFile(io.BytesIO(download.zip)).namelist())
    assert {f"pruneviz-export/{n}" for n in download.files} == names
    assert "pruneviz-export/slim/slim.json" in names
    # the weights offered are the tab's pruned model
    state = load(download.files["weights.safetensors"])
    live = bench_of(at).model.state_dict()
    assert state.keys() == live.keys()
    assert all(state[k].equal(live[k]) for k in live)
    html = download.files["report.html"].decode()
    assert "<script src=http" not in html.replace('"', "").replace("'", "")

    # The plan changes: the old export is no longer offered as the current one.
    session = bench_of(at).session
    session.apply(session.uniform_plan(0.3, "filter", "l1")[0])
    at.run()
    assert not at.get("download_button")
    assert any("export again" in c.value for c in at.caption)


def test_export_also_writes_into_a_named_folder_of_the_apps_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNEVIZ_HOME", str(tmp_path / "home"))
    at = start("sample:digits_cnn", "unstructured", 0.7)
    at.text_input(key="pv_export_folder").set_value("run1").run()
    download = export(at)
    target = tmp_path / "home" / "exports" / "run1"
    assert download.result.passed
    assert download.result.out == target
    assert sorted(p.name for p in target.iterdir()) == sorted(download.files)
    assert "manifest.json" in download.files
    assert (target / "plan.json").read_bytes() == download.files["plan.json"]
    assert any(str(target) in i.value for i in at.info)


@pytest.mark.parametrize("name", ["/etc", "../../outside", "~/x", "a/b", ".hidden", ".."])
def test_the_page_never_writes_to_a_path_it_is_given(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNEVIZ_HOME", str(tmp_path / "home"))
    at = start("sample:digits_cnn", "unstructured")
    at.text_input(key="pv_export_folder").set_value(name).run()
    assert not at.exception, at.exception
    (error,) = at.error  # said as soon as the name is typed
    assert "is not an export name" in error.value
    assert at.button(key="pv_export_run").disabled  # (AppTest refuses to click it too)
    # nothing but the saved workspaces' folder (tabs' work) is under the app's home
    assert [p.name for p in (tmp_path / "home").iterdir()] == ["workspaces"]
    assert "pv_export" not in at.session_state


def test_a_folder_holding_the_users_files_is_refused_and_left_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNEVIZ_HOME", str(tmp_path / "home"))
    taken = tmp_path / "home" / "exports" / "mine"
    taken.mkdir(parents=True)
    (taken / "notes.txt").write_text("mine")
    at = start("sample:digits_cnn", "unstructured")
    at.text_input(key="pv_export_folder").set_value("mine").run()
    click_export(at)
    (error,) = at.error
    assert error.value.startswith("The export failed: ")
    assert "holds files pruneviz did not write there (notes.txt)" in error.value
    assert "pv_export" not in at.session_state
    assert sorted(p.name for p in taken.iterdir()) == ["notes.txt"]


def test_a_folder_holding_an_earlier_export_is_replaced_only_when_asked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNEVIZ_HOME", str(tmp_path / "home"))
    at = start("sample:digits_cnn", "unstructured", 0.5)
    at.text_input(key="pv_export_folder").set_value("run1").run()
    assert not at.checkbox  # an empty folder: nothing to confirm
    first = export(at)
    target = tmp_path / "home" / "exports" / "run1"
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    session = bench_of(at).session
    session.apply(session.uniform_plan(0.8, "unstructured", "l1")[0])
    at.run()
    (replace,) = at.checkbox  # the folder holds a complete export: asked first
    assert "holds an earlier export" in replace.label
    click_export(at)  # not ticked: refused, the earlier export untouched
    (error,) = at.error
    assert "holds a complete export already" in error.value
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    at.checkbox(key="pv_export_replace").check().run()
    second = export(at)  # ticked: replaced
    assert second.result.passed
    assert (target / "plan.json").read_bytes() == second.files["plan.json"]
    assert second.files["plan.json"] != first.files["plan.json"]


def test_the_unpruned_model_can_be_exported() -> None:
    at = start("sample:digits_mlp")
    assert any("Nothing is pruned yet" in i.value for i in at.info)
    assert export(at).result.passed
