"""Export a pruned model as one verified folder: weights, plan, slimmed model and report.

`export_bundle(bench, out)` writes into folder `out` (created if missing):

- `weights.safetensors`: the pruned (masked) model's full state dict;
- `weights.sparse.safetensors`: the same tensors in pruneviz's sparse encoding;
- `plan.json`: the stamped plan; `pruneviz prune MODEL --plan plan.json --out DIR`
  reproduces `weights.safetensors` byte for byte;
- `base_weights.safetensors`: only when the plan was applied to weights that MODEL alone
  does not load (fine-tuned or uploaded weights): the unpruned weights the plan starts
  from, for `--weights`;
- `slim/slim.safetensors` + `slim/slim.json`: the slimmed model (pruned channels and
  removed blocks really gone) and its architecture card, when the plan is structured;
  the report says why otherwise;
- deployment files, each checked before it is written (deploy_files.py; a file whose
  check fails is not written and the export fails; one that cannot be made is skipped,
  with the reason): `model.onnx` and `model.pt2` (the slimmed model, else the masked one;
  dynamic batch; run in onnxruntime / reloaded and compared on the evaluation data),
  `masked_sparse.onnx` (sparse initializers, when smaller) and `model.csr.safetensors`
  (the CSR form, `pruneviz.load_sparse`);
- `report.html`: one self-contained page (plotly.js inline, no network) with the measured
  tables, charts, verification results and environment; `summary.md`: the same in Markdown.

Before the export is declared good it is verified from the files on disk (verify.py): the
weights reload strictly into a fresh copy of the architecture and give outputs identical
to the in-app model's on the evaluation data; the plan, re-applied to the unpruned weights
in a fresh session, reproduces the weights bit for bit; the slimmed model, rebuilt from
its files, gives outputs identical to the slimmed model in memory. A failed check does
not stop the export: the report is written and says FAILED.

Every file is written atomically (temporary file in the same folder, fsync, rename), so
an export into an existing folder leaves each file either as it was or complete and new,
never half-written. Files an earlier export wrote that this one does not (a slimmed model,
base weights) are removed, so the folder never mixes two exports' models.
"""

from __future__ import annotations

import copy
import io
import json
import os
import tempfile
import time
import zipfile
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from torch import Tensor, nn

from pruneviz.core.layers import model_device
from pruneviz.core.plan import Plan
from pruneviz.core.session import PruningSession
from pruneviz.core.slim import SlimMismatchError
from pruneviz.core.slim import slim as slim_session
from pruneviz.data.sources import input_files
from pruneviz.errors import ModelError, PrunevizError
from pruneviz.i18n import N_, _
from pruneviz.measure.meter import Report
from pruneviz.measure.storage import dense_bytes, sparse_bytes
from pruneviz.output.deploy_files import (
    CSR_FILE,
    DEPLOY_NAMES,
    ONNX,
    PROGRAM,
    SPARSE_ONNX,
    DeployFile,
    deployment_files,
)
from pruneviz.output.figures import layer_overview
from pruneviz.output.folders import (
    MANIFEST,
    check_target,
    complete_export,
    manifest_bytes,
    read_manifest,
    removable,
    stray_temporaries,
)
from pruneviz.output.html_report import (
    Check,
    FileRow,
    ReportContent,
    environment,
    layer_rows,
    metric_rows,
    render_html,
    render_markdown,
    sparsity_chart,
    status_line,
)
from pruneviz.output.model_files import architecture_card, write_atomic
from pruneviz.output.tradeoff_figures import tradeoff_scatter
from pruneviz.output.verify import (
    BASE,
    PLAN,
    SLIM_CARD,
    SLIM_WEIGHTS,
    SPARSE,
    WEIGHTS,
    reference_state,
    reproduce_command,
    same_state,
    verify_bundle,
)
from pruneviz.workflows.experiments import ORIGINAL, ExperimentLog, describe_plan
from pruneviz.workflows.workbench import Workbench

REPORT_HTML = "report.html"
SUMMARY_MD = "summary.md"
# Written by an earlier export (or `pruneviz prune --slim`) but not necessarily by this one:
# removed when this export does not write them, so that they cannot be taken for its own.
OPTIONAL_FILES = (BASE, SLIM_WEIGHTS, SLIM_CARD, "slim/slim.pt2", *DEPLOY_NAMES)

