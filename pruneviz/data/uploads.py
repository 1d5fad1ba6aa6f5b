"""Evaluation and training data given as an uploaded file (the app's Model page).

`read_upload(name, content, split=...)` reads the bytes of an uploaded file into a
`DataUpload` in every form the CLI's `--data` takes from a file or folder:

    eval.npz        arrays x and y (no y: an autoencoder, targets = inputs)
    eval.csv        numeric columns, one of them the targets (`label_column`)
    images.zip      an image folder: one subfolder of images per class, or train/ and
                    test/ folders of those (the split's one is used)
    mnist.zip       IDX files (t10k-... for evaluation, train-... for training, gzipped or
                    not), read as `idx_kind`: idx (structure-checked), mnist or
                    fashion-mnist (checked against the official checksums)

The file is written into a private temporary folder (a zip is unpacked there after its
member list is checked: count, sizes, compression ratio, no absolute paths, no `..`, no
links) and read there by `pruneviz.data.readers.load_data`, so the checks and messages
are the CLI's; the folder is removed before this returns, and messages name the upload,
not the folder. Nothing is unpickled.

`fit_upload` checks that a model runs on the data (saying what input shape the model
takes when it does not), and `preview` summarises data for a page: sample count, input
shape, class counts and a few inputs as images.
"""

from __future__ import annotations

import hashlib
import io
import re
import stat
import tempfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from pruneviz.data.idx import IDX_KINDS, Split
from pruneviz.data.limits import check_declared, check_expansion
from pruneviz.data.readers import load_data
from pruneviz.data.sources import check_fit
from pruneviz.data.tasks import Task
from pruneviz.data.tensors import TensorData
from pruneviz.errors import DataError, ModelError
from pruneviz.i18n import N_, _

DataSplit = Literal["evaluation", "training"]
DATA_SPLITS: tuple[DataSplit, ...] = ("evaluation", "training")
MAX_UPLOAD_BYTES = 100 * 2**20  # one uploaded data file, as sent (zip or not)
MAX_ZIP_MEMBERS = 50_000  # files (and folders) in an uploaded zip
UPLOAD_SUFFIXES = (".npz", ".csv", ".zip")
PREVIEW_IMAGES = 8  # inputs `preview` draws as images
UPLOAD_HELP = N_(
    "An .npz file with arrays x (inputs) and y (targets; leave y out for an autoencoder); "
    "a .csv file of numeric columns, one of them the targets (the label column: default a "
    "column named label, target or y, else the last one); or a .zip of an image folder "
    "(one subfolder of PNG, JPEG, BMP or GIF images per class, all the same size, or "
    "train/ and test/ folders of those) or of IDX files (t10k-images-idx3-ubyte and "
    "t10k-labels-idx1-ubyte for evaluation, train-... for training, gzipped or not)."
)
_IDX_FILE = re.compile(r"(t10k|train)-(images|labels)-idx[13]-ubyte(\.gz)?")
_SKIPPED_PARTS = ("__MACOSX",)  # folders of metadata some zip tools add
_IN_THE_APP = (  # a reader's advice naming a CLI option -> the same advice in the app
    ("--label-column", "the label column"),
    ("pass --task", "start the app with --task"),
)
Array = NDArray[Any]


@dataclass(frozen=True)
class DataUpload:
    """Data a user uploaded: the file's `name`, which `split` it is for ("evaluation" or
    "training"), a `digest` of its values (see `data_digest`: the same data from another
    file has the same digest), the data itself, and how the file was read (`notes`)."""

    name: str
    split: DataSplit
    digest: str
    data: TensorData
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataPreview:
    """What a page shows of a data set before and after it is used.

    `class_counts`: (class name, samples) per class, for classification (empty
    otherwise). `images`: up to PREVIEW_IMAGES inputs as (H, W) or (H, W, 3) float arrays
    scaled to [0, 1] for display, when the inputs are 1- or 3-channel images (N, C, H, W);
    `image_labels` the target of each, as text (empty when the targets are not one label
    or value per sample)."""

    samples: int
    input_shape: tuple[int, ...]
    input_dtype: str
    task: Task
    class_counts: tuple[tuple[str, int], ...] = ()
    images: tuple[Array, ...] = ()
    image_labels: tuple[str, ...] = ()


