"""Session state for the app: one cached pristine copy per process, one workspace per tab.

The pristine sample (model weights and data) is loaded once per process with
st.cache_resource and never changed; every browser session builds its own Workspace
(a Workbench with a private model copy, its experiment log and weight sets) in
st.session_state, so two tabs never see each other's pruning. The functions below that
measure or record are thin delegates to the tab's Workspace, which does the work without
Streamlit; what stays here is the model choice, uploads and the Prune page's widget keys.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st
import torch
from torch import Tensor, nn

from pruneviz.app.keys import (
    BENCH_ID_KEY,
    COMPARISON_KEY,
    DATA_UPLOAD_KEY,
    EXPORTS_SUBFOLDER_KEY,
    FINETUNE_WORKERS_KEY,
    KEPT_KEY,
    MODEL_KEY,
    PREFIX,
    REOPEN_NOTE_KEY,
    SAVED_KEY,
    SUBSET_KEY,
    SWEEP_WORKERS_KEY,
    TUNED_KEY,
    UPLOAD_KEY,
    USER_KEY,
    WORKERS_KEY,
    WORKSPACE_KEY,
)
from pruneviz.core.layers import values_key
from pruneviz.core.plan import Plan
from pruneviz.data.access import CLASSROOM_FLAG
from pruneviz.data.samples import SAMPLES
from pruneviz.data.sources import (
    LIVE_BUDGET_S,
    Loaded,
    Source,
    add_source_arguments,
    auto_subset,
    check_fit,
    check_model_ref,
    load_source,
    resolve_device,
    source_from_args,
    with_model,
)
from pruneviz.data.tasks import Task
from pruneviz.data.tensors import TensorData
from pruneviz.data.uploads import (
    DATA_SPLITS,
    DataSplit,
    DataUpload,
    data_digest,
    fit_upload,
    read_upload,
)
from pruneviz.data.user_models import WeightLimits, fit_weights, read_weights
from pruneviz.errors import PrunevizError
from pruneviz.i18n import _
from pruneviz.measure.meter import Report
from pruneviz.workflows.allocation import Budget
from pruneviz.workflows.experiments import ExperimentLog
from pruneviz.workflows.saved import Saver, reopen
from pruneviz.workflows.sensitivity import SensitivityResult
from pruneviz.workflows.store import SavedHistory, StoreError, WorkspaceStore, default_root
from pruneviz.workflows.workbench import LIVE_LATENCY_RUNS, Workbench, build_workbench
from pruneviz.workflows.workspace import Compared, Workspace

# Above this many prunable layers the Prune page shows one layer's controls at a time.
MANY_LAYERS = 16
KEPT_WORKSPACES = 3  # workspaces a tab keeps besides its current one (each holds a model)
LATENCY_RUNS = LIVE_LATENCY_RUNS  # pairs (masked, reference) timed per plan


# -- the model this tab works on: a sample, or the one the app was started with ---------------
# The command line this process was started with, as this module first saw it: under
# `streamlit run app.py -- --model ...` it is [app.py, --model, ...]; under pytest (AppTest)
# it is pytest's own, and runpy may later put app.py in sys.argv[0] for a while.
LAUNCH_ARGV: list[str] = list(sys.argv)


def app_arguments() -> list[str]:
    """The arguments after `--` of `streamlit run app.py -- --model ...` (none otherwise)."""
    return LAUNCH_ARGV[1:] if LAUNCH_ARGV and Path(LAUNCH_ARGV[0]).name == "app.py" else []


@st.cache_resource(show_spinner=False)
def startup_source(argv: tuple[str, ...]) -> tuple[Source, str | None]:
    """The source the app was started with, and the reason if the arguments are wrong
    (then the default sample)."""
    parser = argparse.ArgumentParser(prog="streamlit run app.py --", add_help=False,
                                     exit_on_error=False)
    parser.add_argument("--model", default=None)
    parser.add_argument(CLASSROOM_FLAG, action="store_true")  # app/login.py reads it
    parser.add_argument("--workspace", default=None)  # workspace_root() reads it
    add_source_arguments(parser, model=False)
    try:
        args, unknown = parser.parse_known_args(list(argv))
        if unknown:
            raise PrunevizError(f"unknown option(s) {' '.join(unknown)}")
        source = source_from_args(args)
        check_model_ref(source.model)
        resolve_device(source.device)  # a GPU this machine lacks: said here, not on load
        return source, None
    except (argparse.ArgumentError, PrunevizError) as exc:
        return Source(), f"the app's start arguments were not used: {exc}"


# -- where the app may write ------------------------------------------------------------------
EXPORT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def exports_root() -> Path:
    """The one folder the app writes exports into: $PRUNEVIZ_HOME/exports, else the
    user's data folder ($XDG_DATA_HOME, default ~/.local/share)/pruneviz/exports. The
    app never writes to a path a browser names: a page may only name a folder in here.
    In classroom mode each session has a folder of its own in there (app/login.py)."""
    home = os.environ.get("PRUNEVIZ_HOME")
    if home:
        root = Path(home).expanduser() / "exports"
    else:
        data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        root = Path(data).expanduser() / "pruneviz" / "exports"
    own = st.session_state.get(EXPORTS_SUBFOLDER_KEY)  # a classroom session's own folder
    return root / own if isinstance(own, str) else root


def export_folder(name: str) -> Path:
    """The folder `name` inside `exports_root()`; a name that is a path, or could climb
    out of it, is refused."""
    name = name.strip()
    if not EXPORT_NAME.fullmatch(name) or name in (".", ".."):
        raise PrunevizError(
            f"{name[:80]!r} is not an export name: use up to 64 letters, digits, dots, "
            "dashes or underscores (no slashes); the export goes into "
            f"{exports_root()}/NAME")
    return exports_root() / name


# -- where the tab's work is saved, as it happens ----------------------------------------------
def workspace_root() -> Path:
    """The folder of the saved workspaces: --workspace DIR, else $PRUNEVIZ_HOME/workspaces,
    else the user's data folder's pruneviz/workspaces. In classroom mode each student's
    work is in a folder of its own in there."""
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    parser.add_argument("--workspace", default=None)
    try:
        given = parser.parse_known_args(app_arguments())[0].workspace
    except argparse.ArgumentError:
        given = None
    root = Path(given).expanduser() if given else default_root()
    user = st.session_state.get(USER_KEY)  # a student's name (app/login.py cleans it)
    return root / "classroom" / user if isinstance(user, str) else root


@st.cache_resource(show_spinner=False)
def _store(root: str) -> WorkspaceStore:
    return WorkspaceStore(Path(root))


def workspace_store() -> WorkspaceStore:
    """The saved workspaces (one store per folder and process); StoreError if the folder
    cannot be used."""
    return _store(str(workspace_root()))


@dataclass
class SavedLink:
    """The saved workspace this tab's work goes into: made on the tab's first change
    (possibly in a background thread: this holds no Streamlit state)."""

    name: str
    id: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def make(self, store: WorkspaceStore) -> str:
        with self.lock:
            if self.id is None or not store.exists(self.id):
                self.id = store.create(self.name)
            return self.id


def saved_link() -> SavedLink:
    """This tab's saved workspace (its id is None until the tab changes something)."""
    link = st.session_state.get(SAVED_KEY)
    if not isinstance(link, SavedLink):
        stamp = time.strftime("%Y-%m-%d %H:%M")
        link = st.session_state[SAVED_KEY] = SavedLink(
            f"{model_title(current_model_ref())}, {stamp}")
    return link


