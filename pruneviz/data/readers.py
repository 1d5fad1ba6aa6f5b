"""The user's own evaluation and training data, from a file, a folder or a function.

`load_data(ref)` reads any of the forms in `DATA_HELP` into a `TensorData`:

    eval.npz                 arrays x and y (no y: an autoencoder, targets = inputs)
    eval.csv                 numeric columns, one of them the targets
    images/                  one subfolder of images per class
    mnist:FOLDER             MNIST IDX files, checked against the official checksums
    fashion-mnist:FOLDER     the same for Fashion-MNIST
    idx:FOLDER               any IDX images/labels pair, structure-checked only
    mnist, fashion-mnist     downloaded once into a cache folder
    data.py:function         the user's own function returning a Dataset, a DataLoader
                             or an (x, y) pair

Nothing is ever unpickled (`np.load(allow_pickle=False)`); IDX files are read by
idx.py. Every problem is a DataError (or a UserFileError for the user's own code)
that says what is wrong and what to do.
"""

from __future__ import annotations

import csv
import inspect
import io
import math
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from pruneviz.data.idx import IDX_KINDS, Split, read_idx
from pruneviz.data.limits import MAX_CSV_BYTES, MAX_IMAGE_PIXELS, check_declared, check_expansion
from pruneviz.data.tasks import Task, parse_metric, parse_task
from pruneviz.data.tensors import TensorData
from pruneviz.data.userfile import (
    UserFileError,
    call_user,
    is_file_ref,
    load_callable,
)
from pruneviz.errors import DataError

Array = NDArray[Any]

DATA_HELP = (
    "Data can be: an .npz file with arrays x (inputs) and y (targets; leave y out for an "
    "autoencoder, whose targets are its inputs); a .csv file of numeric columns, one of them "
    "the targets (--label-column NAME; default a column named label, target or y, else the "
    "last one); a folder of images with one subfolder per class (PNG, JPEG, BMP or GIF, all "
    "the same size; train/ and test/ subfolders are used for the two splits); mnist:FOLDER, "
    "fashion-mnist:FOLDER or idx:FOLDER, a folder of IDX files (t10k-images-idx3-ubyte and "
    "t10k-labels-idx1-ubyte for the test split, train-... for training, gzipped or not; "
    "mnist and fashion-mnist files are checked against the official checksums); mnist or "
    "fashion-mnist alone, downloaded once into a cache folder (PRUNEVIZ_CACHE, default "
    "~/.cache/pruneviz); or path/file.py:function, your own function (given split='test' or "
    "'train' if it takes a split argument) returning a torch Dataset, a DataLoader or an "
    "(x, y) pair of tensors or arrays. Whole-number targets mean classification, others "
    "regression (override with --task); integer inputs stay integers (token ids), others "
    "become float32."
)

FUNCTION_SAMPLE_LIMIT = 1_000_000  # a data function giving more samples is refused
LABEL_COLUMN_NAMES = ("label", "target", "y")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF")  # what Pillow may decode them as
_GREY_MODES = ("1", "L", "LA")
_DEEP_MODES = ("I", "F", "I;16", "I;16B", "I;16L", "I;16N")


def describe_data_ref() -> str:
    """One paragraph listing the accepted data forms (for the CLI help and the app)."""
    return DATA_HELP


@dataclass(frozen=True)
class _Raw:
    """Data as read, before targets and task are settled."""

    x: Array
    y: Array | None
    name: str
    classes: tuple[str, ...] = ()


def load_data(
    ref: str,
    *,
    split: Split = "test",
    task: Task | str | None = None,
    label_column: str | None = None,
    metric: str | None = None,
    max_samples: int | None = None,
) -> TensorData:
    """Read evaluation (`split="test"`) or training data from any form in `DATA_HELP`.

    `task` None infers it: no targets means reconstruction, whole-number 1-D targets
    classification, anything else regression. `metric` (see `parse_metric`) replaces the
    task's default metric. `max_samples` refuses data with more samples than that.
    """
    if split not in ("test", "train"):
        raise DataError(f"unknown split {split!r}; allowed: test, train")
    if max_samples is not None and max_samples < 1:
        raise DataError(f"max_samples must be at least 1, got {max_samples}")
    wanted = None if task is None else parse_task(task)
    text = str(ref).strip()
    if not text:
        raise DataError(f"no data given. {DATA_HELP}")
    raw = _read(text, split, label_column, max_samples)
    if max_samples is not None and raw.x.shape[0] > max_samples:
        raise DataError(
            f"{raw.name} has {raw.x.shape[0]:,} samples, more than the limit of "
            f"{max_samples:,}; use a smaller data set")
    data = _build(raw, wanted)
    scorer = parse_metric(metric, data.task)
    return data if scorer is None else replace(data, scorer=scorer)