_WHAT = {
    WEIGHTS: N_("pruned (masked) model, full state dict, dense safetensors"),
    SPARSE: N_("the same tensors, sparse encoding (pruneviz.measure.storage.decode_sparse)"),
    PLAN: N_("the plan, stamped with the model it was made for"),
    BASE: N_("the unpruned weights the plan was applied to (for --weights)"),
    SLIM_WEIGHTS: N_("slimmed model: pruned structure removed"),
    SLIM_CARD: N_("slimmed model's architecture card (pruneviz.output.model_files.load_slimmed)"),
    REPORT_HTML: N_("the report: one self-contained HTML page (tables, charts, checks)"),
    SUMMARY_MD: N_("the report's tables as Markdown"),
    MANIFEST: N_("each file's size and sha256, written last: the export is complete"),
    ONNX: N_("ONNX (opset 18, dynamic batch) of the model, for onnxruntime and other runtimes"),
    PROGRAM: N_("torch.export program (dynamic batch; no evaluation data in it): "
                "torch.export.load(...).module()"),
    SPARSE_ONNX: N_("ONNX of the masked model, its mostly-zero weights as sparse initializers"),
    CSR_FILE: N_("sparse-deployed model: CSR layers + architecture card, safetensors "
                 "(pruneviz.load_sparse)"),
}


class ExportError(PrunevizError, OSError):
    """The export folder cannot be used, or a file in it cannot be written."""


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote, and how it was verified."""

    out: Path
    files: dict[str, Path]  # name relative to `out` -> path, every file this export wrote
    checks: tuple[Check, ...]
    report: Report  # the pruned model, measured
    baseline: Report  # the model as loaded, unpruned
    slim_note: str  # what slim/ holds, or why no slimmed model was written
    command: str  # the CLI command that reproduces weights.safetensors from plan.json
    eval_samples: int  # samples the outputs were compared on
    seconds: float
    deploy: tuple[DeployFile, ...] = ()  # every deployment file: written, failed or skipped

    @property
    def passed(self) -> bool:
        """True when every verification check passed."""
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def status(self) -> str:
        """"verified: ..." or "FAILED: ..." (the line at the top of the report)."""
        return status_line(self.checks, self.eval_samples)

    def sizes(self) -> dict[str, int]:
        """Bytes of every file written, by name."""
        return {name: path.stat().st_size for name, path in self.files.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what `pruneviz export --json` prints)."""
        return {
            "out": str(self.out),
            "verified": self.passed,
            "status": self.status,
            "checks": [c.to_dict() for c in self.checks],
            "files": {name: str(path) for name, path in self.files.items()},
            "sizes": self.sizes(),
            "slim": self.slim_note,
            "command": self.command,
            "eval_samples": self.eval_samples,
            "seconds": self.seconds,
            "deployment": [row.to_dict() for row in self.deploy],
        }