def save_problem() -> str | None:
    """Why this tab's work is not being saved, if it is not."""
    try:
        workspace_store()
    except StoreError as exc:
        return str(exc)
    saver = getattr(st.session_state.get(WORKSPACE_KEY), "saver", None)
    return saver.error if isinstance(saver, Saver) else None


def jobs_running() -> bool:
    """Whether one of this tab's long jobs (analysis, fine-tuning, sweep) runs."""
    return any(getattr(worker, "running", False)
               for key in (WORKERS_KEY, FINETUNE_WORKERS_KEY, SWEEP_WORKERS_KEY)
               for worker in st.session_state.get(key, {}).values())


def history_key(identity: tuple[object, ...]) -> str:
    """The key of one model's history in a saved workspace: what its workbench is built
    from (the model, uploaded weights, the live evaluation subset, uploaded data)."""
    return json.dumps(list(identity))


def open_saved(id: str) -> None:
    """Make saved workspace `id` this tab's: its model, weights and evaluation subset,
    then (when the pages next ask for the workspace) its plan, experiments and results.
    Refused while one of the tab's jobs runs, or when the app cannot open its model."""
    if jobs_running():
        raise PrunevizError("a job of this tab is running: wait for it or cancel it before "
                            "opening another workspace")
    store = workspace_store()
    key = store.current(id) or next(iter(store.history_keys(id)), None)
    history = None if key is None else store.history(id, key)
    if history is None:
        raise PrunevizError("this workspace holds no work yet: there is nothing to open")
    ref = history.identity.get("model")
    if not isinstance(ref, str) or ref not in model_choices():
        raise PrunevizError(
            f"this workspace was made on {history.title}, which this app was not started "
            f"with: start it with --model {ref} (and the same --data) to reopen it")
    st.session_state[MODEL_KEY] = ref
    digest = history.identity.get("weights_digest")
    if isinstance(digest, str):
        found = history.tensors.get("upload")
        if found is None:
            raise PrunevizError("this workspace's uploaded weights are missing from it")
        loaded = current_loaded()
        model = copy.deepcopy(loaded.model)
        fit_weights(model, store.read_tensors(found), "the workspace's uploaded weights")
        name = history.identity.get("weights")
        st.session_state[UPLOAD_KEY] = Upload(ref, name if isinstance(name, str) else
                                              "uploaded weights", digest, model.eval())
    else:
        forget_upload()
    subset = history.identity.get("subset")
    set_eval_subset(subset if isinstance(subset, int) else None)
    _restore_data_uploads(ref, history, store)
    link = saved_link()
    link.id, link.name = id, store.info(id).name
    for key in (WORKSPACE_KEY, BENCH_ID_KEY, KEPT_KEY, WORKERS_KEY, FINETUNE_WORKERS_KEY,
                SWEEP_WORKERS_KEY, TUNED_KEY, COMPARISON_KEY):
        st.session_state.pop(key, None)
    clear_prune_widgets()