def _read(ref: str, split: Split, label_column: str | None, limit: int | None) -> _Raw:
    """Dispatch on the form of `ref`."""
    kind, _, rest = ref.partition(":")
    if kind.lower() in IDX_KINDS:
        x, y, classes = read_idx(kind.lower(), rest.strip() or None, split)
        return _Raw(x, y, f"{kind.lower()}/{split}", classes)
    if is_file_ref(ref):
        return _read_function(ref, split, limit)
    path = Path(ref).expanduser()
    suffix = path.suffix.lower()
    if not path.exists():
        if suffix in (".npz", ".csv") or path.suffix == "":
            raise DataError(f"{ref} does not exist; check the path")
        raise DataError(f"cannot read data {ref!r}: no such file, and not a known form. "
                        f"{DATA_HELP}")
    if path.is_dir():
        return _read_image_folder(path, split, limit)
    if suffix == ".npz":
        return _read_npz(path)
    if suffix == ".csv":
        return _read_csv(path, label_column)
    raise DataError(f"cannot read data {ref!r}: {suffix or 'no extension'} is not a data "
                    f"format pruneviz knows. {DATA_HELP}")


# --- targets and task -------------------------------------------------------------------


def _build(raw: _Raw, wanted: Task | None) -> TensorData:
    """Settle the task, convert inputs and targets to tensors and validate them."""
    x = _inputs(raw.x, raw.name)
    task = wanted if wanted is not None else _infer_task(raw.y)
    if raw.y is None:
        if task is not Task.RECONSTRUCTION:
            raise DataError(
                f"{raw.name} has no targets, so it can only be used for reconstruction "
                f"(targets = inputs), not {task.value}; add the targets (y), or pass "
                "--task reconstruction")
        y = x.float() if not x.is_floating_point() else x
    elif task is Task.CLASSIFICATION:
        y = _class_labels(raw.y, raw.name)
    else:
        y = _target_values(raw.y, raw.name, task)
    classes = raw.classes if task is Task.CLASSIFICATION else ()
    return TensorData(x, y, task, raw.name, classes=classes)


def _infer_task(y: Array | None) -> Task:
    if y is None:
        return Task.RECONSTRUCTION
    whole = y.dtype.kind in "iub"
    if whole and (y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)):
        return Task.CLASSIFICATION
    return Task.REGRESSION


def _tensor(array: Array) -> Tensor:
    """`array` as a tensor (sharing its memory unless it is read-only or not contiguous)."""
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(np.ascontiguousarray(array))


def _inputs(x: Array, name: str) -> Tensor:
    """Inputs as float32, or int64 for whole numbers (token ids for an nn.Embedding)."""
    if x.ndim == 0:
        raise DataError(f"{name}: the inputs are a single number, not an array of samples")
    if x.dtype.kind in "iu":
        return _tensor(x.astype(np.int64, copy=False))
    if x.dtype.kind in "fb":
        return _tensor(x.astype(np.float32, copy=False))
    raise DataError(
        f"{name}: the inputs have data type {x.dtype}, not numbers; "
        "save them as a numeric array (float for features and images, int for token ids)")


