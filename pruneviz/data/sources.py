"""Where a workbench's model and data come from: a sample, or the user's own files.

A `Source` is what the CLI options and the app's start arguments name:

    sample:digits_cnn                                 a shipped sample and its digits data
    sample:digits_cnn --weights mine.safetensors      the sample architecture, other weights
    models/net.py:build --weights w.safetensors --data eval.npz --train-data train.npz

`load_source` turns it into a `Loaded`: the model (eval mode, never changed afterwards),
an example input, and the data. Nothing in a weights file is unpickled
(pruneviz.data.user_models); the factory and data functions are the user's own trusted code.
Before anything is measured the model is run once on the data, so that a model and data
that do not fit each other fail here with a message, not deep inside a page.

`--device` (`Source.device`) says where the model and its data go: "auto" (the default)
is the GPU when CUDA is available, else the CPU; `resolve_device` turns the name into a
torch.device, and refuses a GPU this machine does not have.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from pruneviz.data.samples import DEFAULT_SAMPLE, load_sample, sample_names
from pruneviz.data.tasks import Task, parse_metric
from pruneviz.data.tensors import TensorData
from pruneviz.data.userfile import is_file_ref, set_load_timeout
from pruneviz.errors import DataError, DeviceError, ModelError, PrunevizError

DEFAULT_EVAL_SUBSET = 2000  # at most this many samples evaluated on each live update in the app
LIVE_BUDGET_S = 1.0  # the app's live subset is sized so that its forward pass takes about this
MIN_LIVE_SUBSET = 100  # ... but never fewer samples than this (an interval says how sure)
FIT_BATCH = 1024  # metrics.evaluate's batch size: the largest batch checked at loading
PROBE_S = 0.25  # check_fit stops growing its batch once one takes this long
MODEL_HELP = (
    "sample:NAME (one of: {samples}) or path/to/file.py:factory, a function in your own "
    "file that returns an nn.Module"
)
AUTO_DEVICE = "auto"  # CUDA when available, else the CPU
CPU = torch.device("cpu")
DEVICE_FORMS = "auto, cpu, cuda or cuda:N"
_DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class Source:
    """A model reference and, optionally, its weights, data and task options."""

    model: str = f"sample:{DEFAULT_SAMPLE}"
    weights: str | None = None  # .safetensors, or a .pt/.pth state dict
    data: str | None = None  # evaluation data (pruneviz.data.readers.load_data forms)
    train_data: str | None = None  # training data, for fine-tuning and calibration
    task: str | None = None  # classification, regression or reconstruction (None: infer)
    metric: str | None = None  # accuracy, top5, mse or path/file.py:function
    label_column: str | None = None  # CSV: the column holding the targets
    eval_subset: int | None = None  # live updates evaluate this many samples (None: all)
    device: str = AUTO_DEVICE  # auto, cpu, cuda or cuda:N (see resolve_device)

    @property
    def is_sample(self) -> bool:
        """Whether the model is a shipped sample (`sample:NAME`)."""
        return self.model.startswith("sample:")

    def describe(self) -> str:
        """One line naming the model, weights and data, for titles and reports."""
        parts = [self.model]
        if self.weights:
            parts.append(f"weights {Path(self.weights).name}")
        if self.data:
            parts.append(f"data {self.data}")
        if self.device != AUTO_DEVICE:
            parts.append(f"device {self.device}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Loaded:
    """A source, loaded: the model as loaded (never changed) and its data, both on
    `device`."""

    source: Source
    model: nn.Module
    example_input: Tensor
    eval_data: TensorData  # the whole evaluation set
    train_data: TensorData | None
    title: str  # a short human name: the sample's title, or the factory's name
    description: str = ""
    notes: tuple[str, ...] = ()  # how the weights were read (e.g. a checkpoint's key)
    seconds_per_sample: float = 0.0  # forward time of one sample in a full batch, as measured
    device: torch.device = CPU  # where the model and the data are

    @property
    def name(self) -> str:
        """The model reference: what plans are stamped with."""
        return self.source.model

    def live_subset(self, budget_s: float = LIVE_BUDGET_S) -> int | None:
        """How many evaluation samples a live update measures so that their forward pass
        takes about `budget_s` here (None: the whole set fits)."""
        return auto_subset(len(self.eval_data), self.seconds_per_sample, budget_s)


def auto_subset(size: int, seconds_per_sample: float, budget_s: float) -> int | None:
    """Samples whose forward pass fits `budget_s` at `seconds_per_sample`, between
    MIN_LIVE_SUBSET and DEFAULT_EVAL_SUBSET; None when the whole set of `size` fits."""
    fits = int(budget_s / seconds_per_sample) if seconds_per_sample > 0 else size
    chosen = max(MIN_LIVE_SUBSET, min(DEFAULT_EVAL_SUBSET, fits))
    return None if chosen >= size else chosen


def check_device_name(name: str) -> str:
    """`name` if it is a device name pruneviz takes (auto, cpu, cuda, cuda:N), else a
    DeviceError saying which are."""
    if not _DEVICE_NAME.fullmatch(name):
        raise DeviceError(f"unknown device {name!r}; use {DEVICE_FORMS}")
    return name


def _device_argument(name: str) -> str:
    try:
        return check_device_name(name)
    except DeviceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def resolve_device(name: str = AUTO_DEVICE) -> torch.device:
    """The torch.device `name` means here: "auto" is CUDA when it is available, else the
    CPU; "cuda" or "cuda:N" when CUDA (and that GPU) is not available is a DeviceError.
    A GPU comes with its index ("cuda" is the current one, cuda:0 unless changed), as
    the model's parameters name it."""
    check_device_name(name)
    if name == AUTO_DEVICE:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name}: CUDA is not available here (no GPU, or a "
                              "CPU-only build of torch); use --device cpu")
        count = torch.cuda.device_count()
        if ":" not in name:  # (torch.device's stubs say index is never None)
            device = torch.device("cuda", torch.cuda.current_device())
        elif device.index >= count:
            raise DeviceError(f"--device {name}: this machine has {count} CUDA device(s), "
                              f"cuda:0 to cuda:{count - 1}; choose one of them or --device cpu")
    return device


