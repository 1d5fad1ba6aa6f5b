"""The user's own model: a factory in their Python file, and weights read without unpickling.

A model is named `path/to/file.py:factory`: a function in the user's own file that builds
and returns an nn.Module (their code, which they ask us to run). Weights come from a file
the user may have downloaded from anywhere, so nothing in it is allowed to run:

- `.safetensors` files are read with safetensors (a JSON header and raw tensor bytes);
- `.pt`/`.pth`/`.bin` state dicts are read with `torch.load(weights_only=True)`, whose
  unpickler builds tensors and plain containers only and refuses every other object;
- TorchScript archives and torch.export `.pt2` archives are refused before anything is
  read from them: loading them runs the code they hold.

The format is told by the file's first bytes (a safetensors header, a zip archive or a
pickle stream), not by its name alone. Every problem is a ModelError that says what is
wrong with the file and how to save one that works.

Reading is bounded before anything is decompressed, unpickled or allocated: a zip's
members must be stored as torch.save stores them (a compressed member could expand to
any size), and what a file declares — its members' sizes, a safetensors header's length,
its tensor count — must fit in the file and, when the model is known, in what a
checkpoint of that model can hold (`WeightLimits`).
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import load_file as load_safetensors_file
from torch import Tensor, nn

from pruneviz.data.userfile import call_user
from pruneviz.errors import ModelError
from pruneviz.i18n import _

SAVE_HINT = (
    "save the weights as a state dict: torch.save(model.state_dict(), 'weights.pt'), or "
    "safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')"
)
# Checkpoints often keep the state dict under one of these keys, next to other entries.
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model")
# Modules whose functions can run commands or code: a pickle that asks for one is hostile.
_DANGEROUS_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "builtins", "__builtin__", "sys", "shutil",
    "socket", "importlib", "runpy", "code", "codeop", "pty", "webbrowser", "ctypes",
    "marshal", "pickle", "_pickle", "operator", "functools", "types", "io", "pathlib",
    "tempfile", "multiprocessing", "asyncio", "platform", "commands", "timeit", "pdb",
})
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80  # the first opcode of a pickle stream of protocol 2 or later
_SAFETENSORS_MAX_HEADER = 100_000_000  # the largest header safetensors itself accepts
_LISTED = 10  # names listed in a message before "and N more"
# A checkpoint may hold optimizer state beside the weights (Adam: two tensors per
# parameter): a file may hold this many times the model's tensors and bytes, plus slack.
CHECKPOINT_FACTOR = 4
_SLACK_BYTES = 1 << 20
_SLACK_TENSORS = 64
_PICKLE_BYTES_PER_TENSOR = 1024  # a state dict's pickle: ~150 bytes per tensor


@dataclass(frozen=True)
class WeightLimits:
    """What a weights file for one model may declare: bytes of tensor data, tensors,
    and the bytes of the pickle or header describing them."""

    data_bytes: int
    tensors: int

    @classmethod
    def for_model(cls, model: nn.Module) -> WeightLimits:
        """Limits for files of `model`'s weights (a checkpoint of it included)."""
        state = model.state_dict()
        size = sum(t.numel() * t.element_size() for t in state.values())
        return cls(CHECKPOINT_FACTOR * size + _SLACK_BYTES,
                   CHECKPOINT_FACTOR * len(state) + _SLACK_TENSORS)

    @property
    def description_bytes(self) -> int:
        """The largest pickle or safetensors header these tensors need."""
        return _SLACK_BYTES + _PICKLE_BYTES_PER_TENSOR * self.tensors


# ---------------------------------------------------------------------------------------
# Reading a weights file
# ---------------------------------------------------------------------------------------