def describe_uploads() -> str:
    """The accepted upload forms and the size limit, for the page."""
    return _("{forms} At most {size} MB per file.").format(
        forms=_(UPLOAD_HELP), size=MAX_UPLOAD_BYTES // 2**20)


def read_upload(
    name: str,
    content: bytes,
    *,
    split: DataSplit,
    task: Task | None = None,
    label_column: str | None = None,
    idx_kind: str = "idx",
) -> DataUpload:
    """Read the uploaded file `name` (its bytes `content`) as `split` data.

    `task` None infers it from the targets, as the CLI does; `label_column` names a
    CSV's target column; `idx_kind` says how IDX files in a zip are checked (idx, mnist
    or fashion-mnist). Raises a DataError that says what is wrong and what to do.
    """
    _validate_split(split)
    if idx_kind not in IDX_KINDS:
        raise DataError(f"unknown IDX kind {idx_kind!r}; allowed: {', '.join(IDX_KINDS)}")
    base = _file_name(name)
    suffix = Path(base).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise DataError(f"{base} is not a data file pruneviz reads from an upload "
                        f"({suffix or 'no extension'}). {UPLOAD_HELP}")
    if not content:
        raise DataError(f"{base} is empty (0 bytes); upload the file again")
    if len(content) > MAX_UPLOAD_BYTES:
        raise DataError(
            f"{base} is {len(content) / 2**20:,.1f} MB, more than the {MAX_UPLOAD_BYTES // 2**20} "
            "MB an upload may be; use a smaller data set (a few thousand samples measure a "
            "model well), or start the app with --data / --train-data FILE")
    reader_split: Split = "test" if split == "evaluation" else "train"
    notes: list[str] = []
    on_disk = re.sub(r"[^\w.-]", "_", base)  # no ':' or spaces for the readers' forms
    with tempfile.TemporaryDirectory(prefix="pruneviz-upload-") as tmp:
        folder = Path(tmp)
        try:
            if suffix == ".zip":
                ref = _unpacked_ref(on_disk, content, folder, reader_split, idx_kind, notes)
            else:
                path = folder / on_disk
                path.write_bytes(content)
                ref = str(path)
            data = load_data(ref, split=reader_split, task=task, label_column=label_column)
        except DataError as exc:
            raise DataError(_relabel(str(exc), folder)) from None
        except OSError as exc:
            raise DataError(f"{base} could not be unpacked to read it ({exc}); check the "
                            "file, or free some disk space") from None
    if not data.name.startswith(on_disk) or on_disk != base:  # IDX, a folder in a zip
        data = replace(data, name=base)
    return DataUpload(base, split, data_digest(data), data, tuple(notes))


def data_digest(data: TensorData) -> str:
    """A hash of the data's values: task, inputs and targets (their types, shapes and
    bytes). Two files holding the same data give the same digest."""
    hasher = hashlib.sha256(data.task.value.encode())
    for tensor in (data.x, data.y):
        array = tensor.detach().cpu().contiguous().numpy()
        hasher.update(f"{array.dtype.str}{array.shape}".encode())
        hasher.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8).data)
    return hasher.hexdigest()[:16]


def fit_upload(model: nn.Module, data: TensorData, example_input: Tensor, where: str) -> None:
    """Check that `model` runs on `data` and scores its targets (`check_fit`); when it does
    not and the inputs differ from `example_input` (what the model runs on now), say what
    the model takes."""
    try:
        check_fit(model, data, where)
    except ModelError as exc:
        given, taken = tuple(data.x.shape[1:]), tuple(example_input.shape[1:])
        if given == taken and data.x.dtype == example_input.dtype:
            raise
        raise DataError(
            f"{where} does not fit the model: its samples are {_kind(data.x)} of shape "
            f"{given}, but the model takes {_kind(example_input)} of shape {taken} (like its "
            f"current data). Upload data of that shape. ({exc})") from None