# -- the folder --------------------------------------------------------------------------------
def prepare_folder(out: Path) -> Path:
    """Create `out` if missing and check that files can be written into it."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file, not a folder: choose a folder to export into "
                          "(it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create the export folder {out}: {exc.strerror or exc}; "
                          "choose a folder you can write to") from None
    try:
        fd, probe = tempfile.mkstemp(dir=out, prefix=".pruneviz-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ExportError(f"cannot write into the folder {out}: {exc.strerror or exc}; "
                          "choose a folder you can write to") from None
    return out


def _write(out: Path, files: dict[str, bytes]) -> dict[str, Path]:
    written = {}
    for name, data in files.items():
        path = out / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, data)
        except OSError as exc:
            raise ExportError(
                f"could not write {name} into {out}: {exc.strerror or exc}. Every file in the "
                "folder is complete (each is from this export or an earlier one); free some "
                "space or choose another folder, then export again") from None
        written[name] = path
    return written


def _remove_stale(out: Path, written: dict[str, Path]) -> None:
    """Remove the optional files an earlier export wrote (its manifest lists them) that
    this one does not: nothing pruneviz did not write is ever removed."""
    for name in removable(out, [n for n in OPTIONAL_FILES if n not in written]):
        try:
            (out / name).unlink(missing_ok=True)
        except OSError as exc:
            raise ExportError(f"could not remove {out / name}, left by an earlier export: "
                              f"{exc.strerror or exc}; delete it by hand") from None
    slim_dir = out / "slim"
    if slim_dir.is_dir() and not any(slim_dir.iterdir()):
        slim_dir.rmdir()


def _announce(out: Path, names: Iterable[str]) -> None:
    """Before writing: a manifest listing the earlier export's files and the ones about
    to be written (without sizes: not written yet), so that an export stopped half-way
    still knows every file in the folder as its own."""
    pending: dict[str, bytes | None] = dict.fromkeys([*read_manifest(out), *names])
    _write(out, {MANIFEST: manifest_bytes(pending)})


# -- what goes in ------------------------------------------------------------------------------
def _original_state(session: PruningSession) -> dict[str, Tensor]:
    """The session's unpruned weights, full state dict (removed blocks included)."""
    # Removed blocks put back (the same decisions: no weight is rewritten).
    blocks_back = (session.applied(session.plan.with_blocks(())) if session.removed_blocks()
                   else nullcontext())
    with blocks_back:
        changed = set(session.changed_tensors())
        return {k: (session.original(k) if k in changed else v).detach().clone()
                for k, v in session.model.state_dict().items()}


def _base_state(bench: Workbench) -> dict[str, Tensor] | None:
    """The unpruned weights to ship, or None when `bench.name` alone loads them (a sample
    with its shipped weights). A model of the user's always ships them: its factory may
    not be seeded, and its weights file may be changed or lost after the export."""
    original = _original_state(bench.session)
    if not bench.name.startswith("sample:"):
        return original
    return None if not same_state(original, reference_state(bench)) else original


def _structured(plan: Plan) -> bool:
    granularities = [e.granularity for e in plan.layers.values()]
    if plan.global_ is not None:
        granularities.append(plan.global_.granularity)
    return bool(plan.blocks) or any(g.structured for g in granularities)


def _slimmed(bench: Workbench, want: bool | None, *,
             preview: bool = False) -> tuple[nn.Module | None, str, tuple[str, ...]]:
    """The slimmed model (or None), what the report says about it, and why it is by
    design not the masked model's function (SlimResult.differs); checked on the
    evaluation data. A slim that does not compute what the masked model computes fails
    the export (SlimMismatchError) whatever `want` is, unless `want` is False; with
    `preview` it is only said."""
    session = bench.session
    if want is False:
        return None, _("No slimmed model was written: the export was asked not to."), ()
    if want is None and not _structured(session.plan):
        return None, _(
            "No slimmed model was written: the plan prunes single weights (unstructured or "
            "N:M), which keeps every tensor's shape, so there is no structure to remove; the "
            "sparse file (weights.sparse.safetensors) is what shrinks."), ()
    try:
        result = slim_session(session, bench.eval_data.x)
    except SlimMismatchError as exc:
        if preview:
            return None, _("No slimmed model can be written, and the export will fail: "
                           "{error}").format(error=exc), ()
        raise SlimMismatchError(
            f"cannot export: {exc}. Export without a slimmed model (--no-slim; on the Export "
            "page, do not ask for one) to write the masked model only") from None
    except ModelError as exc:
        if want:
            raise ModelError(f"cannot write a slimmed model: {exc}") from None
        return None, _("No slimmed model was written: {error}").format(error=exc), ()
    if not result.removed and not session.removed_blocks():
        if want:
            raise ModelError("cannot write a slimmed model: the plan removes no coupled "
                             "channels and no blocks; use filter or channel pruning")
        return None, _("No slimmed model was written: the plan removes no coupled channels "
                       "and no blocks, so it would have the masked model's shapes."), ()
    total = sum(p.numel() for p in bench.pristine.parameters())
    parts = [f"{name} -{count}" for name, count in sorted(result.removed.items())]
    parts += [_("{block} removed").format(block=block) for block in session.removed_blocks()]
    base = "" if bench.name.startswith("sample:") else \
        ", base_model=<your model, as loaded>"
    differs = (_(" Measured, not equivalent to the masked model, by design: {why}.").format(
        why="; ".join(result.differs)) if result.differs else "")
    return result.model, _(
        "slim/ holds the slimmed model: {params} parameters instead of {total} ({parts}). "
        "Rebuild it with {code}.").format(
            params=f"{result.params:,}", total=f"{total:,}", parts="; ".join(parts),
            code="pruneviz.output.model_files.load_slimmed("
                 f"'slim/slim.json', 'slim/slim.safetensors'{base})") + differs, result.differs