def check_model_ref(ref: str) -> None:
    """Refuse a MODEL argument that is neither `sample:NAME` nor `file.py:function`."""
    kind, sep, name = ref.partition(":")
    if sep and kind == "sample":
        if name not in sample_names():
            raise PrunevizError(
                f"unknown sample model {name!r}; allowed: {', '.join(sample_names())}")
        return
    if not is_file_ref(ref):
        raise PrunevizError(
            f"cannot read model reference {ref!r}: use "
            + MODEL_HELP.format(samples=", ".join(sample_names())))


def load_source(source: Source, *, weights_bytes: bytes | None = None,
                weights_name: str = "") -> Loaded:
    """Load the model, its weights and its data, and check that they fit together.

    `weights_bytes` (an upload) replaces `source.weights` when given. The model and the
    data are put on `source.device` (see `resolve_device`).
    """
    from pruneviz.data.user_models import WeightLimits, fit_weights, load_user_model, read_weights

    check_model_ref(source.model)
    device = resolve_device(source.device)
    weights: Path | bytes | None = weights_bytes
    label = weights_name
    notes: list[str] = []
    if weights is None and source.weights:
        weights, label = Path(source.weights).expanduser(), source.weights
    if source.is_sample:
        sample = load_sample(source.model.removeprefix("sample:"))
        model, title, description = sample.model, sample.spec.title, sample.spec.description
        if weights is not None:
            model = sample.spec.build()
            fit_weights(model, read_weights(weights, label, notes=notes,
                                            limits=WeightLimits.for_model(model)), label)
            model.eval()
        train_data: TensorData | None
        if source.data is None:
            if source.task is not None and source.task != sample.spec.task.value:
                raise DataError(f"{source.model} is a {sample.spec.task.value} model on its "
                                f"own data; --task {source.task} needs --data")
            eval_data, train_data = sample.test_data(), sample.train_data()
            scorer = parse_metric(source.metric, sample.spec.task)
            if scorer is not None:
                eval_data = dataclasses.replace(eval_data, scorer=scorer)
                train_data = dataclasses.replace(train_data, scorer=scorer)
            if source.train_data is not None:
                train_data = _data(source, source.train_data, "train", sample.spec.task)
        else:
            eval_data = _data(source, source.data, "test", sample.spec.task)
            train_data = None if source.train_data is None else \
                _data(source, source.train_data, "train", sample.spec.task)
    else:
        model = load_user_model(source.model, weights, label, notes=notes)
        path, _, factory = source.model.rpartition(":")
        title = f"{Path(path).name}:{factory}"
        description = f"your model from {source.model}" + (f", weights {label}" if label else "")
        if source.data is None:
            raise DataError(
                f"{source.model} is your own model, so pruneviz needs data to measure it on: "
                "pass --data (an .npz with x and y, a CSV, an image folder, mnist:FOLDER or "
                "path/file.py:function)")
        eval_data = _data(source, source.data, "test", None)
        train_data = None if source.train_data is None else \
            _data(source, source.train_data, "train", eval_data.task)
    model = model.to(device)
    eval_data = eval_data.to(device)
    train_data = None if train_data is None else train_data.to(device)
    example = eval_data.x[:1].clone()
    seconds_per_sample = check_fit(model, eval_data, source.data or source.model)
    if train_data is not None:
        check_fit(model, train_data, source.train_data or "the training data")
    return Loaded(source, model, example, eval_data, train_data, title, description,
                  tuple(notes), seconds_per_sample, device)