def _restore_data_uploads(ref: str, history: SavedHistory, store: WorkspaceStore) -> None:
    """Put the evaluation and training data a saved history was made on back in the tab
    (kept in it as tensors: no file is read again)."""
    uploads: dict[tuple[str, str], DataUpload] = st.session_state.setdefault(
        DATA_UPLOAD_KEY, {})
    loaded = current_loaded()
    for split in DATA_SPLITS:
        uploads.pop((ref, split), None)
        saved = history.identity.get(f"{split} data")
        if not isinstance(saved, dict):
            continue
        try:
            tensors = store.read_tensors(str(history.tensors.get(f"data:{split}", "")))
            data = TensorData(tensors["x"], tensors["y"], Task(saved["task"]),
                              str(saved["name"]), scorer=loaded.eval_data.scorer,
                              classes=tuple(str(c) for c in saved.get("classes", ())))
        except (KeyError, ValueError, TypeError) as exc:
            raise PrunevizError(f"the {split} data this workspace was made on cannot be "
                                f"read back ({exc}): it may be damaged") from None
        uploads[(ref, split)] = DataUpload(str(saved["name"]), split, str(saved["digest"]),
                                           data.to(loaded.device))


def start_new_workspace() -> None:
    """Save this tab's next changes into a new workspace (the current one stays saved)."""
    st.session_state.pop(SAVED_KEY, None)
    for key in (WORKSPACE_KEY, BENCH_ID_KEY, KEPT_KEY, WORKERS_KEY, FINETUNE_WORKERS_KEY,
                SWEEP_WORKERS_KEY, TUNED_KEY, COMPARISON_KEY):
        st.session_state.pop(key, None)
    clear_prune_widgets()