def _what(bench: Workbench, name: str) -> str:
    blocks = bench.session.removed_blocks()
    if name in (WEIGHTS, SPARSE) and blocks:
        return _("{what}; {blocks} replaced by the identity (their weights are not in "
                 "it)").format(what=_(_WHAT[name]), blocks=", ".join(blocks))
    return _(_WHAT[name])


def _on_cpu(model: nn.Module) -> nn.Module:
    """`model` itself when it is on the CPU, else a CPU copy (the original is not moved)."""
    return model if model_device(model).type == "cpu" else copy.deepcopy(model).cpu()


def _deployment(bench: Workbench, slim_model: nn.Module | None
                ) -> tuple[dict[str, bytes], list[DeployFile]]:
    """The deployment files that passed their checks, and every file's row (on the CPU:
    they are files to run elsewhere)."""
    masked = _on_cpu(bench.model)
    deployed = masked if slim_model is None else _on_cpu(slim_model)
    card = architecture_card(bench.name, bench.pristine, masked)
    return deployment_files(deployed, masked, bench.eval_data.x.cpu(),
                            what="masked" if slim_model is None else "slimmed", card=card,
                            base_model=_on_cpu(bench.pristine))


# -- the report --------------------------------------------------------------------------------
def _figures(bench: Workbench, content_layers: Sequence[Any], log: ExperimentLog | None,
             plan: Plan, weights: str) -> list[tuple[str, go.Figure]]:
    session = bench.session
    figures = [("Achieved sparsity of each prunable layer (zero weights / weights), in "
                "model order.", sparsity_chart(content_layers))]
    results = session.results()
    total_macs = sum(layer.macs for layer in session.layers) or 1
    figures.append((
        "Parameters of each layer: kept (non-zero) and zeroed.",
        layer_overview([r.name for r in results], [r.params for r in results],
                       [r.nonzero for r in results],
                       [layer.macs / total_macs for layer in session.layers])))
    if log is not None and len(log):
        experiments = list(log)
        baseline = log.find(session.stamp(Plan()))
        current = log.find(plan, weights)
        metric_name = experiments[0].metric_name
        mark = f" #{current.id} is this export." if current is not None else ""
        for field, title in (("size_sparse_bytes", "sparse file size (bytes)"),
                             ("latency_ms", "latency (ms, batch 64)")):
            if sum(getattr(e, field) is not None for e in experiments) < 2:
                continue
            figures.append((
                f"Every configuration measured in the session: {metric_name} against "
                f"{title}; the Pareto front joins those no other one beats.{mark}",
                tradeoff_scatter(experiments, x_field=field, x_title=title,
                                 metric_name=metric_name,
                                 higher_is_better=log.higher_is_better, baseline=baseline,
                                 selected_id=current.id if current is not None else None)))
    return figures


def _data_text(bench: Workbench) -> str:
    data = bench.eval_data
    text = f"{data.name}, {len(data):,} samples ({data.task.value})"
    if bench.eval_full is not None:
        text += f", a fixed subset of the {len(bench.eval_full):,} in {bench.eval_full.name}"
    return text


# -- export --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportPreview:
    """What an export of the current plan would write (nothing is written)."""

    plan_text: str
    files: list[tuple[str, str]]  # (name, what it holds)
    slim_note: str
    command: str


