"""The export bundle: what is written, the self-contained report, verification from the
files (and that damaged files fail it), reproduction through the CLI, and atomic writes."""

from __future__ import annotations

import errno
import io
import json
import os
import re
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from fixtures.models import ZOO
from fixtures.sessions import pruned_bench
from safetensors.torch import load_file, save_file

from pruneviz.cli import main
from pruneviz.core.plan import Plan
from pruneviz.core.slim import slim
from pruneviz.errors import ModelError, PrunevizError
from pruneviz.output import bundle
from pruneviz.output.bundle import (
    REPORT_HTML,
    SUMMARY_MD,
    ExportError,
    ExportResult,
    bundle_zip,
    export_bundle,
    export_preview,
)
from pruneviz.output.deploy_files import CSR_FILE, ONNX, PROGRAM, SPARSE_ONNX
from pruneviz.output.folders import MANIFEST
from pruneviz.output.model_files import load_slimmed
from pruneviz.output.verify import (
    BASE,
    PLAN,
    SLIM_CARD,
    SLIM_WEIGHTS,
    SPARSE,
    WEIGHTS,
    verify_bundle,
)
from pruneviz.workflows.experiments import ExperimentLog
from pruneviz.workflows.workbench import Workbench, build_workbench, measure_plans, open_workbench

DATA_FILES = [WEIGHTS, SPARSE, PLAN]
REPORTS = [REPORT_HTML, SUMMARY_MD, MANIFEST]