def read_weights(
    source: Path | bytes, name: str = "", *, notes: list[str] | None = None,
    limits: WeightLimits | None = None,
) -> dict[str, Tensor]:
    """The tensors of a weights file (`source` a path, or the bytes of an upload).

    `name` is the file's name as the user knows it (an upload's file name), used in
    messages and for its extension; by default the path's. Nothing in the file is
    unpickled: see the module docstring. A checkpoint dict holding the state dict under
    "state_dict", "model_state_dict" or "model" gives that state dict, and a line saying
    so is added to `notes`. With `limits` (`WeightLimits.for_model`), a file declaring
    more than a checkpoint of the model can hold is refused before it is read. Raises
    ModelError for anything else, including non-finite values.
    """
    label = name or (source.name if isinstance(source, Path) else "the uploaded weights")
    head, size = _head(source, label)
    if size == 0:
        raise ModelError(f"{label} is empty (0 bytes): the upload or the save did not "
                         f"finish; {SAVE_HINT}")
    suffix = Path(name or (source.name if isinstance(source, Path) else "")).suffix.lower()
    if suffix == ".pt2":
        raise ModelError(_export_refusal(label))
    if _is_zip(head):
        _check_archive(source, label, size, limits)
        state = _as_state_dict(_torch_load(source, label), label, notes)
    elif _is_safetensors(head):  # before pickle: a header length may start with 0x80
        _check_safetensors(head, size, label, limits)
        state = _safetensors_load(source, label)
    elif head[:1] == bytes([_PICKLE_PROTO]):
        if limits is not None and size > limits.data_bytes + limits.description_bytes:
            raise ModelError(_too_big(label, f"{size:,} bytes", limits))
        state = _as_state_dict(_torch_load(source, label), label, notes)
    elif suffix == ".safetensors":  # too damaged to recognise: safetensors says how
        state = _safetensors_load(source, label)
    else:
        raise ModelError(
            f"{label} is neither a safetensors file nor a PyTorch state dict (it starts "
            f"with neither a safetensors header, a zip archive nor a pickle stream); if it "
            f"is one, it is damaged: save it again. pruneviz reads .safetensors, or .pt/"
            f".pth/.bin files written by torch.save; {SAVE_HINT}")
    _check_tensors(state, label)
    return state


def _head(source: Path | bytes, label: str) -> tuple[bytes, int]:
    """The first bytes of the file (enough to tell its format) and its size."""
    if isinstance(source, bytes | bytearray):
        return bytes(source[:16]), len(source)
    if not source.exists():
        raise ModelError(f"weights file {source} does not exist; check the path")
    if not source.is_file():
        raise ModelError(f"{source} is not a file; pass the weights file itself")
    try:
        with source.open("rb") as f:
            return f.read(16), source.stat().st_size
    except OSError as exc:
        raise ModelError(f"cannot read {label}: {exc}") from None


def _is_zip(head: bytes) -> bool:
    return head.startswith(_ZIP_MAGIC)