def export_preview(bench: Workbench, *, slim: bool | None = None,
                   deploy: bool = True) -> ExportPreview:
    """The files an export of the workbench's current plan would write (the deployment
    files only if their checks pass), and why a slimmed model would or would not be among
    them."""
    base = _base_state(bench) is not None
    slim_model, slim_note, _differs = _slimmed(bench, False if slim is False else None,
                                               preview=True)
    if slim and slim_model is None:
        slim_note += _(" (the export was asked for one: it will fail)")
    names = [WEIGHTS, SPARSE, PLAN, *([BASE] if base else []),
             *([SLIM_WEIGHTS, SLIM_CARD] if slim_model is not None else []),
             *(DEPLOY_NAMES if deploy else ()), REPORT_HTML, SUMMARY_MD, MANIFEST]
    return ExportPreview(describe_plan(bench.session.stamp(bench.session.plan), max_parts=6),
                         [(name, _what(bench, name) + (
                             _(" (written if its check on the evaluation data passes)")
                             if name in DEPLOY_NAMES else "")) for name in names], slim_note,
                         reproduce_command(bench, base))


def export_bundle(
    bench: Workbench,
    out: Path,
    *,
    log: ExperimentLog | None = None,
    extra_figures: Sequence[tuple[str, go.Figure]] = (),
    slim: bool | None = None,
    latency: bool = False,
    weights: str = ORIGINAL,
    force: bool = False,
    inputs: Sequence[Path] = (),
    replace: bool | None = None,
    deploy: bool = True,
) -> ExportResult:
    """Write the workbench's current pruned model, plan and report into folder `out`,
    then verify the files (see the module docstring for what is written and checked).
    A folder holding files pruneviz did not write is refused unless `force`; so is one
    holding a complete earlier export unless `replace` (default: `force`), so that
    nobody loses an export by typing a name twice; no input of the run (the source's
    files and `inputs`, such as a plan file) is written over (see `folders`).

    `log`: the session's experiments, drawn as trade-off charts. `extra_figures`: more
    (caption, figure) pairs for the report. `slim`: None writes a slimmed model when the
    plan is structured and it can be built (the report says why not otherwise), True
    requires one (ModelError if it cannot be built), False never writes one. `latency`:
    also time the pruned model against the unpruned one (cached per plan by the meter).
    `weights`: the name of the weights the plan was applied to, for the report.
    `deploy`: also write the deployment files (ONNX, .pt2, CSR; each checked first).

    Raises ExportError when `out` is a file, cannot be created or written, or a write
    fails (every file is then either complete and new, or as it was). A failed check does
    not raise: the result's `passed` is False and the report says FAILED.
    """
    start = time.perf_counter()
    # The slim is built and checked first: one that does not compute what the masked
    # model computes fails the export before the folder is even made.
    slim_model, slim_note, differs = _slimmed(bench, slim)
    out = prepare_folder(out)
    session = bench.session
    plan = session.stamp(session.plan)
    report = bench.meter.report(latency=latency)
    state = session.model.state_dict()
    base = _base_state(bench)
    files: dict[str, bytes] = {
        WEIGHTS: dense_bytes(state),
        SPARSE: sparse_bytes(state),
        PLAN: plan.to_json().encode(),
    }
    if base is not None:
        files[BASE] = dense_bytes(base)
    if slim_model is not None:
        card = architecture_card(bench.name, bench.pristine, slim_model)
        files[SLIM_WEIGHTS] = dense_bytes(slim_model.state_dict())
        files[SLIM_CARD] = json.dumps(card, indent=2).encode()
    deploy_rows: list[DeployFile] = []
    if deploy:
        deploy_files, deploy_rows = _deployment(bench, slim_model)
        files.update(deploy_files)
    names = [*files, *OPTIONAL_FILES, REPORT_HTML, SUMMARY_MD, MANIFEST]
    inputs = [*(input_files(bench.source) if bench.source is not None else ()), *inputs]
    check_target(out, names, inputs=inputs, force=force)
    earlier = complete_export(out)
    if earlier and not (force if replace is None else replace):
        raise PrunevizError(
            f"{out} holds a complete export already ({len(earlier)} files, listed in its "
            f"{MANIFEST}); nothing was written. Replace it on purpose (--force; on the "
            "Export page, tick 'Replace it'), or choose another folder")
    for stray in stray_temporaries(out, names):  # what an interrupted export left behind
        stray.unlink(missing_ok=True)
    _announce(out, [*files, REPORT_HTML, SUMMARY_MD])
    written = _write(out, files)
    _remove_stale(out, written)
    command = reproduce_command(bench, base is not None)
    checks = (*verify_bundle(bench, out, slim_model=slim_model, slim_differs=differs,
                             command=command, written=set(written)),
              *(check for row in deploy_rows if (check := row.check()) is not None))

    rows = layer_rows(session)
    deploy_status = {row.name: f"{row.status}: {row.detail}" for row in deploy_rows}
    file_rows = [FileRow(name, len(data), _what(bench, name), deploy_status.get(name, ""))
                 for name, data in files.items()]
    file_rows += [FileRow(row.name, None, f"{_WHAT[row.name]} — not written",
                          deploy_status[row.name]) for row in deploy_rows
                  if row.name not in files]
    file_rows += [FileRow(name, None, _WHAT[name]) for name in (REPORT_HTML, SUMMARY_MD,
                                                                 MANIFEST)]
    content = ReportContent(
        title=f"pruneviz export: {bench.name}",
        model=f"{bench.name} ({type(bench.pristine).__name__})",
        data=_data_text(bench),
        weights=weights,
        plan_text=describe_plan(plan, max_parts=6),
        plan_json=plan.to_json(),
        metrics=metric_rows(bench.baseline, report),
        layers=rows,
        checks=checks,
        files=file_rows,
        slim_note=slim_note,
        command=command,
        environment=environment(),
        eval_samples=len(bench.eval_data),
        notes=tuple(session.notes),
        figures=(*_figures(bench, rows, log, plan, weights), *extra_figures),
    )
    reports = {REPORT_HTML: render_html(content).encode("utf-8"),
               SUMMARY_MD: render_markdown(content).encode("utf-8")}
    written.update(_write(out, reports))
    # Last: every file with its size and hash, which marks the export complete.
    written.update(_write(out, {MANIFEST: manifest_bytes({**files, **reports})}))
    return ExportResult(out, written, checks, report, bench.baseline, slim_note, command,
                        len(bench.eval_data), time.perf_counter() - start,
                        tuple(deploy_rows))