def files_in(folder: Path) -> list[str]:
    """Every file under `folder` (hidden ones too), relative, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def outputs(model: torch.nn.Module, bench: Workbench) -> torch.Tensor:
    with torch.inference_mode():
        return model.eval()(bench.eval_data.x)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workbench, ExportResult]:
    bench = pruned_bench("sample:digits_cnn", "unstructured")
    log = ExperimentLog(bench.eval_data.higher_is_better)
    session = bench.session
    plans = [session.stamp(Plan()), *(session.uniform_plan(s, "unstructured", "l1")[0]
                                      for s in (0.3, 0.5, 0.8))]
    for plan, report in zip(plans, measure_plans(bench, plans, latency=False), strict=True):
        log.record(report, plan)
    out = tmp_path_factory.mktemp("cnn") / "export"
    return bench, export_bundle(bench, out, log=log)


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workbench, ExportResult]:
    bench = pruned_bench("sample:digits_resnet", "filter")
    return bench, export_bundle(bench, tmp_path_factory.mktemp("resnet"), latency=True)


@pytest.fixture(params=["cnn", "resnet"])
def exported(request: pytest.FixtureRequest) -> tuple[Workbench, ExportResult]:
    found = request.getfixturevalue(request.param)
    assert isinstance(found, tuple)
    return found


# -- what is written ------------------------------------------------------------------------
def test_unstructured_export_writes_no_slimmed_model_and_says_why(
        cnn: tuple[Workbench, ExportResult]) -> None:
    _, result = cnn
    # At 50% sparsity ONNX's sparse initializers (int64 index per entry) are not smaller.
    deployed = [ONNX, PROGRAM, CSR_FILE]
    assert files_in(result.out) == sorted(DATA_FILES + deployed + REPORTS)
    assert list(result.files) == DATA_FILES + deployed + REPORTS
    (skipped,) = [row for row in result.deploy if row.status == "skipped"]
    assert skipped.name == SPARSE_ONNX
    assert skipped.detail.startswith("not smaller")
    assert "not written" in (result.out / REPORT_HTML).read_text()
    assert result.slim_note.startswith("No slimmed model was written: the plan prunes single "
                                       "weights")
    assert result.passed, result.checks
    assert [c.name for c in result.checks] == [
        "weights.safetensors reloads into a fresh copy of the architecture",
        "weights.sparse.safetensors decodes to the same weights",
        "plan.json reproduces the weights", *(f"{n} runs elsewhere" for n in deployed)]
    assert result.status == ("verified: outputs identical on 450 eval samples; all 6 checks "
                             "passed")
    assert "No slimmed model was written" in (result.out / REPORT_HTML).read_text()
    assert "No slimmed model was written" in (result.out / SUMMARY_MD).read_text()


def test_filter_export_writes_a_slimmed_model_that_reloads(
        resnet: tuple[Workbench, ExportResult]) -> None:
    bench, result = resnet
    deployed = [row.name for row in result.deploy if row.status == "passed"]
    assert {ONNX, PROGRAM} <= set(deployed)
    assert "the slimmed model" in result.deploy[0].detail
    assert files_in(result.out) == sorted([*DATA_FILES, SLIM_WEIGHTS, SLIM_CARD, *deployed,
                                           *REPORTS])
    assert result.passed, result.checks
    assert len(result.checks) == 5 + len(deployed)
    assert "outputs identical to the slimmed model in memory on 450 eval samples" in \
        result.checks[3].detail
    # The card's base is a sample: load_slimmed rebuilds it without being given the model.
    reloaded = load_slimmed(result.out / SLIM_CARD, result.out / SLIM_WEIGHTS)
    in_memory = slim(bench.session).model
    assert torch.equal(outputs(reloaded, bench), outputs(in_memory, bench))
    params = sum(p.numel() for p in reloaded.parameters())
    assert params < sum(p.numel() for p in bench.pristine.parameters()) / 2
    assert f"{params:,} parameters" in result.slim_note


def test_weights_file_is_the_in_app_model(exported: tuple[Workbench, ExportResult]) -> None:
    bench, result = exported
    state = load_file(result.out / WEIGHTS)
    live = bench.model.state_dict()
    assert state.keys() == live.keys()
    assert all(torch.equal(state[k], live[k]) for k in live)
    plan = Plan.from_json((result.out / PLAN).read_text())
    assert plan == bench.session.stamp(bench.session.plan)
    assert plan.model is not None
    assert plan.model.fingerprint == bench.session.fingerprint


@pytest.mark.parametrize("model", ["cnn", "resnet"])
def test_plan_reproduces_the_weights_through_the_cli(
        model: str, request: pytest.FixtureRequest, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    bench, result = request.getfixturevalue(model)
    assert result.command.startswith(f"pruneviz prune {bench.name} --plan plan.json ")
    again = tmp_path / "again"
    assert main(["prune", bench.name, "--plan", str(result.out / PLAN),
                 "--out", str(again)]) == 0
    capsys.readouterr()
    for name in (WEIGHTS, SPARSE):
        assert (again / name).read_bytes() == (result.out / name).read_bytes(), name


# -- the report -------------------------------------------------------------------------------
def test_report_is_self_contained(exported: tuple[Workbench, ExportResult]) -> None:
    _, result = exported
    page = (result.out / REPORT_HTML).read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    # plotly.js is inline, once; nothing is fetched from the network
    assert page.count("plotly.js v") >= 1
    scripts = re.findall(r"<script[^>]*>", page)
    assert scripts
    assert all("src" not in s for s in scripts), scripts
    assert not re.search(r"<script[^>]+src\s*=\s*[\"']?https?:", page, re.IGNORECASE)
    assert not re.search(r"<link[^>]+href\s*=\s*[\"']?https?:", page, re.IGNORECASE)
    inline = [len(s) for s in re.findall(r"<script[^>]*>(.*?)</script>", page, re.DOTALL)]
    assert sum(n > 1_000_000 for n in inline) == 1  # the plotly.js bundle, only once
    charts = re.findall(r'id="pv-figure-(\d+)"', page)
    assert charts == [str(i) for i in range(len(charts))]
    assert page.count("Plotly.newPlot") == len(charts)


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM}")
def test_report_draws_its_charts_offline(resnet: tuple[Workbench, ExportResult]) -> None:
    """Headless Chromium, every host unresolvable: the charts are drawn all the same."""
    _, result = resnet
    page = result.out / REPORT_HTML
    charts = len(re.findall(r'id="pv-figure-\d+"', page.read_text()))
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--host-resolver-rules=MAP * ~NOTFOUND",
         "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True).stdout
    assert charts >= 2
    assert dom.count('class="main-svg"') >= charts  # plotly drew every chart


def test_report_has_the_measured_tables(exported: tuple[Workbench, ExportResult]) -> None:
    bench, result = exported
    page = (result.out / REPORT_HTML).read_text(encoding="utf-8")
    summary = (result.out / SUMMARY_MD).read_text(encoding="utf-8")
    report, base = result.report, bench.baseline
    for text in (page, summary):
        assert bench.name in text
        assert "digits/test, 450 samples" in text
        assert result.status in text
        # metrics, baseline vs pruned, as measured
        for name in ("accuracy (450 eval samples)", "loss", "parameters (non-zero)",
                     "sparsity (zero parameters)", "weight MACs / sample (dense)",
                     "weight MACs / sample (effective: zeros skipped)",
                     "file size: dense safetensors", "file size: sparse encoding",
                     "file size: dense, gzipped", "CPU latency (median)"):
            assert name in text, name
        assert f"{report.evaluation.metric:.2%}" in text
        assert f"{base.evaluation.metric:.2%}" in text
        assert f"{report.params_nonzero:,}" in text
        assert f"{report.macs_effective:,}" in text
        # the plan, per layer, with the sparsity each layer reached
        for layer in bench.session.results():
            assert layer.name in text
            assert f"{layer.sparsity:.2%}" in text
        # verification and environment
        for check in result.checks:
            assert check.name in text
        assert torch.__version__ in text
        assert "CPU count" in text
        for name in DATA_FILES:
            assert f"{(result.out / name).stat().st_size:,} B" in text


def test_report_shows_latency_with_its_spread_when_measured(
        resnet: tuple[Workbench, ExportResult]) -> None:
    _, result = resnet
    latency = result.report.latency
    assert latency is not None
    summary = (result.out / SUMMARY_MD).read_text()
    assert f"{latency.median_ms:.3f} ms (p10-p90 {latency.p10_ms:.3f}-{latency.p90_ms:.3f}" \
        in summary
    # the change: the speed-up from the same interleaved rounds, never a signed percentage
    gain = result.report.latency_speedup
    assert gain is not None
    row = next(line for line in summary.splitlines() if line.startswith("| CPU latency"))
    change = row.split(" | ")[-1]
    assert change.startswith(gain.text()), row
    assert "%" not in change.replace("95% CI", "")


def test_a_latency_not_timed_with_the_unpruned_model_is_not_compared(
        resnet: tuple[Workbench, ExportResult]) -> None:
    from dataclasses import replace

    from pruneviz.output.html_report import latency_change

    _, result = resnet
    alone = replace(result.report, latency_reference=None, latency_speedup=None)
    assert latency_change(alone) == ("not compared: the unpruned model was not timed in the "
                                     "same rounds")
    assert latency_change(replace(alone, latency=None)) == ""


def test_report_draws_the_tradeoff_from_the_log(cnn: tuple[Workbench, ExportResult]) -> None:
    _, result = cnn
    page = (result.out / REPORT_HTML).read_text()
    assert "Every configuration measured in the session" in page
    assert "Pareto front" in page
    assert "is this export" in page  # the log holds the exported plan: it is marked


def test_user_strings_are_escaped(tmp_path: Path) -> None:
    entry = ZOO["conv_bn"]
    name = 'mine<script>alert("x")</script>&co'
    bench = build_workbench(name, entry.build(), entry.example(), entry.data(), None)
    session = bench.session
    session.apply(session.uniform_plan(0.5, "filter", "l1")[0])
    result = export_bundle(bench, tmp_path, deploy=False)
    assert result.passed, result.checks
    page = (tmp_path / REPORT_HTML).read_text()
    summary = (tmp_path / SUMMARY_MD).read_text()
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert" in page
    # (in the fenced code block, the command is shown as is: Markdown renders none of it)
    outside_code = re.sub(r"```.*?```", "", summary, flags=re.DOTALL)
    assert "<script>alert" not in outside_code
    assert "&lt;script&gt;alert" in outside_code
    # a model that is not a sample: its slimmed card is rebuilt on the model itself
    with pytest.raises(ModelError, match="pass the base architecture"):
        load_slimmed(tmp_path / SLIM_CARD, tmp_path / SLIM_WEIGHTS)
    model = load_slimmed(tmp_path / SLIM_CARD, tmp_path / SLIM_WEIGHTS, bench.pristine)
    assert torch.equal(outputs(model, bench), outputs(slim(session).model, bench))
    assert "--data" in result.command


# -- verification -------------------------------------------------------------------------------
def tamper_tensor(path: Path, name: str | None = None) -> None:
    state = load_file(path)
    key = name or next(k for k, v in state.items() if v.is_floating_point() and v.dim() > 1)
    flat = state[key].reshape(-1)
    index = int(torch.nonzero(flat).reshape(-1)[0])
    flat[index] = flat[index] * 1.5 + 0.25
    save_file(state, path)


def passed(checks: list[Any]) -> dict[str, bool]:
    return {c.name.split()[0]: c.passed for c in checks}


def test_damaged_files_fail_verification(tmp_path: Path) -> None:
    bench = pruned_bench("sample:digits_resnet", "filter")
    result = export_bundle(bench, tmp_path, deploy=False)
    assert result.passed
    slim_model = slim(bench.session).model
    assert all(c.passed for c in verify_bundle(bench, tmp_path, slim_model=slim_model))
    original = {n: (tmp_path / n).read_bytes() for n in result.files}

    def restore() -> None:
        for n, data in original.items():
            (tmp_path / n).write_bytes(data)

    tamper_tensor(tmp_path / WEIGHTS)
    checks = verify_bundle(bench, tmp_path, slim_model=slim_model)
    assert passed(checks) == {"weights.safetensors": False, "weights.sparse.safetensors": True,
                              "plan.json": False, "slimmed": True}
    assert "differ from the in-app model" in checks[0].detail
    restore()

    plan = json.loads((tmp_path / PLAN).read_text())
    plan["layers"]["layer2.conv1"]["sparsity"] = 0.25
    (tmp_path / PLAN).write_text(json.dumps(plan))
    checks = verify_bundle(bench, tmp_path, slim_model=slim_model)
    assert [c.name for c in checks if not c.passed] == ["plan.json reproduces the weights"]
    (tmp_path / PLAN).write_text("{not json")
    (failed,) = [c for c in verify_bundle(bench, tmp_path) if not c.passed]
    assert "not valid JSON" in failed.detail
    restore()

    tamper_tensor(tmp_path / SLIM_WEIGHTS)
    checks = verify_bundle(bench, tmp_path, slim_model=slim_model)
    assert [c.name for c in checks if not c.passed] == [
        "slimmed model reloads from slim/", "slimmed model computes what the masked model "
        "computes"]
    restore()

    (tmp_path / SPARSE).write_bytes(original[SPARSE][:-10])
    assert [c.passed for c in verify_bundle(bench, tmp_path)] == [True, False, True, True, True]
    restore()

    card = json.loads(original[SLIM_CARD])
    card["modules"]["stem.conv"] = 3
    (tmp_path / SLIM_CARD).write_text(json.dumps(card))
    (failed,) = [c for c in verify_bundle(bench, tmp_path) if not c.passed]
    assert "entry for 'stem.conv' is malformed" in failed.detail
    restore()

    (tmp_path / SLIM_CARD).unlink()
    checks = verify_bundle(bench, tmp_path, slim_model=slim_model)
    assert [c.passed for c in checks] == [True, True, True, False]
    assert "cannot read the slim card" in checks[3].detail


def test_a_failed_check_still_writes_a_report_that_says_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = pruned_bench("sample:digits_cnn", "unstructured")
    real = bundle.dense_bytes

    def wrong_weights(state: dict[str, torch.Tensor]) -> bytes:
        if "fc.bias" in state:  # the masked model's weights, one value off
            state = dict(state)
            state["fc.bias"] = state["fc.bias"] + 1.0
        return real(state)

    monkeypatch.setattr(bundle, "dense_bytes", wrong_weights)
    result = export_bundle(bench, tmp_path, deploy=False)
    assert not result.passed
    assert result.status.startswith("FAILED: 2 of 3 checks failed")
    assert "FAILED" in (tmp_path / REPORT_HTML).read_text()
    assert "✗ FAILED" in (tmp_path / SUMMARY_MD).read_text()
    assert result.to_dict()["verified"] is False


# -- atomic writes and the folder ------------------------------------------------------------------
class _HalfWriter:
    """A file handle whose write stores half the data, then fails as a full disk would."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def __enter__(self) -> _HalfWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()

    def write(self, data: bytes) -> int:
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        self.handle.flush()

    def fileno(self) -> int:
        return int(self.handle.fileno())