def preview(data: TensorData, count: int = PREVIEW_IMAGES) -> DataPreview:
    """A summary of `data` for a page: samples, input shape, class counts and a few
    inputs as images (when they are 1- or 3-channel images)."""
    counts: tuple[tuple[str, int], ...] = ()
    labels = [str(v) for v in data.y[:count].tolist()] if data.y.dim() == 1 else []
    if data.task is Task.CLASSIFICATION:
        found = torch.bincount(data.y.detach().cpu(), minlength=len(data.classes))
        counts = tuple((_class_name(data, c), int(n)) for c, n in enumerate(found.tolist()))
        labels = [_class_name(data, int(v)) for v in data.y[:count].tolist()]
    images: tuple[Array, ...] = ()
    x = data.x
    if x.dim() == 4 and x.shape[1] in (1, 3) and min(x.shape[2:]) >= 2:
        images = tuple(_display(x[i]) for i in range(min(count, len(data))))
    shown = tuple(labels[:len(images)]) if labels else ()
    return DataPreview(len(data), tuple(x.shape[1:]), str(x.dtype).removeprefix("torch."),
                       data.task, counts, images, shown)


# --- helpers ----------------------------------------------------------------------------


def _validate_split(split: str) -> None:
    if split not in DATA_SPLITS:
        raise DataError(f"unknown split {split!r}; allowed: {', '.join(DATA_SPLITS)}")


def _file_name(name: str) -> str:
    """The uploaded file's own name (a browser sends no folders; anything else is cut)."""
    base = Path(str(name).replace("\\", "/")).name.strip()
    if not base or base in (".", ".."):
        raise DataError(f"{name!r} is not a file name; upload the file again")
    return base


def _relabel(message: str, folder: Path) -> str:
    """A reader's message about the temporary copy, naming the upload instead, and saying
    what to do in the app where the command line's advice names an option."""
    for root in {str(folder), str(folder.resolve())}:
        message = message.replace(root + "/", "").replace(root, "the upload")
    for option, here in _IN_THE_APP:
        message = message.replace(option, here)
    return message


def _kind(x: Tensor) -> str:
    return "whole numbers (token ids)" if not x.is_floating_point() else "numbers"


def _class_name(data: TensorData, label: int) -> str:
    return data.classes[label] if 0 <= label < len(data.classes) else str(label)


def _display(sample: Tensor) -> Array:
    """One (C, H, W) input as an (H, W) or (H, W, 3) float array in [0, 1] (min-max scaled:
    normalised inputs are drawn as the model sees their contrast)."""
    image = sample.detach().cpu().float().numpy()
    low, high = float(image.min()), float(image.max())
    scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return scaled[0] if scaled.shape[0] == 1 else scaled.transpose(1, 2, 0)


# --- zips -------------------------------------------------------------------------------


def _unpacked_ref(name: str, content: bytes, folder: Path, split: Split, idx_kind: str,
                  notes: list[str]) -> str:
    """Unpack the zip into `folder`/`name` and return the `load_data` reference that reads
    it: an IDX folder (`idx_kind`:FOLDER) if it holds IDX files, else an image folder."""
    root = folder / name
    root.mkdir()
    skipped = _unpack(name, content, root)
    if skipped:
        notes.append(_("{count} metadata file(s) in {name} (__MACOSX, ._*) were skipped")
                     .format(count=skipped, name=name))
    idx_dirs = sorted({p.parent for p in root.rglob("*")
                       if p.is_file() and _IDX_FILE.fullmatch(p.name)})
    if idx_dirs:
        prefix = "t10k" if split == "test" else "train"
        wanted = [d for d in idx_dirs if any(p.name.startswith(prefix) for p in d.iterdir())]
        where = (wanted or idx_dirs)[0]
        checked = {"idx": _("structure-checked only"),
                   "mnist": _("checked against the official MNIST checksums"),
                   "fashion-mnist": _("checked against the official Fashion-MNIST checksums"),
                   }[idx_kind]
        notes.append(_("read as IDX files ({checked})").format(checked=checked))
        return f"{idx_kind}:{where}"
    # One folder around everything (zipping a folder makes one): read what is inside it.
    while True:
        inside = [p for p in root.iterdir() if not p.name.startswith(".")]
        if len(inside) == 1 and inside[0].is_dir() and any(p.is_dir()
                                                           for p in inside[0].iterdir()):
            root = inside[0]
        else:
            break
    if (root / "train").is_dir() and (root / "test").is_dir():
        notes.append(_("the {split}/ folder of the zip was read (it has train/ and test/)")
                     .format(split=split))
    return str(root)