def _class_labels(y: Array, name: str) -> Tensor:
    """Class labels as a 1-D int64 tensor of values 0..C-1."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(
            f"{name}: class labels must be one number per sample, but the targets have shape "
            f"{tuple(y.shape)}; pass --task regression if they are values to predict")
    if y.dtype.kind not in "iubf":
        raise DataError(f"{name}: the targets have data type {y.dtype}, not numbers; "
                        "save the class labels as integers 0..C-1")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{name}: class labels must be whole numbers 0..C-1, but sample {i} has "
                f"{y[i]}; pass --task regression if the targets are values to predict")
    labels = y.astype(np.int64)
    if labels.size and labels.min() < 0:
        i = int(np.argmin(labels))
        raise DataError(f"{name}: class labels must be 0..C-1, but sample {i} has label "
                        f"{labels[i]}; renumber the classes from 0")
    return _tensor(labels)


def _target_values(y: Array, name: str, task: Task) -> Tensor:
    """Regression / reconstruction targets as float32; one value per sample becomes (N, 1)."""
    if y.dtype.kind not in "iubf":
        raise DataError(f"{name}: the targets have data type {y.dtype}, not numbers; "
                        f"{task.value} needs numeric target values")
    values = y.astype(np.float32)
    if values.ndim == 0:
        raise DataError(f"{name}: the targets are a single number, not one per sample")
    if values.ndim == 1:
        values = values[:, None]  # like the (N, 1) output of a model with one output
    if not np.isfinite(values).all():
        raise DataError(f"{name}: the targets contain NaN or infinite values; clean the "
                        "data first")
    return _tensor(values)


# --- .npz -------------------------------------------------------------------------------


def _check_npz(path: Path) -> None:
    """Refuse an .npz whose arrays declare (in their .npy headers, read alone) more than
    the data limit, or compress implausibly well; nothing else is decompressed."""
    from numpy.lib import format as npy

    arrays = []
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as member:
                    version = npy.read_magic(member)
                    reader = (npy.read_array_header_1_0 if version == (1, 0)
                              else npy.read_array_header_2_0)
                    shape, _, dtype = reader(member)
                arrays.append((info, shape, dtype))
    except (OSError, EOFError, ValueError, zipfile.BadZipFile):
        return  # not readable as one: np.load says what is wrong
    for info, shape, dtype in arrays:
        items = math.prod(shape)
        check_declared(str(path), items * max(dtype.itemsize, 4),
                       what=f"an array {info.filename[:-4]} of shape {shape}")
        check_expansion(str(path), info.filename, info.compress_size, items * dtype.itemsize)


def _read_npz(path: Path) -> _Raw:
    _check_npz(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if "x" not in names:
                found = ", ".join(names) or "none"
                raise DataError(
                    f"{path} has no array named x (it has: {found}); save the inputs as x "
                    "and the targets as y: np.savez(file, x=inputs, y=targets)")
            x = archive["x"]
            y = archive["y"] if "y" in names else None
    except ValueError as exc:
        if isinstance(exc, DataError):
            raise
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise DataError(
                f"{path} holds Python objects (an object array), which pruneviz never loads "
                "because unpickling can run code; save plain numeric arrays: "
                "np.savez(file, x=inputs, y=targets)") from None
        raise DataError(f"{path} cannot be read as an .npz file ({exc}); save it with "
                        "np.savez(file, x=inputs, y=targets)") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path} is not a valid .npz file ({exc}); save it with "
                        "np.savez(file, x=inputs, y=targets)") from None
    return _Raw(x, y, path.name)


# --- .csv -------------------------------------------------------------------------------


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _read_csv(path: Path, label_column: str | None) -> _Raw:
    """Numeric feature columns plus one label column; the header row is optional."""
    size = path.stat().st_size
    if size > MAX_CSV_BYTES:
        raise DataError(
            f"{path} is {size:,} bytes of CSV text, more than the {MAX_CSV_BYTES:,} pruneviz "
            "parses (text is read cell by cell); save the data as an .npz file instead: "
            "np.savez(file, x=inputs, y=targets)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save it as a UTF-8 CSV file") from None
    first = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = "," if "," in first else ";" if ";" in first else "\t" if "\t" in first else ","
    rows: list[tuple[int, list[str]]] = []
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    for cells in reader:
        if any(c.strip() for c in cells):
            rows.append((reader.line_num, [c.strip() for c in cells]))
    if not rows:
        raise DataError(f"{path} is empty: it needs at least one row of numbers")
    header: list[str] | None = None
    if not all(_is_number(c) for c in rows[0][1]):
        header = rows[0][1]
        rows = rows[1:]
    if not rows:
        raise DataError(f"{path} has a header but no data rows; add at least one row")
    width = len(header) if header is not None else len(rows[0][1])
    if width < 2:
        raise DataError(f"{path} has {width} column; it needs at least one feature column "
                        "and a label column")
    for line, cells in rows:
        if len(cells) != width:
            raise DataError(f"{path} row {line} has {len(cells)} cells but the "
                            f"{'header' if header else 'first row'} has {width}; every row "
                            "needs the same columns")
    label = _label_index(path, header, label_column, width)
    values = _csv_numbers(path, rows, header)
    y = values[:, label]
    x = np.delete(values, label, axis=1).astype(np.float32)
    if np.isfinite(y).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)  # whole-number labels: classification by default
    return _Raw(x, y, path.name)


def _label_index(path: Path, header: list[str] | None, wanted: str | None, width: int) -> int:
    if wanted is not None:
        if header is None:
            raise DataError(
                f"{path} has no header row, so its columns have no names and "
                f"--label-column {wanted!r} cannot be found; add a header row, or leave "
                "--label-column out to use the last column")
        if wanted in header:
            return header.index(wanted)
        folded = [i for i, name in enumerate(header) if name.lower() == wanted.lower()]
        if len(folded) == 1:
            return folded[0]
        raise DataError(f"{path} has no column {wanted!r}; its columns are: "
                        f"{', '.join(header)}")
    if header is not None:
        for name in LABEL_COLUMN_NAMES:
            found = [i for i, column in enumerate(header) if column.lower() == name]
            if found:
                return found[0]
    return width - 1


def _csv_numbers(path: Path, rows: list[tuple[int, list[str]]],
                 header: list[str] | None) -> Array:
    """All cells as float64, or a DataError naming the first cell that is not a number."""
    try:
        return np.array([cells for _, cells in rows], dtype=np.float64)
    except ValueError:
        pass
    for line, cells in rows:
        for j, cell in enumerate(cells):
            if not _is_number(cell):
                column = f"{header[j]!r}" if header is not None else str(j + 1)
                what = "is empty" if not cell else f"is {cell!r}, not a number"
                raise DataError(
                    f"{path} row {line}, column {column} {what}; CSV data must be all "
                    "numbers (encode categories as numbers, fill in missing values)")
    raise DataError(f"{path} cannot be read as numbers; check the file")  # not reached


# --- image folders ----------------------------------------------------------------------


def _read_image_folder(path: Path, split: Split, limit: int | None) -> _Raw:
    """Images in one subfolder per class (sorted names = labels 0..C-1)."""
    root, name = path, path.name
    if (path / "train").is_dir() and (path / "test").is_dir():
        root, name = path / split, f"{path.name}/{split}"
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        loose = [p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        idx = [p for p in root.iterdir() if "-idx" in p.name and "ubyte" in p.name]
        hint = (" (the images are directly inside it: move them into one subfolder per "
                "class)" if loose else
                f" (it holds IDX files: pass mnist:{root}, fashion-mnist:{root} or "
                f"idx:{root})" if idx else "")
        raise DataError(f"{root} has no class subfolders{hint}; an image folder needs one "
                        "subfolder of images per class, or pass another data form. "
                        f"{DATA_HELP}")
    files: list[tuple[Path, int]] = []
    for label, folder in enumerate(class_dirs):
        found = sorted(f for f in folder.iterdir()
                       if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise DataError(f"{folder} has no images ({', '.join(IMAGE_SUFFIXES)}); add "
                            "images, or remove the folder (every subfolder is a class)")
        files.extend((f, label) for f in found)
    if limit is not None and len(files) > limit:
        raise DataError(f"{root} has {len(files):,} images, more than the limit of "
                        f"{limit:,}; use a smaller folder")
    _check_image_sizes(files)
    images = [_read_image(f) for f, _ in files]
    first_of_size: dict[tuple[int, ...], Path] = {}
    for (f, _), image in zip(files, images, strict=True):
        first_of_size.setdefault(image.shape[:2], f)
    if len(first_of_size) > 1:
        examples = [f"{f} is {size[1]}x{size[0]}"
                    for size, f in list(first_of_size.items())[:3]]
        raise DataError(f"the images in {root} differ in size ({'; '.join(examples)}); "
                        "resize them all to one size first (pruneviz does not resize them)")
    if all(image.ndim == 2 for image in images):
        x = np.stack(images)[:, None, :, :]
    else:
        colour = [np.repeat(im[:, :, None], 3, axis=2) if im.ndim == 2 else im
                  for im in images]
        x = np.stack(colour).transpose(0, 3, 1, 2)
    x = x.astype(np.float32) / np.float32(255.0)
    y = np.array([label for _, label in files], dtype=np.int64)
    return _Raw(x, y, name, tuple(d.name for d in class_dirs))


def _check_image_sizes(files: list[tuple[Path, int]]) -> None:
    """Refuse a folder whose images, at the first one's size (they must all share it),
    would hold more than the data limit; only that image's header is read."""
    from PIL import Image

    path = files[0][0]
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as image:
            width, height = image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return  # _read_image says what is wrong with it
    check_declared(str(path.parent.parent), len(files) * width * height * 3 * 4,
                   what=f"{len(files):,} images of {width}x{height}")