def test_a_write_failing_midway_leaves_only_complete_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = pruned_bench("sample:digits_resnet", "filter")
    out = tmp_path / "out"
    export_bundle(bench, out, deploy=False)
    old = {n: (out / n).read_bytes() for n in files_in(out)}

    bench.session.apply(bench.session.uniform_plan(0.3, "unstructured", "l1")[0])
    expected = tmp_path / "expected"
    export_bundle(bench, expected, deploy=False)
    new = {n: (expected / n).read_bytes() for n in files_in(expected)}

    real_fdopen = os.fdopen
    opened: list[int] = []

    def failing_fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        handle = real_fdopen(fd, *args, **kwargs)
        opened.append(fd)
        # the third file of the bundle (after the manifest announcing them)
        return _HalfWriter(handle) if len(opened) == 4 else handle

    monkeypatch.setattr(os, "fdopen", failing_fdopen)
    with pytest.raises(ExportError, match=r"could not write plan\.json into .*No space left"):
        export_bundle(bench, out, replace=True, deploy=False)
    monkeypatch.undo()
    present = files_in(out)
    assert not [n for n in present if n.endswith(".tmp") or "/." in n or n.startswith(".")]
    assert set(present) == set(old)  # the failed export removed nothing, added nothing
    for name in present:
        if name != MANIFEST:
            data = (out / name).read_bytes()
            assert data in (old.get(name), new.get(name)), name
    # The manifest says the export is not complete: its files are listed without hashes.
    listed = json.loads((out / MANIFEST).read_text())["files"]
    assert set(listed) >= set(old) - {MANIFEST}
    assert listed[PLAN] == {"bytes": None, "sha256": None}
    assert (out / WEIGHTS).read_bytes() == new[WEIGHTS]  # written before the failure
    assert (out / PLAN).read_bytes() == old[PLAN]  # the failed one: left as it was

    # Exporting again completes the folder, and drops the earlier export's slimmed model.
    result = export_bundle(bench, out, deploy=False)
    assert result.passed
    assert files_in(out) == sorted(DATA_FILES + REPORTS)
    for name in DATA_FILES:
        assert (out / name).read_bytes() == new[name]


