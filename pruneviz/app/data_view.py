"""The Model page's data section: upload evaluation and training data in the CLI's forms
(pruneviz.data.uploads), see a preview of the data in use, and go back to the model's own
data; and the Fine-tune page's note when the model has no training data."""

from __future__ import annotations

import streamlit as st

from pruneviz.app import state
from pruneviz.app.keys import DATA_FLASH_KEY, data_widget_key
from pruneviz.app.widgets import localized
from pruneviz.data.idx import IDX_KINDS
from pruneviz.data.tasks import Task
from pruneviz.data.tensors import TensorData
from pruneviz.data.uploads import (
    DATA_SPLITS,
    MAX_UPLOAD_BYTES,
    DataSplit,
    describe_uploads,
    preview,
)
from pruneviz.i18n import N_, _

MODEL_PAGE = "app_pages/model.py"
IDX_KIND_LABELS = {
    "idx": N_("any IDX files (structure checked)"),
    "mnist": N_("MNIST (official checksums checked)"),
    "fashion-mnist": N_("Fashion-MNIST (official checksums checked)"),
}
# per split: its heading (with what it is for), and the texts naming it
SPLIT_TEXT = {
    "evaluation": {
        "heading": N_("**Evaluation data** — what every metric on every page is measured on."),
        "file": N_("Evaluation data file"),
        "use": N_("Use this evaluation data"),
        "again": N_("This tab uses the model's own evaluation data again."),
        "same": N_("**{name}** holds the evaluation data this tab already uses, value for "
                   "value: nothing changed, and the plan and results are kept."),
        "now": N_("This tab now uses **{name}** as its evaluation data ({count} samples): the "
                  "baseline was measured on it and a new experiment log started."),
    },
    "training": {
        "heading": N_("**Training data** — what Fine-tune retrains on, and what data-driven "
                      "criteria calibrate on."),
        "file": N_("Training data file"),
        "use": N_("Use this training data"),
        "again": N_("This tab uses the model's own training data again."),
        "same": N_("**{name}** holds the training data this tab already uses, value for "
                   "value: nothing changed, and the plan and results are kept."),
        "now": N_("This tab now uses **{name}** as its training data ({count} samples): the "
                  "baseline was measured on it and a new experiment log started."),
    },
}
TASK_LABELS = {"classification": N_("classification"), "regression": N_("regression"),
               "reconstruction": N_("reconstruction")}


def any_uploaded() -> bool:
    """Whether this tab uses uploaded data for its model (of either split)."""
    return any(state.current_data_upload(split) is not None for split in DATA_SPLITS)


def data_section() -> None:
    """Per split: the data in use (with a preview), an uploader, and the way back to the
    model's own data. Uploaded data replaces the tab's data for this model: the workspace
    is rebuilt on it (the one before is kept, and comes back with the model's own data)."""
    flash = st.session_state.pop(DATA_FLASH_KEY, None)
    if flash:
        st.success(flash)
    st.caption(_("{forms} New data re-measures the baseline and starts a new experiment log; "
                 "going back to the model's own data brings back the one before. Identical "
                 "data (the same values, whatever the file) changes nothing. The files are "
                 "read in memory and never kept or written anywhere.")
               .format(forms=describe_uploads()))
    for split, column in zip(DATA_SPLITS, st.columns(2, gap="large"), strict=True):
        with column:
            _split_section(split)