def _read_image(path: Path) -> Array:
    """One image as uint8 (H, W) for grey or (H, W, 3) for colour; alpha is dropped."""
    from PIL import Image

    try:
        # The format is decided by the content: allow only plain raster formats, never
        # one that hands the file to an external program (EPS runs Ghostscript).
        with Image.open(path, formats=IMAGE_FORMATS) as image:  # reads the header only
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise DataError(
                    f"{path} is {width:,}x{height:,} pixels, more than the "
                    f"{MAX_IMAGE_PIXELS:,} pruneviz decodes per image; nothing was decoded. "
                    "Resize the images to the size the model takes")
            if image.mode in _DEEP_MODES:
                raise DataError(f"{path} is a {image.mode} (16-bit or floating-point) image; "
                                "save the images with 8 bits per channel")
            grey = image.mode in _GREY_MODES
            return np.asarray(image.convert("L" if grey else "RGB"), dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path} cannot be read as an image ({exc}); replace or remove "
                        "it") from None


# --- the user's own data function -------------------------------------------------------


def _accepts_split(function: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD
               or (p.name == "split" and p.kind is not inspect.Parameter.POSITIONAL_ONLY)
               for p in parameters)


def _read_function(ref: str, split: Split, limit: int | None) -> _Raw:
    """Call `file.py:function` (with split=... if it takes it) and materialise the result."""
    function = load_callable(ref, "data function")
    kwargs = {"split": split} if _accepts_split(function) else {}
    result = call_user(ref, "data function", **kwargs)
    name = f"{ref.rpartition(':')[2]}({split})"
    cap = limit if limit is not None else FUNCTION_SAMPLE_LIMIT
    x, y = _materialise(result, ref, cap)
    return _Raw(_numpy(x), None if y is None else _numpy(y), name)