def test_refuses_a_file_and_an_unwritable_folder(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    bench = open_workbench("sample:digits_mlp")
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    with pytest.raises(ExportError, match="is a file, not a folder"):
        export_bundle(bench, blocker, deploy=False)
    with pytest.raises(ExportError, match="cannot create the export folder"):
        export_bundle(bench, blocker / "sub", deploy=False)
    assert blocker.read_text() == "keep me"

    def refuse(*args: Any, **kwargs: Any) -> tuple[int, str]:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(PrunevizError, match=r"cannot write into the folder .*Permission denied"):
        export_bundle(bench, tmp_path / "readonly", deploy=False)


# -- other weights, removed blocks, options ------------------------------------------------
def test_other_weights_ship_with_the_plan(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bench = open_workbench("sample:digits_resnet")
    session = bench.session
    params = dict(bench.pristine.named_parameters())
    generator = torch.Generator().manual_seed(0)
    state = {k: v + 0.01 * torch.randn(v.shape, generator=generator) if k in params else v
             for k, v in bench.pristine.state_dict().items()}
    session.rebase(state)  # as fine-tuned weights taken on the Fine-tune page
    session.apply(session.uniform_plan(0.4, "filter", "l1")[0])
    result = export_bundle(bench, tmp_path / "out", weights="fine-tuned #1", deploy=False)
    assert result.passed, result.checks
    assert BASE in result.files
    assert "--weights base_weights.safetensors" in result.command
    assert "applied to base_weights.safetensors" in result.checks[2].detail
    assert "fine-tuned #1" in (tmp_path / "out" / SUMMARY_MD).read_text()
    out = tmp_path / "out"
    assert main(["prune", bench.name, "--weights", str(out / BASE), "--plan", str(out / PLAN),
                 "--out", str(tmp_path / "again")]) == 0
    capsys.readouterr()
    assert (tmp_path / "again" / WEIGHTS).read_bytes() == (out / WEIGHTS).read_bytes()


def test_removed_blocks_are_exported_and_slimmed(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bench = open_workbench("sample:digits_resnet")
    session = bench.session
    session.apply(session.uniform_plan(0.6, "unstructured", "l1")[0].with_blocks(["layer1"]))
    result = export_bundle(bench, tmp_path / "out", deploy=False)
    assert result.passed, result.checks
    assert SLIM_CARD in result.files
    assert "layer1 removed" in result.slim_note
    assert session.removed_blocks() == ["layer1"]  # the export put nothing back
    assert not any(k.startswith("layer1.") for k in load_file(tmp_path / "out" / WEIGHTS))
    assert main(["prune", bench.name, "--plan", str(tmp_path / "out" / PLAN),
                 "--out", str(tmp_path / "again")]) == 0
    capsys.readouterr()
    assert (tmp_path / "again" / WEIGHTS).read_bytes() == \
        (tmp_path / "out" / WEIGHTS).read_bytes()


def test_slim_option(tmp_path: Path) -> None:
    bench = pruned_bench("sample:digits_cnn", "unstructured")
    with pytest.raises(ModelError, match="cannot write a slimmed model"):
        export_bundle(bench, tmp_path / "a", slim=True, deploy=False)
    bench = pruned_bench("sample:digits_resnet", "filter")
    result = export_bundle(bench, tmp_path / "b", slim=False, deploy=False)
    assert SLIM_CARD not in result.files
    assert not (tmp_path / "b" / "slim").exists()
    assert "asked not to" in result.slim_note


def test_preview_names_what_the_export_writes(tmp_path: Path) -> None:
    bench = pruned_bench("sample:digits_resnet", "filter")
    preview = export_preview(bench, deploy=False)
    result = export_bundle(bench, tmp_path, deploy=False)
    assert [name for name, _ in preview.files] == list(result.files)
    assert preview.slim_note == result.slim_note
    assert preview.command == result.command
    assert preview.plan_text.startswith("9 layers filter l1 50%")


def test_zip_holds_every_file(cnn: tuple[Workbench, ExportResult]) -> None:
    _, result = cnn
    archive = zipfile.ZipFile(io.BytesIO(bundle_zip(result)))
    assert archive.namelist() == [f"pruneviz-export/{n}" for n in result.files]
    for name, path in result.files.items():
        assert archive.read(f"pruneviz-export/{name}") == path.read_bytes()


def test_result_to_dict_is_json(resnet: tuple[Workbench, ExportResult]) -> None:
    _, result = resnet
    data = json.loads(json.dumps(result.to_dict()))
    assert data["verified"] is True
    assert set(data["sizes"]) == set(result.files)
    assert all(c["passed"] for c in data["checks"])