def _split_section(split: DataSplit) -> None:
    upload = state.current_data_upload(split)
    data = state.current_data(split)
    text = SPLIT_TEXT[split]
    st.markdown(_(text["heading"]))
    if data is None:
        st.warning(_("This model has no training data: fine-tuning needs it. Upload it here "
                     "(the same kind as the evaluation data), or start the app with "
                     "`--train-data FILE`."), icon=":material/warning:")
    else:
        in_use = (_("In use: uploaded **{name}** — {count} samples of {data}.")
                  if upload is not None else
                  _("In use: the model's own — {count} samples of {data}."))
        st.markdown(in_use.format(name=upload.name if upload is not None else "",
                                  count=f"{len(data):,}", data=data.name))
        if upload is not None:
            st.caption(_("Values hash {digest}.").format(digest=upload.digest))
            for note in upload.notes:
                st.caption(f":material/info: {note}")
        show_preview(data)
    file = st.file_uploader(_(text["file"]), type=["npz", "csv", "zip"],
                            key=data_widget_key("file", split),
                            max_upload_size=MAX_UPLOAD_BYTES // 2**20,
                            help=describe_uploads())
    label = ""
    kind = "idx"
    if file is not None and file.name.lower().endswith(".csv"):
        label = st.text_input(_("Label column (CSV)"), key=data_widget_key("label", split),
                              help=_("The column holding the targets; empty: a column named "
                                     "label, target or y, else the last one."))
    if file is not None and file.name.lower().endswith(".zip"):
        kind = st.selectbox(_("IDX files in the zip are"), IDX_KINDS,
                            format_func=localized(lambda kind: _(IDX_KIND_LABELS[kind])),
                            key=data_widget_key("idx", split),
                            help=_("Only used if the zip holds IDX files; an image folder is "
                                   "read as one."))
    left, right = st.columns(2)
    if left.button(_(text["use"]), disabled=file is None, type="primary",
                   key=data_widget_key("use", split)):
        assert file is not None
        _take(split, file.name, file.getvalue(), label.strip() or None, kind)
    if right.button(_("Use the model's own data"), disabled=upload is None,
                    key=data_widget_key("reset", split)):
        state.forget_data_upload(split)
        st.session_state[DATA_FLASH_KEY] = _(text["again"])
        st.rerun()


def _take(split: DataSplit, name: str, content: bytes, label: str | None, kind: str) -> None:
    """Use the uploaded file as the tab's `split` data, or say why not (nothing changes)."""
    try:
        with st.spinner(_("Reading {name}, checking that the model runs on it and measuring "
                          "the model on it ...").format(name=name)):
            taken = state.upload_data(split, name, content, label_column=label, idx_kind=kind)
    except Exception as exc:  # noqa: BLE001 - any failure is shown, the tab stays usable
        st.error(_("Not used: {reason}. The tab's data is unchanged.").format(reason=exc))
        return
    if taken is None:
        st.info(_(SPLIT_TEXT[split]["same"]).format(name=name))
        return
    st.session_state[DATA_FLASH_KEY] = _(SPLIT_TEXT[split]["now"]).format(
        name=name, count=f"{len(taken.data):,}")
    st.rerun()


def show_preview(data: TensorData) -> None:
    """Sample count, input shape, class counts (a bar chart) and a few inputs as images."""
    summary = preview(data)
    task = summary.task.value
    st.caption(_("{count} samples, each of shape {shape} ({dtype}); task: {task}.").format(
        count=f"{summary.samples:,}", shape=summary.input_shape, dtype=summary.input_dtype,
        task=_(TASK_LABELS[task]) if task in TASK_LABELS else task))
    if summary.task is Task.CLASSIFICATION and summary.class_counts:
        x_name, y_name = _("class"), _("samples")
        counts = {x_name: [name for name, _n in summary.class_counts],
                  y_name: [n for _name, n in summary.class_counts]}
        st.bar_chart(counts, x=x_name, y=y_name, height=160, sort=False)
    if summary.images:
        st.image(list(summary.images), caption=list(summary.image_labels) or None, width=56,
                 clamp=True)


def no_training_data(model_title: str) -> None:
    """The Fine-tune page when the tab's model has no training data: what is needed and
    where to give it; then the page stops."""
    st.warning(_(
        "**This model has no training data**, so it cannot be fine-tuned: {model} was "
        "started without `--train-data`. Fine-tuning retrains the pruned model on labelled "
        "samples of the same kind as its evaluation data (the same input shape and targets). "
        "Upload them on the Model page (*Training data*: an .npz, a CSV, or a zip of an "
        "image folder or of IDX files), or start the app with `--train-data FILE`. The other "
        "pages work without it.").format(model=model_title),
        icon=":material/model_training:")
    st.page_link(MODEL_PAGE, label=_("Upload training data on the Model page"),
                 icon=":material/upload:")
    st.stop()
