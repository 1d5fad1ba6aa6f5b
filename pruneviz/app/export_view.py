"""The Export page's Export button and its progress: the export is written and verified
in the background (a job's process: pruneviz.output.export_job), and the page shows it
once it is in."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from pruneviz.app import state
from pruneviz.app.keys import EXPORT_KEY, EXPORT_REPLACE_KEY, EXPORT_RUN_KEY
from pruneviz.app.widgets import user_errors
from pruneviz.app.worker import ExportWorker, export_worker
from pruneviz.errors import PrunevizError
from pruneviz.i18n import _
from pruneviz.output.export_job import export_spec
from pruneviz.output.folders import complete_export
from pruneviz.workflows.experiments import ORIGINAL
from pruneviz.workflows.jobqueue import waiting_text
from pruneviz.workflows.workbench import Workbench

POLL_SECONDS = 0.5


def export_button(bench: Workbench, identity: object, folder: str, weights: str) -> None:
    """The Export button (disabled while an export is written), its progress, and, once
    the export is in, the tab's last export (`EXPORT_KEY`) set to it."""
    worker = export_worker(bench)
    running = worker.running
    target: Path | None = None
    refused = False
    try:
        target = state.export_folder(folder) if folder.strip() else None
    except PrunevizError as exc:  # a name that is not one: said at once, nothing written
        st.error(_("The export cannot go there: {error}").format(error=exc))
        refused = True
    earlier = complete_export(target) if target is not None else []
    replace = bool(earlier) and st.checkbox(
        _("Replace it: {folder} holds an earlier export ({count} files)").format(
            folder=target, count=len(earlier)),
        key=EXPORT_REPLACE_KEY,
        help=_("Without this the export is refused, so that an export is never lost by "
               "typing a name twice."))
    if st.button(_("Export"), type="primary", key=EXPORT_RUN_KEY, disabled=running or refused):
        with user_errors(_("The export could not be started")):
            tuned = None if weights == ORIGINAL else state.weights_state(weights)
            worker.start(export_spec(bench, bench.session.stamp(bench.session.plan),
                                     weights=weights, state=tuned,
                                     log=state.experiment_log(), folder=target,
                                     replace=replace), identity)
        st.rerun()  # draw the progress, and poll while it runs
    st.fragment(show_export, run_every=POLL_SECONDS if running else None)(worker, running)
    progress = worker.snapshot()
    if not progress.running and progress.download is not None:
        st.session_state[EXPORT_KEY] = (progress.identity, progress.download,
                                         progress.in_folder)


def show_export(worker: ExportWorker, was_running: bool) -> None:
    """Where the export is, polled while it runs; the whole page once it is in."""
    progress = worker.snapshot()
    if was_running and not progress.running:
        st.rerun(scope="app")  # in: show its checks and downloads
    if progress.queued is not None:
        st.info(waiting_text(progress.queued, progress.jobs_running),
                icon=":material/hourglass_top:")
    elif progress.running:
        st.info(_("Writing and verifying the export in the background: the other pages "
                  "stay usable."), icon=":material/hourglass_top:")
    elif progress.error is not None:
        st.error(_("The export failed: {error}").format(error=progress.error))