# -- downloads -----------------------------------------------------------------------------------
def bundle_files(result: ExportResult) -> dict[str, bytes]:
    """The bytes of every file the export wrote, by name."""
    return {name: path.read_bytes() for name, path in result.files.items()}


def bundle_zip(result: ExportResult) -> bytes:
    """The whole export as one zip (for a browser download)."""
    return _zip(bundle_files(result))


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(f"pruneviz-export/{name}",
                                             date_time=time.localtime()[:6]), data,
                             compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


@dataclass(frozen=True)
class ExportDownload:
    """An export held in memory: its result, every file's bytes, and the zip of them."""

    result: ExportResult
    files: dict[str, bytes]
    zip: bytes


def export_for_download(
    bench: Workbench,
    folder: Path | None = None,
    *,
    log: ExperimentLog | None = None,
    extra_figures: Sequence[tuple[str, go.Figure]] = (),
    slim: bool | None = None,
    latency: bool = False,
    weights: str = ORIGINAL,
    replace: bool = False,
    deploy: bool = True,
) -> ExportDownload:
    """Export into `folder` (None: a temporary folder, deleted afterwards, so the result's
    paths no longer exist) and keep every file's bytes and a zip of them; the options are
    export_bundle's."""
    options: dict[str, Any] = {"log": log, "extra_figures": extra_figures, "slim": slim,
                               "latency": latency, "weights": weights, "replace": replace,
                               "deploy": deploy}
    if folder is not None:
        result = export_bundle(bench, folder, **options)
        files = bundle_files(result)
        return ExportDownload(result, files, _zip(files))
    with tempfile.TemporaryDirectory(prefix="pruneviz-export-") as tmp:
        result = export_bundle(bench, Path(tmp), **options)
        files = bundle_files(result)
    return ExportDownload(result, files, _zip(files))


__all__ = [
    "REPORT_HTML",
    "SUMMARY_MD",
    "Check",
    "ExportDownload",
    "ExportError",
    "ExportPreview",
    "ExportResult",
    "bundle_files",
    "bundle_zip",
    "export_bundle",
    "export_for_download",
    "export_preview",
    "prepare_folder",
]
