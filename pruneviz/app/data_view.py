"""The Model page's data section: upload evaluation and training data in the CLI's forms
(pruneviz.data.uploads), see a preview of the data in use, and go back to the model's own
data; and the Fine-tune page's note when the model has no training data."""

from __future__ import annotations

import streamlit as st

from pruneviz.app import state
from pruneviz.app.keys import DATA_FLASH_KEY, data_widget_key
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

MODEL_PAGE = "app_pages/model.py"
IDX_KIND_LABELS = {
    "idx": "any IDX files (structure checked)",
    "mnist": "MNIST (official checksums checked)",
    "fashion-mnist": "Fashion-MNIST (official checksums checked)",
}
WHAT_FOR = {
    "evaluation": "what every metric on every page is measured on",
    "training": "what Fine-tune retrains on, and what data-driven criteria calibrate on",
}


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
    st.caption(f"{describe_uploads()} New data re-measures the baseline and starts a new "
               "experiment log; going back to the model's own data brings back the one "
               "before. Identical data (the same values, whatever the file) changes nothing. "
               "The files are read in memory and never kept or written anywhere.")
    for split, column in zip(DATA_SPLITS, st.columns(2, gap="large"), strict=True):
        with column:
            _split_section(split)


def _split_section(split: DataSplit) -> None:
    upload = state.current_data_upload(split)
    data = state.current_data(split)
    st.markdown(f"**{split.capitalize()} data** — {WHAT_FOR[split]}.")
    if data is None:
        st.warning("This model has no training data: fine-tuning needs it. Upload it here "
                   "(the same kind as the evaluation data), or start the app with "
                   "`--train-data FILE`.", icon=":material/warning:")
    else:
        origin = f"uploaded **{upload.name}**" if upload is not None else "the model's own"
        st.markdown(f"In use: {origin} — {len(data):,} samples of {data.name}.")
        if upload is not None:
            st.caption(f"Values hash {upload.digest}.")
            for note in upload.notes:
                st.caption(f":material/info: {note}")
        show_preview(data)
    file = st.file_uploader(f"{split.capitalize()} data file", type=["npz", "csv", "zip"],
                            key=data_widget_key("file", split),
                            max_upload_size=MAX_UPLOAD_BYTES // 2**20,
                            help=describe_uploads())
    label = ""
    kind = "idx"
    if file is not None and file.name.lower().endswith(".csv"):
        label = st.text_input("Label column (CSV)", key=data_widget_key("label", split),
                              help="The column holding the targets; empty: a column named "
                              "label, target or y, else the last one.")
    if file is not None and file.name.lower().endswith(".zip"):
        kind = st.selectbox("IDX files in the zip are", IDX_KINDS,
                            format_func=IDX_KIND_LABELS.__getitem__,
                            key=data_widget_key("idx", split),
                            help="Only used if the zip holds IDX files; an image folder is "
                            "read as one.")
    left, right = st.columns(2)
    if left.button(f"Use this {split} data", disabled=file is None, type="primary",
                   key=data_widget_key("use", split)):
        assert file is not None
        _take(split, file.name, file.getvalue(), label.strip() or None, kind)
    if right.button("Use the model's own data", disabled=upload is None,
                    key=data_widget_key("reset", split)):
        state.forget_data_upload(split)
        st.session_state[DATA_FLASH_KEY] = f"This tab uses the model's own {split} data again."
        st.rerun()


def _take(split: DataSplit, name: str, content: bytes, label: str | None, kind: str) -> None:
    """Use the uploaded file as the tab's `split` data, or say why not (nothing changes)."""
    try:
        with st.spinner(f"Reading {name}, checking that the model runs on it and measuring "
                        "the model on it ..."):
            taken = state.upload_data(split, name, content, label_column=label, idx_kind=kind)
    except Exception as exc:  # noqa: BLE001 - any failure is shown, the tab stays usable
        st.error(f"Not used: {exc}. The tab's data is unchanged.")
        return
    if taken is None:
        st.info(f"**{name}** holds the {split} data this tab already uses, value for value: "
                "nothing changed, and the plan and results are kept.")
        return
    st.session_state[DATA_FLASH_KEY] = (
        f"This tab now uses **{name}** as its {split} data ({len(taken.data):,} samples): "
        "the baseline was measured on it and a new experiment log started.")
    st.rerun()


def show_preview(data: TensorData) -> None:
    """Sample count, input shape, class counts (a bar chart) and a few inputs as images."""
    summary = preview(data)
    st.caption(f"{summary.samples:,} samples, each of shape {summary.input_shape} "
               f"({summary.input_dtype}); task: {summary.task.value}.")
    if summary.task is Task.CLASSIFICATION and summary.class_counts:
        counts = {"class": [name for name, _ in summary.class_counts],
                  "samples": [n for _, n in summary.class_counts]}
        st.bar_chart(counts, x="class", y="samples", height=160, sort=False)
    if summary.images:
        st.image(list(summary.images), caption=list(summary.image_labels) or None, width=56,
                 clamp=True)


def no_training_data(model_title: str) -> None:
    """The Fine-tune page when the tab's model has no training data: what is needed and
    where to give it; then the page stops."""
    st.warning(
        f"**This model has no training data**, so it cannot be fine-tuned: {model_title} "
        "was started without `--train-data`. Fine-tuning retrains the pruned model on "
        "labelled samples of the same kind as its evaluation data (the same input shape "
        "and targets). Upload them on the Model page (*Training data*: an .npz, a CSV, or "
        "a zip of an image folder or of IDX files), or start the app with "
        "`--train-data FILE`. The other pages work without it.",
        icon=":material/model_training:")
    st.page_link(MODEL_PAGE, label="Upload training data on the Model page",
                 icon=":material/upload:")
    st.stop()