def _numpy(t: Tensor) -> Array:
    t = t.detach().cpu()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    return t.numpy()


def _is_array(value: object) -> bool:
    return isinstance(value, (Tensor, np.ndarray))


def _materialise(result: object, ref: str, cap: int) -> tuple[Tensor, Tensor | None]:
    """(x, y) tensors from what a data function returned."""
    from torch.utils.data import DataLoader, Dataset, IterableDataset

    if _is_array(result):
        return _as_tensor(result, ref, "the inputs"), None
    if isinstance(result, tuple | list) and len(result) == 2 and all(map(_is_array, result)):
        return _as_tensor(result[0], ref, "x"), _as_tensor(result[1], ref, "y")
    if isinstance(result, DataLoader):
        return _from_batches(result, ref, cap)
    if isinstance(result, Dataset | list | tuple):
        if not isinstance(result, IterableDataset) and hasattr(result, "__len__"):
            size = len(result)
            if size > cap:
                raise DataError(_too_many(ref, cap))
            return _from_items((result[i] for i in range(size)), ref, cap)
        return _from_items(iter(result), ref, cap)
    raise DataError(
        f"the data function {ref} returned a {type(result).__name__}; it must return a torch "
        "Dataset, a DataLoader, or an (x, y) pair of tensors or arrays")