def _data(source: Source, ref: str, split: str, task: Task | None) -> TensorData:
    from pruneviz.data.readers import load_data

    return load_data(ref, split="train" if split == "train" else "test",
                     task=source.task or task, label_column=source.label_column,
                     metric=source.metric)


def check_fit(model: nn.Module, data: TensorData, where: str) -> float:
    """Run the model on one sample, then on batches growing eightfold (up to an
    evaluation batch, `FIT_BATCH`) until one takes `PROBE_S`; explain what does not fit.
    Returns the seconds per sample the last batch took: what sizes the live subset,
    measured at a batch size where batching already pays, without a pass over all the
    data at opening."""
    seconds, size = 0.0, 1
    while True:
        x = data.x[:size]
        try:
            with torch.inference_mode():
                start = time.perf_counter()
                out = model(x)
                elapsed = time.perf_counter() - start
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's model may raise anything
            raise ModelError(
                f"the model failed on a batch of shape {tuple(x.shape)} ({x.dtype}) from "
                f"{where}: {type(exc).__name__}: {exc}; check that the data is what the model "
                "expects, and that its forward works for any batch size") from None
        seconds = elapsed / max(1, x.shape[0])
        if size > 1 and (elapsed >= PROBE_S or size >= min(FIT_BATCH, len(data))):
            break
        size = min(size * 8, FIT_BATCH, len(data))
        if size == x.shape[0]:
            break
    y = data.y[:x.shape[0]]
    if not isinstance(out, Tensor):
        raise ModelError(
            f"the model returned a {type(out).__name__}, not a tensor; pruneviz measures "
            "models whose forward returns one tensor (wrap yours to return the logits)")
    if not torch.isfinite(out).all():
        raise ModelError(f"the model's output on {where} contains NaN or infinite values; "
                         "check the weights and the input scaling")
    if data.task is Task.CLASSIFICATION:
        if out.dim() != 2:
            raise ModelError(
                f"a classifier must return (batch, classes) scores, but the model returned "
                f"shape {tuple(out.shape)}; pass --task regression if the targets are values")
        top = int(data.y.max())
        if top >= out.shape[1]:
            raise ModelError(
                f"{where} has class label {top}, but the model scores only {out.shape[1]} "
                "classes; check the label column, or the model's last layer")
    elif out.shape[0] != y.shape[0] or out[0].numel() != y[0].numel():
        raise ModelError(
            f"the model's output has shape {tuple(out.shape)} but the targets in {where} have "
            f"shape {tuple(y.shape)}; they must match for {data.task.value}")
    return seconds


def absolute_ref(ref: str) -> str:
    """`ref` (a model, weights, data or metric reference) with its path made absolute, so
    that a command naming it works from any folder."""
    kind, sep, rest = ref.partition(":")
    if sep and kind in ("mnist", "fashion-mnist", "idx"):
        return f"{kind}:{Path(rest).expanduser().absolute()}" if rest else ref
    if is_file_ref(ref):
        file, _, name = ref.rpartition(":")
        return f"{Path(file).expanduser().absolute()}:{name}"
    if sep and kind == "sample":
        return ref
    path = Path(ref).expanduser()
    return str(path.absolute()) if path.exists() else ref