def _is_safetensors(head: bytes) -> bool:
    """Whether the bytes start like a safetensors file: a little-endian 8-byte header
    length, then the header's JSON object."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 2 <= int(length) <= _SAFETENSORS_MAX_HEADER


def _open(source: Path | bytes) -> Any:
    """A path or a readable binary stream over the bytes, for zipfile and torch.load."""
    return io.BytesIO(source) if isinstance(source, bytes | bytearray) else source


def _export_refusal(label: str) -> str:
    return (f"{label} is a torch.export archive (.pt2): loading one runs the program it "
            "holds, so pruneviz does not load it. Give the model's Python code as "
            f"path/to/file.py:factory, and {SAVE_HINT}")


def _check_archive(source: Path | bytes, label: str, size: int,
                   limits: WeightLimits | None) -> None:
    """Refuse zip archives that hold code (TorchScript, torch.export) or no checkpoint,
    by their member names alone, and archives declaring more than they can hold: a
    compressed member (torch.save stores them as they are; one could expand to any
    size), members adding up to more than the file, or more tensors or bytes than a
    checkpoint of the model needs (`limits`). Nothing in them is read."""
    try:
        with zipfile.ZipFile(_open(source)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ModelError(
            f"{label} is a damaged or truncated zip archive ({exc}): the download or the "
            f"save did not finish; download it again, or {SAVE_HINT}") from None
    members = [info.filename for info in infos]
    parts = [member.split("/") for member in members]
    if any("constants.pkl" in p or "code" in p[:-1] for p in parts):
        raise ModelError(
            f"{label} is a TorchScript archive (torch.jit.save): loading one runs the code "
            "it holds, so pruneviz does not load it. Give the model's Python code as "
            f"path/to/file.py:factory, and {SAVE_HINT}")
    if any(p[-1] in ("archive_format", "serialized_exported_program.json") or
           ("models" in p[:-1] and p[-1].endswith(".json")) for p in parts):
        raise ModelError(_export_refusal(label))
    if not any(p[-1] == "data.pkl" for p in parts):
        what = ("a numpy .npz archive" if members and all(m.endswith(".npy") for m in members)
                else "a zip archive, but not one written by torch.save")
        raise ModelError(f"{label} is {what}; pruneviz reads weights from .safetensors, or "
                         f".pt/.pth/.bin state dicts: {SAVE_HINT}")
    packed = [info.filename for info in infos if info.compress_type != zipfile.ZIP_STORED]
    if packed:
        raise ModelError(
            f"{label} holds compressed members ({_listed(packed)}), which torch.save never "
            "writes: the file was made or changed by another program, and a compressed "
            "member can expand to any size, so nothing in it was read. Save the weights "
            f"again with torch.save: {SAVE_HINT}")
    declared = sum(info.file_size for info in infos)
    if declared > size:
        raise ModelError(
            f"{label} declares {declared:,} bytes of members in a file of {size:,} bytes: "
            "its members overlap, which torch.save never writes, so nothing in it was "
            f"read; {SAVE_HINT}")
    if limits is not None:
        storages = [i for i in infos if "/data/" in f"/{i.filename}" and
                    i.filename.rsplit("/", 1)[-1].isdigit()]
        pickles = [i for i in infos if i.filename.endswith(".pkl")]
        data = sum(i.file_size for i in storages)
        if len(storages) > limits.tensors or data > limits.data_bytes or any(
                i.file_size > limits.description_bytes for i in pickles):
            raise ModelError(_too_big(
                label, f"{len(storages):,} tensor storages of {data:,} bytes", limits))


def _torch_load(source: Path | bytes, label: str) -> Any:
    """torch.load with the weights-only unpickler; its refusals explained."""
    try:
        return torch.load(_open(source), map_location="cpu", weights_only=True, mmap=False)
    except Exception as exc:  # noqa: BLE001 - a damaged or hostile file may raise anything
        reason = str(exc)
        if "weights_only" not in reason and "Weights only" not in reason:
            raise ModelError(
                f"{label} is damaged or truncated and cannot be read ({type(exc).__name__}"
                f"{': ' + _first_line(reason) if reason else ''}): the download or the save "
                f"did not finish; download it again, or {SAVE_HINT}") from None
        raise ModelError(_refusal(source, label, reason)) from None


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:200]


def _refusal(source: Path | bytes, label: str, reason: str) -> str:
    """Why the weights-only unpickler refused the file, in the user's terms."""
    found = re.search(r"GLOBAL ([\w.]+)", reason)
    if found is None:
        detail = re.search(r"WeightsUnpickler error: ([^\n]+)", reason)
        why = detail.group(1).strip() if detail else "it is not a plain state dict"
        return (f"{label} cannot be read safely ({why}): pruneviz reads only tensors and "
                "plain containers from a pickle, because unpickling anything else can run "
                f"code, and nothing in the file was run. To use the weights, {SAVE_HINT}")
    name = found.group(1)
    if "." not in name:  # torch names built-in functions (exec, eval) without a module
        name = f"builtins.{name}"
    top = name.split(".")[0]
    if top in _DANGEROUS_MODULES:
        return (f"{label} was refused: loading it would call {name}, which can run "
                "commands or code, so the file may be malicious; nothing in it was run. "
                f"Do not use this file; if you made it, {SAVE_HINT}")
    if name.startswith(("torch.nn.", "__main__.")) or _holds_module(source):
        return (f"{label}: this file holds a whole pickled model object ({name}), not a "
                "state dict; it was not loaded because unpickling can run code. Save "
                "`model.state_dict()` instead: torch.save(model.state_dict(), "
                "'weights.pt'), or safetensors.torch.save_file(model.state_dict(), "
                "'weights.safetensors')")
    if top == "numpy":
        return (f"{label} holds numpy values ({name}) besides tensors, which pruneviz does "
                "not unpickle because unpickling can run code; convert arrays with "
                f"torch.from_numpy(array), and {SAVE_HINT}")
    return (f"{label} holds a pickled Python object ({name}) besides tensors; it was not "
            f"loaded because unpickling can run code; {SAVE_HINT}")