def _too_many(ref: str, cap: int) -> str:
    return (f"the data function {ref} gives more than {cap:,} samples; pruneviz holds the "
            "data in memory, so return a smaller set (e.g. a torch.utils.data.Subset)")


def _as_tensor(value: object, ref: str, what: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iubf":
            raise DataError(f"{what} from {ref} has data type {value.dtype}, not numbers")
        return torch.from_numpy(np.array(value))
    if isinstance(value, bool | int | float):
        return torch.tensor(value)
    raise DataError(
        f"{what} from {ref} is a {type(value).__name__}, not a tensor, array or number; "
        "convert it in the function (for images, e.g. torchvision's transforms.ToTensor())")


def _pair(item: object, ref: str, where: str) -> tuple[object, object]:
    if isinstance(item, tuple | list) and len(item) == 2:
        return item[0], item[1]
    detail = (f" with keys {', '.join(map(str, item))}" if isinstance(item, dict)
              else f" of length {len(item)}" if isinstance(item, tuple | list) else "")
    raise DataError(f"{where} from the data function {ref} is a {type(item).__name__}"
                    f"{detail}, not an (input, target) pair; make each item (input, target)")


def _checked_stack(parts: list[Tensor], ref: str, what: str, unit: str,
                   combine: Callable[[list[Tensor]], Tensor], dims: slice) -> Tensor:
    """Stack or concatenate `parts`, naming the first one whose shape differs."""
    shape = parts[0].shape[dims]
    for i, part in enumerate(parts):
        if part.shape[dims] != shape:
            raise DataError(
                f"{unit} {i} from {ref} has {what} of shape {tuple(part.shape[dims])}, but "
                f"{unit} 0 has {tuple(shape)}; every sample's {what} must have the same "
                "shape (resize or pad them)")
    return combine(parts)


def _from_items(items: Iterable[object], ref: str, cap: int) -> tuple[Tensor, Tensor]:
    inputs: list[Tensor] = []
    targets: list[Tensor] = []
    try:
        for i, item in enumerate(items):
            if i >= cap:
                raise DataError(_too_many(ref, cap))
            x, y = _pair(item, ref, f"item {i}")
            inputs.append(_as_tensor(x, ref, f"the input of item {i}"))
            targets.append(_as_tensor(y, ref, f"the target of item {i}"))
    except (DataError, UserFileError):
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's dataset may raise anything
        raise UserFileError(f"reading the data set from {ref} raised {type(exc).__name__}: "
                            f"{exc}; fix the data set and try again") from None
    if not inputs:
        raise DataError(f"the data function {ref} gave no samples; it needs at least one")
    x = _checked_stack(inputs, ref, "input", "item", torch.stack, slice(None))
    y = _checked_stack(targets, ref, "target", "item", torch.stack, slice(None))
    return x, y


def _from_batches(loader: Iterable[object], ref: str, cap: int) -> tuple[Tensor, Tensor]:
    inputs: list[Tensor] = []
    targets: list[Tensor] = []
    count = 0
    try:
        for i, batch in enumerate(loader):
            x, y = _pair(batch, ref, f"batch {i}")
            xt = _as_tensor(x, ref, f"the inputs of batch {i}")
            yt = _as_tensor(y, ref, f"the targets of batch {i}")
            if xt.dim() == 0 or yt.dim() == 0:
                raise DataError(f"batch {i} from {ref} is not batched (a single number); "
                                "return a DataLoader of (inputs, targets) batches")
            count += int(xt.shape[0])
            if count > cap:
                raise DataError(_too_many(ref, cap))
            inputs.append(xt)
            targets.append(yt)
    except (DataError, UserFileError):
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's loader may raise anything
        raise UserFileError(f"reading the DataLoader from {ref} raised {type(exc).__name__}: "
                            f"{exc}; fix the data set and try again") from None
    if not inputs:
        raise DataError(f"the DataLoader from {ref} gave no batches; it needs at least one")
    x = _checked_stack(inputs, ref, "inputs", "batch", torch.cat, slice(1, None))
    y = _checked_stack(targets, ref, "targets", "batch", torch.cat, slice(1, None))
    return x, y


__all__ = [
    "DATA_HELP",
    "describe_data_ref",
    "load_data",
]