def _unpack(name: str, content: bytes, root: Path) -> int:
    """Check the zip's member list, then write its files under `root`; returns how many
    metadata files were skipped. Nothing is written outside `root`."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise DataError(f"{name} is not a valid zip file ({exc}); zip the folder again "
                        "(e.g. `zip -r data.zip folder`)") from None
    with archive:
        members = archive.infolist()
        if len(members) > MAX_ZIP_MEMBERS:
            raise DataError(
                f"{name} holds {len(members):,} files, more than the {MAX_ZIP_MEMBERS:,} an "
                "uploaded zip may hold; use fewer samples, or an .npz file")
        total = 0
        for info in members:
            _check_member(name, info)
            check_expansion(name, info.filename, info.compress_size, info.file_size)
            total += info.file_size
        check_declared(name, total, what=f"{len(members):,} files")
        check_expansion(name, "the whole archive", len(content), total)
        skipped = 0
        for info in members:
            parts = _parts(info.filename)
            if any(p in _SKIPPED_PARTS or p.startswith("._") for p in parts):
                skipped += not info.is_dir()
                continue
            target = root.joinpath(*parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            _extract(name, archive, info, target)
    return skipped


def _parts(filename: str) -> list[str]:
    return [p for p in filename.replace("\\", "/").split("/") if p not in ("", ".")]


def _check_member(name: str, info: zipfile.ZipInfo) -> None:
    """Refuse a member that could write outside the folder, is a link, or is encrypted."""
    filename = info.filename
    unix = filename.replace("\\", "/")
    if unix.startswith("/") or re.match(r"[A-Za-z]:", unix) or ".." in unix.split("/"):
        raise DataError(
            f"{name} holds {filename[:200]!r}, a path outside the zip's own folder; "
            "pruneviz never unpacks such a file. Zip the data folder again with relative "
            "paths (e.g. `cd parent && zip -r data.zip folder`)")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DataError(f"{name} holds {filename[:200]!r}, a symbolic link; pruneviz never "
                        "unpacks links. Zip the files themselves (zip without --symlinks)")
    if info.flag_bits & 0x1:
        raise DataError(f"{name} is password-protected ({filename[:200]!r} is encrypted); "
                        "zip the data without a password")
    if not _parts(filename):
        raise DataError(f"{name} holds a member without a name; zip the folder again")


def _extract(name: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    """Write one member, never more bytes than its declared size."""
    written = 0
    try:
        with archive.open(info) as source, target.open("xb") as out:
            while chunk := source.read(1 << 20):
                written += len(chunk)
                if written > info.file_size:
                    raise DataError(f"{name}: {info.filename} is longer than its zip entry "
                                    "says; the file is damaged, zip the folder again")
                out.write(chunk)
    except FileExistsError:
        raise DataError(f"{name} holds {info.filename!r} twice; zip the folder again") from None
    except (zipfile.BadZipFile, EOFError, RuntimeError, NotImplementedError) as exc:
        raise DataError(f"{name}: {info.filename} cannot be unpacked ({exc}); the zip is "
                        "damaged or uses an unusual compression, zip the folder again") from None


__all__ = [
    "DATA_SPLITS",
    "MAX_UPLOAD_BYTES",
    "MAX_ZIP_MEMBERS",
    "UPLOAD_HELP",
    "DataPreview",
    "DataSplit",
    "DataUpload",
    "data_digest",
    "describe_uploads",
    "fit_upload",
    "preview",
    "read_upload",
]