def _holds_module(source: Path | bytes) -> bool:
    """Whether the pickle names an nn.Module's attributes (a whole model saved with
    torch.save(model)); the bytes are only searched, never unpickled."""
    try:
        data = source if isinstance(source, bytes | bytearray) else source.read_bytes()
        if _is_zip(data[:4]):
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                pkl = next(m for m in archive.namelist() if m.endswith("data.pkl"))
                data = archive.read(pkl)
    except (OSError, zipfile.BadZipFile, StopIteration):
        return False
    return b"_modules" in data and b"_parameters" in data


def _check_safetensors(head: bytes, size: int, label: str,
                       limits: WeightLimits | None) -> None:
    """Refuse a safetensors file whose header is longer than the file, or (with
    `limits`) longer, or holding more data, than the model's weights need; before the
    header is read."""
    (length,) = struct.unpack("<Q", head[:8])
    if 8 + length > size:
        raise ModelError(
            f"{label} is a damaged or truncated safetensors file (its header declares "
            f"{length:,} bytes but the file holds {size:,}; nothing was read): the download "
            f"or the save did not finish; download it again, or {SAVE_HINT}")
    if limits is not None and (length > limits.description_bytes
                               or size - 8 - length > limits.data_bytes):
        raise ModelError(_too_big(
            label, f"a {length:,}-byte header and {size - 8 - length:,} bytes of data",
            limits))


def _too_big(label: str, found: str, limits: WeightLimits) -> str:
    return (f"{label} holds {found}, more than any checkpoint of this model can (at most "
            f"{limits.tensors:,} tensors and {limits.data_bytes:,} bytes: the weights "
            f"{CHECKPOINT_FACTOR} times over, optimizer state included); it is not a file "
            "of this model's weights, and was not read. Check that the weights belong to "
            f"this model, or {SAVE_HINT}")