def device_label(device: torch.device) -> str:
    """The device a tab runs on, for people: "the CPU", or "cuda:0 (the GPU's name)"."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return _("the CPU") if device.type == "cpu" else str(device)


def started_with() -> tuple[Source, str | None]:
    """The source this app process was started with (and any problem with it)."""
    return startup_source(tuple(app_arguments()))


def model_choices() -> list[str]:
    """The models the sidebar offers: the one the app was started with, then the samples."""
    first = started_with()[0].model
    samples = [f"sample:{name}" for name in SAMPLES]
    return [first, *(ref for ref in samples if ref != first)]


def source_for(ref: str) -> Source:
    """The full source of model `ref`: the start arguments for the model the app was
    started with, the sample with its own data otherwise."""
    return with_model(started_with()[0], ref)


@st.cache_resource(show_spinner="Loading the model and its data ...", max_entries=8)
def _pristine(key: str) -> Loaded:
    return load_source(Source(**json.loads(key)))


def pristine(source: Source) -> Loaded:
    """The model and data of `source`, loaded once per process; shared by all tabs and
    never changed (each tab's session prunes its own copy)."""
    return _pristine(json.dumps(dataclasses.asdict(source), sort_keys=True))


def model_title(ref: str) -> str:
    """A short name for the sidebar: the sample's title, or the user's factory."""
    spec = SAMPLES.get(ref.removeprefix("sample:")) if ref.startswith("sample:") else None
    if spec is not None:
        return spec.title
    path, _sep, factory = ref.rpartition(":")
    return f"{Path(path).name}:{factory} (yours)"


def shown_model_title(ref: str) -> str:
    """`model_title` in the tab's language. Not a format_func as it is: Streamlit's tests
    call those outside the page's run, in English (see widgets.localized)."""
    spec = SAMPLES.get(ref.removeprefix("sample:")) if ref.startswith("sample:") else None
    if spec is not None:
        return _(spec.title)
    path, _sep, factory = ref.rpartition(":")
    return _("{name} (yours)").format(name=f"{Path(path).name}:{factory}")


def current_model_ref() -> str:
    """The model this tab works on (the model the app was started with until the user
    picks another)."""
    ref = st.session_state.get(MODEL_KEY)
    return ref if isinstance(ref, str) else started_with()[0].model


def current_loaded() -> Loaded:
    """The pristine model and data of this tab's model."""
    return pristine(source_for(current_model_ref()))


# -- weights uploaded in this tab, for the current architecture ----------------------------
@dataclass(frozen=True)
class Upload:
    """Weights a user uploaded for model `ref` (kept per tab, never written anywhere)."""

    ref: str
    name: str
    digest: str  # of the weights' values (values_key), not of the file's bytes
    model: nn.Module  # the architecture with these weights, eval mode, never changed
    notes: tuple[str, ...] = ()  # how the file was read (a checkpoint's key, say)


def upload_weights(name: str, data: bytes) -> Upload | None:
    """Read uploaded weights (nothing unpickled), fit them to this tab's architecture and
    make them the tab's original weights. Weights identical, bit for bit, to the ones in
    use (whatever the file) change nothing, and the tab keeps its plan and results:
    returns None then. Raises with a message; nothing changes then either."""
    loaded = current_loaded()
    model = copy.deepcopy(loaded.model)
    notes: list[str] = []
    fit_weights(model, read_weights(data, name, notes=notes,
                                    limits=WeightLimits.for_model(model)), name)
    digest = values_key(model.state_dict())
    in_use = current_upload()
    if digest == (in_use.digest if in_use is not None
                  else values_key(loaded.model.state_dict())):
        return None
    check_fit(model.eval(), current_eval_data(), "the evaluation data")
    upload = Upload(current_model_ref(), name, digest, model, tuple(notes))
    st.session_state[UPLOAD_KEY] = upload
    return upload


def current_upload() -> Upload | None:
    """The weights uploaded for this tab's model, if any."""
    upload = st.session_state.get(UPLOAD_KEY)
    if isinstance(upload, Upload) and upload.ref == current_model_ref():
        return upload
    return None


def forget_upload() -> None:
    """Go back to the model's own weights (the shipped or start-argument ones)."""
    st.session_state.pop(UPLOAD_KEY, None)


def eval_subset_size() -> int | None:
    """How many evaluation samples each live update measures (None: all of them)."""
    chosen = st.session_state.get(SUBSET_KEY, {}).get(current_model_ref(), 0)
    if chosen is None or (isinstance(chosen, int) and chosen > 0):
        return chosen
    source = source_for(current_model_ref())
    if source.eval_subset is not None:
        return source.eval_subset
    # sized from the model's measured forward time, for the data this tab evaluates on
    return auto_subset(len(current_eval_data()), current_loaded().seconds_per_sample,
                       LIVE_BUDGET_S)


def set_eval_subset(n: int | None) -> None:
    """Measure this model's live updates on `n` samples (None: the whole evaluation set)."""
    st.session_state.setdefault(SUBSET_KEY, {})[current_model_ref()] = n


# -- evaluation and training data uploaded in this tab, for the current model ---------------
def current_data_upload(split: DataSplit) -> DataUpload | None:
    """The `split` data ("evaluation" or "training") uploaded for this tab's model, if
    any (its `digest` identifies the values)."""
    found = st.session_state.get(DATA_UPLOAD_KEY, {}).get((current_model_ref(), split))
    return found if isinstance(found, DataUpload) else None


def current_data(split: DataSplit) -> TensorData | None:
    """This tab's `split` data: the uploaded one, else the model's own (None: the model
    has no training data)."""
    upload = current_data_upload(split)
    if upload is not None:
        return upload.data
    loaded = current_loaded()
    return loaded.eval_data if split == "evaluation" else loaded.train_data


def current_eval_data() -> TensorData:
    """This tab's evaluation data: the uploaded one, else the model's own."""
    upload = current_data_upload("evaluation")
    return upload.data if upload is not None else current_loaded().eval_data


def upload_data(split: DataSplit, name: str, content: bytes, *,
                label_column: str | None = None, idx_kind: str = "idx") -> DataUpload | None:
    """Read uploaded `split` data (see pruneviz.data.uploads: the CLI's forms and checks),
    check that this tab's model runs on it, and make it the tab's `split` data: the
    workspace is rebuilt on it (the one before is kept, see `workspace()`). Data with the
    values of the data in use changes nothing: returns None then. Raises with a message;
    nothing changes then either."""
    loaded = current_loaded()
    in_use = current_data(split)
    upload = read_upload(name, content, split=split, task=loaded.eval_data.task,
                         label_column=label_column, idx_kind=idx_kind)
    if in_use is not None and upload.digest == data_digest(in_use):
        return None
    data = dataclasses.replace(upload.data, scorer=loaded.eval_data.scorer).to(loaded.device)
    weights = current_upload()
    example = current_eval_data().x[:1]
    fit_upload(weights.model if weights is not None else loaded.model, data, example,
               f"the uploaded {upload.name}")
    upload = dataclasses.replace(upload, data=data)
    uploads: dict[tuple[str, str], DataUpload] = st.session_state.setdefault(
        DATA_UPLOAD_KEY, {})
    key = (current_model_ref(), split)
    before = uploads.get(key)
    uploads[key] = upload
    try:
        workspace()  # opened here, so that a failure leaves the tab as it was
    except Exception:
        forget_data_upload(split)
        if before is not None:
            uploads[key] = before
        raise
    return upload


def forget_data_upload(split: DataSplit) -> None:
    """Go back to the model's own `split` data (the sample's, or the start arguments')."""
    st.session_state.get(DATA_UPLOAD_KEY, {}).pop((current_model_ref(), split), None)


def workspace() -> Workspace:
    """This tab's workspace (its workbench, experiment log and weight sets), built on first
    use and whenever the chosen model, its weights, its uploaded data or the evaluation
    subset change. The workspace switched away from is kept (the last KEPT_WORKSPACES of
    them), so switching back restores its plan, experiments and results."""
    ref = current_model_ref()
    upload = current_upload()
    subset = eval_subset_size()
    given, train_given = current_data_upload("evaluation"), current_data_upload("training")
    identity = (ref, upload.digest if upload else None, subset,
                given.digest if given else None, train_given.digest if train_given else None)
    found = st.session_state.get(WORKSPACE_KEY)
    if isinstance(found, Workspace) and st.session_state.get(BENCH_ID_KEY) == identity:
        return found
    kept: dict[object, Workspace] = st.session_state.setdefault(KEPT_KEY, {})
    if isinstance(found, Workspace):
        found.refiner.stop()  # nothing measures a workspace nobody looks at
        kept[st.session_state.get(BENCH_ID_KEY)] = found
    space = kept.pop(identity, None)
    while len(kept) > KEPT_WORKSPACES:
        kept.pop(next(iter(kept)))  # the one left longest ago
    if space is None:
        space = _open_workspace(ref, upload, subset, identity)
    st.session_state[WORKSPACE_KEY] = space
    st.session_state[BENCH_ID_KEY] = identity
    clear_prune_widgets()  # the Prune page re-seeds them from this workspace's plan
    st.session_state.pop(COMPARISON_KEY, None)  # its experiments were in the old log
    return space


def _open_workspace(ref: str, upload: Upload | None, subset: int | None,
                    identity: tuple[object, ...]) -> Workspace:
    loaded = current_loaded()
    model = upload.model if upload is not None else loaded.model
    eval_data = current_eval_data()
    example = loaded.example_input if eval_data is loaded.eval_data else eval_data.x[:1].clone()
    with st.spinner(_("Opening {model}: tracing which layers are coupled and measuring the "
                      "unpruned model ...").format(model=shown_model_title(ref))):
        bench = build_workbench(ref, model, example, eval_data, current_data("training"),
                                eval_subset=subset, live=True)
    source = source_for(ref)  # the options that reopen it (an upload: its file name)
    bench.source = dataclasses.replace(source, weights=upload.name) if upload else source
    given, train_given = current_data_upload("evaluation"), current_data_upload("training")
    bench.source = dataclasses.replace(
        bench.source, data=given.name if given else bench.source.data,
        train_data=train_given.name if train_given else bench.source.train_data)
    # fine-tuned weights are kept per workbench identity, like the fine-tuning workers
    tuned = st.session_state.setdefault(TUNED_KEY, {}).setdefault(str(identity), {})
    space = Workspace(bench, tuned)
    _save(space, ref, upload, subset, identity)
    return space


def _save(space: Workspace, ref: str, upload: Upload | None, subset: int | None,
          identity_now: tuple[object, ...]) -> None:
    """Save the workspace's changes as they happen; if the tab's saved workspace has
    this model's history, put it back first."""
    try:
        store = workspace_store()
    except StoreError:
        return  # the sidebar says why (save_problem)
    link = saved_link()
    key = history_key(identity_now)
    identity: dict[str, object] = {"model": ref, "weights": upload.name if upload else None,
                                   "weights_digest": upload.digest if upload else None,
                                   "subset": subset}
    tensors = {"upload": upload.model.state_dict()} if upload else {}
    title = model_title(ref) + (f" with {upload.name}" if upload else "")
    for split in DATA_SPLITS:  # uploaded data is kept with the history, to reopen it
        given = current_data_upload(split)
        if given is not None:
            identity[f"{split} data"] = {"name": given.name, "digest": given.digest,
                                         "task": given.data.task.value,
                                         "classes": list(given.data.classes)}
            tensors[f"data:{split}"] = {"x": given.data.x, "y": given.data.y}
            title += f", {split} data {given.name}"
    saver = Saver(store, key, identity, title, lambda: link.make(store), tensors)
    id = link.id
    try:
        history = store.history(id, key) if id is not None else None
        if id is not None and history is not None:
            problems = reopen(space, history, store)
            if problems:
                st.session_state[REOPEN_NOTE_KEY] = problems
            saver.id = id
            store.set_current(id, key)
    except (StoreError, ValueError) as exc:
        st.session_state[REOPEN_NOTE_KEY] = [f"the saved work could not be read: {exc}"]
    saver.attach(space)


def sensitivity_result() -> SensitivityResult | None:
    """The last sensitivity analysis of this tab's model, if one has run (or is running:
    its points so far), or the one its saved workspace kept."""
    worker = st.session_state.get(WORKERS_KEY, {}).get(bench_key())
    snapshot = getattr(worker, "snapshot", None)
    if snapshot is None:
        return workspace().sensitivity
    progress = snapshot()
    result: SensitivityResult | None = progress.result
    if not progress.running and result is not None:
        workspace().keep_sensitivity(result)  # saved, once
    return result


def workbench() -> Workbench:
    """This tab's workbench (see `workspace()`)."""
    return workspace().bench


def bench_key() -> str:
    """What this tab's workbench was built from (model, uploaded weights, eval subset):
    background workers are kept per key, so a result never mixes two of them."""
    workspace()
    return str(st.session_state[BENCH_ID_KEY])


def experiment_log() -> ExperimentLog:
    """This tab's record of every configuration evaluated (baseline first)."""
    return workspace().log


def measure_live() -> Report:
    """Measure the current plan at the cost of one forward pass and record it; the slow
    figures follow in the background (see Workspace.measure_live)."""
    return workspace().measure_live()


# -- which weights the tab prunes: the original ones, or fine-tuned ones -------------------
def current_weights() -> str:
    """The name of the weights this tab's session prunes (ORIGINAL unless fine-tuned
    weights were taken from the Fine-tune page)."""
    return workspace().weights


def remember_weights(name: str, state: dict[str, Tensor]) -> None:
    """Keep fine-tuned weights under `name`, for experiments that were measured on them."""
    workspace().remember_weights(name, state)


def weights_state(name: str) -> dict[str, Tensor]:
    """The weights called `name` in this tab (ORIGINAL: the model's own, or uploaded)."""
    return workspace().weights_state(name)


def use_weights(name: str, plan: Plan | None = None) -> None:
    """Make the weights called `name` this tab's originals, with `plan` (default: the
    current plan) applied; the Prune page re-seeds its widgets from it."""
    workspace().use_weights(name, plan)
    clear_prune_widgets()


def restore_experiment(id: int) -> None:
    """Apply experiment `id`'s plan to this tab's model, on the weights it was measured
    with (restoring a fine-tuned experiment puts its fine-tuned weights in the tab)."""
    workspace().restore_experiment(id)
    clear_prune_widgets()


# -- Prune page widget keys ----------------------------------------------------------------
def clear_prune_widgets() -> None:
    """Forget the Prune page's widget values; the page re-seeds them from the current plan."""
    for key in [k for k in st.session_state if str(k).startswith(PREFIX)]:
        del st.session_state[key]


def restore_plan(plan: Plan) -> None:
    """Apply `plan` to this tab's model and make the Prune page show it."""
    workspace().restore_plan(plan)
    clear_prune_widgets()


def seed(key: str, value: Any) -> None:
    """Give a widget its starting value unless the user has already set it."""
    if key not in st.session_state:
        st.session_state[key] = value


# -- workflows over many plans, recorded in this tab's experiment log ------------------------
def best_forms() -> dict[int, Report]:
    """Best deployable form measured for each experiment id (empty until measured)."""
    return workspace().best_forms


def measure_best_forms(runs: int = 10) -> None:
    """Measure the deployable forms of every recorded configuration, each on the weights it
    was measured with; keep the one to ship for speed (masked unless another is measurably
    faster)."""
    workspace().measure_best_forms(runs)


def record_budget_comparison(result: SensitivityResult, budget: Budget,
                             cap: float) -> list[Compared]:
    """Fit a uniform, a global and a sensitivity-guided plan to `budget`, measure each with
    latency and record it as an experiment (see Workspace.record_budget_comparison)."""
    return workspace().record_budget_comparison(result, budget, cap)


def record_compression(kind: str, apply_to: str, rank: float | None = None,
                       group_size: int | None = None) -> None:
    """Measure technique `kind` ("int8", "int8-static", "int4-w" in groups of at most
    `group_size`, or "svd" at `rank`, a fraction of full rank) on the unpruned model and/or
    the current plan (`apply_to`, one of techniques.APPLY_TO) and record the points;
    `last_compression()` says what was done."""
    workspace().record_compression(kind, apply_to, rank, group_size)


def last_compression() -> list[tuple[str, tuple[str, ...]]]:
    """What the last int8 / SVD form measured: per point, a sentence and its notes."""
    return workspace().last_compression()
