"""Export: the current plan as one verified bundle — weights, plan, slimmed model, report."""

import streamlit as st

from pruneviz.app import state
from pruneviz.app.export_view import export_button
from pruneviz.app.keys import (
    EXPORT_FOLDER_KEY,
    EXPORT_KEY,
    EXPORT_ZIP_KEY,
    export_download_key,
)
from pruneviz.app.widgets import user_errors
from pruneviz.app.worker import record_finished_run, record_sweep_points
from pruneviz.i18n import _
from pruneviz.output.bundle import export_preview
from pruneviz.workflows.experiments import ORIGINAL

st.title(_("Export"))
with user_errors(_("The model could not be loaded")):
    bench = state.workbench()
    weights = state.current_weights()
    identity = (state.bench_key(), bench.session.plan.key(), weights)
record_finished_run(bench)  # the report's trade-off charts hold what background jobs measured
record_sweep_points()
with user_errors(_("The export could not be prepared")):
    preview = export_preview(bench)

st.markdown(_(
    "Everything about the current plan in one folder: the pruned weights, the plan that "
    "reproduces them, the slimmed model when the plan removes structure, and a report "
    "(one HTML page that opens offline, plus Markdown) with every number **measured**. "
    "Before it is offered, the export is **verified** from the written files: the weights "
    "reload and give identical outputs, the plan re-applied in a fresh session gives the "
    "same weights bit for bit, the slimmed model rebuilds and gives identical outputs. "
    "Files to run the model elsewhere — ONNX (`model.onnx`, and `masked_sparse.onnx` when "
    "sparse weights make it smaller), the `torch.export` program (`model.pt2`) and the CSR "
    "form (`model.csr.safetensors`, `pruneviz.load_sparse`) — are each run on the "
    "evaluation data and compared before they are written; one that fails is not written."))
st.markdown(_("**Plan:** {plan} — on the **{weights}** weights of **{model}**.").format(
    plan=preview.plan_text, weights=_("original") if weights == ORIGINAL else weights,
    model=bench.name))
if bench.session.plan.is_empty:
    st.info(_("Nothing is pruned yet: the export holds the unpruned model. Set a plan on the "
              "Prune page first to export a pruned one."))
st.dataframe([{_("file"): name, _("holds"): what} for name, what in preview.files],
             hide_index=True, width="stretch")
st.caption(preview.slim_note)
st.caption(_("Reproduce the weights from the plan with the CLI:"))
st.code(preview.command, language="bash")

folder = st.text_input(
    _("Also keep a copy on this machine, named"), key=EXPORT_FOLDER_KEY,
    placeholder=_("e.g. run1 (leave empty for downloads only)"),
    help=_("The bundle is also written to {folder}/NAME (made if missing). The app writes "
           "there and nowhere else; a folder holding files it did not write is refused, and "
           "an earlier export there is replaced only when you tick 'Replace it', file by "
           "file, each completely or not at all.").format(folder=state.exports_root()))
export_button(bench, identity, folder, weights)

found = st.session_state.get(EXPORT_KEY)
if found is not None and found[0] != identity:
    st.caption(_("The plan or the weights changed since the last export: export again."))
elif found is not None:
    _identity, download, in_folder = found
    result = download.result
    if result.passed:
        st.success(_("Export {status}").format(status=result.status),
                   icon=":material/verified:")
    else:
        st.error(_("Export {status}. The files were written, but do not trust them: the "
                   "report says which check failed.").format(status=result.status),
                 icon=":material/error:")
    st.subheader(_("Verification"))
    for check in result.checks:
        st.markdown(f"{'✓' if check.passed else '✗'} **{check.name}** — {check.detail}")
    if result.deploy:
        st.subheader(_("Files to run elsewhere"))
        st.dataframe([{_("file"): row.name, _("size"): "" if row.size is None else
                       f"{row.size:,} B", _("check"): _(row.status), _("detail"): row.detail}
                      for row in result.deploy], hide_index=True, width="stretch")
    if in_folder:
        st.info(_("Written to `{folder}` in {seconds} s.").format(
            folder=result.out, seconds=f"{result.seconds:.1f}"))
    st.subheader(_("Download"))
    stem = "pruneviz-export-" + "".join(c if c.isalnum() else "-" for c in bench.name)
    st.download_button(_("Everything ({count} files, zip)").format(count=len(download.files)),
                       download.zip,
                       file_name=f"{stem}.zip", mime="application/zip",
                       key=EXPORT_ZIP_KEY, type="primary")
    cols = st.columns(4)
    for col, (name, mime) in zip(cols, [
        ("report.html", "text/html"), ("summary.md", "text/markdown"),
        ("weights.safetensors", "application/octet-stream"), ("plan.json", "application/json"),
    ], strict=True):
        col.download_button(name, download.files[name], file_name=name, mime=mime,
                            key=export_download_key(name))