def source_options(source: Source, *, weights: bool = True) -> list[str]:
    """The CLI options (after MODEL) that reopen `source`, with absolute paths;
    `weights=False` leaves out --weights (when other weights are given instead)."""
    options = [("--weights", source.weights if weights else None), ("--data", source.data),
               ("--train-data", source.train_data), ("--task", source.task),
               ("--metric", source.metric), ("--label-column", source.label_column),
               ("--device", source.device if source.device != AUTO_DEVICE else None)]
    paths = ("--weights", "--data", "--train-data", "--metric")
    return [part for option, value in options if value
            for part in (option, absolute_ref(value) if option in paths else value)]


def input_files(source: Source) -> set[Path]:
    """Every existing file `source` reads (model, weights, data and metric files)."""
    found = set()
    for ref in (source.model, source.weights, source.data, source.train_data, source.metric):
        if not ref:
            continue
        path = absolute_ref(ref)
        if is_file_ref(path):
            path = path.rpartition(":")[0]
        candidate = Path(path.partition(":")[2] if path.startswith(("mnist:", "idx:",
                                                                    "fashion-mnist:"))
                         else path)
        if candidate.is_file():
            found.add(candidate.resolve())
    return found


def add_source_arguments(parser: argparse.ArgumentParser, *, model: bool = True) -> None:
    """The options every verb (and the app) takes to name a model and its data."""
    if model:
        parser.add_argument("model", metavar="MODEL",
                            help=MODEL_HELP.format(samples=", ".join(sample_names())))
    parser.add_argument("--weights", metavar="FILE",
                        help="weights for MODEL: .safetensors, or a .pt/.pth state dict "
                        "(read with torch.load(weights_only=True); nothing is unpickled)")
    parser.add_argument("--data", metavar="DATA",
                        help="evaluation data: file.npz (arrays x, y), file.csv, an image "
                        "folder (one subfolder per class), mnist:FOLDER, fashion-mnist:FOLDER, "
                        "idx:FOLDER, mnist (download once into a cache) or "
                        "path/file.py:function (default for samples: the digits test split)")
    parser.add_argument("--train-data", metavar="DATA",
                        help="training data for fine-tuning and calibration, same forms")
    parser.add_argument("--task", choices=[t.value for t in Task],
                        help="what the model's output means (default: inferred from targets)")
    parser.add_argument("--metric", metavar="METRIC",
                        help="accuracy, top5 (any k), mse, or path/file.py:function(output, "
                        "target) returning the batch mean")
    parser.add_argument("--label-column", metavar="NAME",
                        help="CSV data: the column holding the targets (default: label/target/y, "
                        "else the last column)")
    parser.add_argument("--eval-subset", type=int, metavar="N",
                        help="evaluate on a fixed random subset of N samples (class-balanced); "
                        "the app's live updates use one by default for large sets")
    parser.add_argument("--device", default=AUTO_DEVICE, type=_device_argument,
                        metavar="{auto,cpu,cuda,cuda:N}",
                        help="where the model runs: masks, scores, evaluation and latency "
                        "(default: auto, the GPU when CUDA is available, else the CPU)")
    parser.add_argument("--load-timeout", type=float, metavar="SECONDS",
                        help="the longest your model or data file may take to import, and "
                        "its function to return (default: 120)")


def source_from_args(args: argparse.Namespace, *, default_model: str | None = None) -> Source:
    """The Source named by parsed `add_source_arguments` options."""
    subset = getattr(args, "eval_subset", None)
    if subset is not None and subset < 1:
        raise DataError(f"--eval-subset must be at least 1, got {subset}")
    timeout = getattr(args, "load_timeout", None)
    if timeout is not None:
        set_load_timeout(timeout)
    return Source(
        model=getattr(args, "model", None) or default_model or f"sample:{DEFAULT_SAMPLE}",
        weights=args.weights, data=args.data, train_data=args.train_data, task=args.task,
        metric=args.metric, label_column=args.label_column, eval_subset=subset,
        device=getattr(args, "device", None) or AUTO_DEVICE,
    )


def with_model(source: Source, model: str) -> Source:
    """`source` for another model: a sample keeps no user weights or data options (only
    the device)."""
    if model == source.model:
        return source
    return replace(Source(), model=model, device=source.device)


__all__ = [
    "AUTO_DEVICE",
    "DEFAULT_EVAL_SUBSET",
    "LIVE_BUDGET_S",
    "auto_subset",
    "Loaded",
    "Source",
    "add_source_arguments",
    "check_device_name",
    "check_fit",
    "check_model_ref",
    "load_source",
    "source_from_args",
    "source_options",
    "absolute_ref",
    "input_files",
    "resolve_device",
    "with_model",
]