def _safetensors_load(source: Path | bytes, label: str) -> dict[str, Tensor]:
    try:
        if isinstance(source, bytes | bytearray):
            return load_safetensors_bytes(bytes(source))
        return load_safetensors_file(str(source), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelError(
            f"{label} is a damaged or truncated safetensors file ({exc}): the download or "
            f"the save did not finish; download it again, or {SAVE_HINT}") from None


def _as_state_dict(obj: Any, label: str, notes: list[str] | None) -> dict[str, Tensor]:
    """The state dict in what torch.load returned: the dict itself when it holds only
    tensors, else the all-tensor dict under a usual checkpoint key."""
    if not isinstance(obj, Mapping):
        raise ModelError(f"{label} holds a {type(obj).__name__}, not a dict of tensors; "
                         f"{SAVE_HINT}")
    if not obj:
        raise ModelError(f"{label} holds an empty dict: there are no weights in it; "
                         f"{SAVE_HINT}")
    if _all_tensors(obj):
        return dict(obj)
    for key in CHECKPOINT_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and _all_tensors(inner):
            if notes is not None:
                notes.append(_("{file} is a checkpoint: its weights were read from the {key} "
                               "entry (the others were ignored: {others})").format(
                    file=label, key=repr(key), others=_listed([str(k) for k in obj if k != key])))
            return dict(inner)
    for key in CHECKPOINT_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner:
            bad = [f"{k} ({type(v).__name__})" for k, v in inner.items()
                   if not (isinstance(k, str) and isinstance(v, Tensor))]
            raise ModelError(
                f"{label} is a checkpoint whose {key!r} entry is not a state dict: its "
                f"entries {_listed(bad)} are not tensors; {SAVE_HINT}")
    bad = [f"{k} ({type(v).__name__})" for k, v in obj.items()
           if not (isinstance(k, str) and isinstance(v, Tensor))]
    raise ModelError(
        f"{label} holds a dict whose entries {_listed(bad)} are not tensors, and no "
        f"{' / '.join(repr(k) for k in CHECKPOINT_KEYS)} entry of tensors alone (where "
        f"checkpoints usually keep the weights); {SAVE_HINT}")


def _all_tensors(obj: Mapping[Any, Any]) -> bool:
    return all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def _listed(names: list[str]) -> str:
    """The first names, and how many more there are."""
    shown = ", ".join(names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def _check_tensors(state: Mapping[str, Tensor], label: str) -> None:
    """Refuse tensors pruning cannot use: sparse or other layouts, non-finite values."""
    odd = [f"{k} ({t.layout})" for k, t in state.items() if t.layout != torch.strided]
    if odd:
        raise ModelError(f"{label} holds tensors that are not dense: {_listed(odd)}; make "
                         f"them dense (tensor.to_dense()), and {SAVE_HINT}")
    bad = _non_finite(state)
    if bad:
        raise ModelError(
            f"{label} has NaN or infinite values in {_listed(bad)}; pruning ranks weights "
            "by value, so it cannot work on these. Use a checkpoint saved before training "
            "diverged, or retrain the model")


def _non_finite(tensors: Mapping[str, Tensor]) -> list[str]:
    """Names (with counts) of the floating tensors holding NaN or infinite values."""
    bad = []
    for name, t in tensors.items():
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            nans, infs = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
            bad.append(f"{name} ({nans} NaN, {infs} inf)")
    return bad


# ---------------------------------------------------------------------------------------
# Fitting weights to a model
# ---------------------------------------------------------------------------------------


def fit_weights(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load `state` into `model` strictly, after checking that it fits.

    The model's state dict (its parameters and persistent buffers, BatchNorm running
    statistics and num_batches_tracked included) must be exactly the file's: no missing
    or unexpected names, the same shapes, and values of the same kind (floating point
    converts to the model's floating dtype; integers do not become floats or back).
    A parameter the model shares under two names (tied weights) may be saved once, and
    BatchNorm's num_batches_tracked may be left out (files converted from other
    frameworks lack it; only training with momentum=None reads it): the model's own
    count is kept. `source` names the weights in messages. On error the model is
    unchanged.
    """
    expected = model.state_dict()
    state = _with_tied(expected, dict(state))
    for name, tensor in expected.items():
        if name.rpartition(".")[2] == "num_batches_tracked":
            state.setdefault(name, tensor.clone())
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensors the model has are missing from the file: "
                         f"{_listed(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} tensors in the file are not in the model: "
                         f"{_listed(unexpected)}")
        raise ModelError(
            f"the weights in {source} do not fit the model: " + "; ".join(parts)
            + _prefix_hint(missing, unexpected)
            + "; check that they were saved from this architecture (model.state_dict())")
    shapes = [f"{k} (file {tuple(t.shape)}, model {tuple(expected[k].shape)})"
              for k, t in state.items() if t.shape != expected[k].shape]
    if shapes:
        raise ModelError(
            f"the weights in {source} do not fit the model: {len(shapes)} tensors have "
            f"other shapes: {_listed(shapes)}; the file was saved from a model of another "
            "size or configuration: build the same configuration in the factory")
    kinds = [f"{k} (file {t.dtype}, model {expected[k].dtype})"
             for k, t in state.items() if _kind(t) != _kind(expected[k])]
    if kinds:
        raise ModelError(
            f"the weights in {source} do not fit the model: {len(kinds)} tensors hold "
            f"another kind of value: {_listed(kinds)}; save the weights of this model "
            "(model.state_dict()) without converting them")
    bad = _non_finite(state)
    if bad:
        raise ModelError(
            f"the weights in {source} have NaN or infinite values in {_listed(bad)}; "
            "pruning ranks weights by value, so it cannot work on these. Use a checkpoint "
            "saved before training diverged, or retrain the model")
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"loading the weights in {source} into the model failed: "
                         f"{_first_line(str(exc))}") from None


def _with_tied(expected: Mapping[str, Tensor], state: dict[str, Tensor]) -> dict[str, Tensor]:
    """`state` with the names of tied tensors filled in: a tensor the model holds under
    two names (an embedding shared with the classifier) is saved once by safetensors'
    save_model; the missing name gets the saved one's value."""
    by_storage: dict[tuple[int, tuple[int, ...], tuple[int, ...]], list[str]] = {}
    for name, t in expected.items():
        if t.numel():
            key = (t.data_ptr(), tuple(t.shape), tuple(t.stride()))
            by_storage.setdefault(key, []).append(name)
    for names in by_storage.values():
        present = [n for n in names if n in state]
        if present and len(present) < len(names):
            for n in names:
                state.setdefault(n, state[present[0]])
    return state


def _prefix_hint(missing: list[str], unexpected: list[str]) -> str:
    """A hint when the names differ only by a prefix (DataParallel's `module.`, ...)."""
    for prefix in ("module.", "_orig_mod.", "model."):
        if unexpected and all(k.startswith(prefix) for k in unexpected) and \
                set(missing) <= {k[len(prefix):] for k in unexpected}:
            return (f" (every name in the file starts with {prefix!r}: the weights were "
                    f"saved from a wrapper; save the wrapped model's state_dict() instead)")
        if missing and all(k.startswith(prefix) for k in missing) and \
                set(unexpected) <= {k[len(prefix):] for k in missing}:
            return (f" (the model's names start with {prefix!r} and the file's do not: "
                    "return the inner model from the factory)")
    return ""


def _kind(t: Tensor) -> str:
    if t.is_complex():
        return "complex"
    if t.is_floating_point():
        return "floating point"
    return "bool" if t.dtype == torch.bool else "integer"


# ---------------------------------------------------------------------------------------
# The model factory
# ---------------------------------------------------------------------------------------


def _build(ref: str) -> nn.Module:
    """Call the factory `file.py:name` and check that it returned a module."""
    model = call_user(ref, "model factory")
    if isinstance(model, type) and issubclass(model, nn.Module):
        raise ModelError(
            f"the model factory {ref} returned the class {model.__name__} itself, not a "
            f"model; return an instance: `return {model.__name__}()`")
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"the model factory {ref} returned a value of type {type(model).__name__}, "
            "not a torch model (nn.Module); make it build the model and return it, e.g. "
            "`return Net()`")
    return model


def load_factory(ref: str) -> nn.Module:
    """The model `path/to/file.py:factory` builds, in eval mode, with its own weights.

    Raises UserFileError when the file cannot be imported or the factory raises, and
    ModelError when it returns no nn.Module or one with non-finite values.
    """
    model = _build(ref)
    bad = _non_finite(model.state_dict())
    if bad:
        raise ModelError(
            f"the model from {ref} has NaN or infinite values in {_listed(bad)}; pruning "
            "ranks weights by value, so it cannot work on these. Fix the factory's "
            "initialisation, or give weights (--weights) trained for this model")
    return model.eval()


def load_user_model(
    ref: str, weights: Path | bytes | None, weights_name: str = "", *,
    notes: list[str] | None = None,
) -> nn.Module:
    """The model `path/to/file.py:factory` builds, with `weights` (a path, or the bytes
    of an upload named `weights_name`) fitted to it, in eval mode.

    Without weights the factory's own weights are used (they must be finite). With
    weights, the factory's initial values may be anything (torch.empty): every one is
    replaced by the file's.
    """
    if weights is None:
        return load_factory(ref)
    model = _build(ref)
    label = weights_name or (weights.name if isinstance(weights, Path) else "the uploaded weights")
    # fit_weights replaces every tensor of the state dict with the file's (finite) ones.
    fit_weights(model, read_weights(weights, label, notes=notes,
                                    limits=WeightLimits.for_model(model)), label)
    return model.eval()


__all__ = [
    "CHECKPOINT_KEYS",
    "SAVE_HINT",
    "WeightLimits",
    "fit_weights",
    "load_factory",
    "load_user_model",
    "read_weights",
]
