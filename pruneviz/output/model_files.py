"""Export a slimmed model: safetensors weights plus a JSON architecture card that pruneviz
reloads into the slimmed shapes, and a `torch.export` program for deployment.

The card names the base architecture (a sample) and, for every module whose shape
slimming changed, its new channel counts; for a bare parameter whose shape changed (a
class token, a layer scale), its shape; for a width attribute a forward reads
(`self.hidden_dim`), its value. Loading builds the base architecture, swaps
those modules for ones of the recorded shapes and loads the weights strictly — no code
from the file runs. pruneviz loads a .pt2 program only right after writing it, to verify
it (loading one can run code: never load one you did not make); the programs have a
dynamic batch dimension and hold a fresh example input, none of the user's data.
"""

from __future__ import annotations

import copy
import errno
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from pruneviz.core.attention import SlimAttention
from pruneviz.core.heads import FusedHeadAttention, head_counts, set_head_counts
from pruneviz.core.layers import model_device
from pruneviz.core.width import WIDTH_ATTRIBUTES
from pruneviz.data.samples import get_spec
from pruneviz.errors import ModelError
from pruneviz.measure.storage import dense_bytes

CARD_FORMAT = "pruneviz.slim"
CARD_VERSION = 1
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
         nn.ConvTranspose3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_RNN = (nn.LSTM, nn.GRU, nn.RNN)


def _shape_of(module: nn.Module) -> dict[str, Any] | None:
    if isinstance(module, nn.Linear):
        return {"type": "Linear", "in_features": module.in_features,
                "out_features": module.out_features}
    if isinstance(module, _CONV):
        return {"type": type(module).__name__, "in_channels": module.in_channels,
                "out_channels": module.out_channels, "groups": module.groups}
    if isinstance(module, _BN):
        return {"type": type(module).__name__, "num_features": module.num_features}
    if isinstance(module, nn.GroupNorm):
        return {"type": "GroupNorm", "num_channels": module.num_channels,
                "num_groups": module.num_groups}
    if isinstance(module, nn.LayerNorm | nn.RMSNorm):
        return {"type": type(module).__name__,
                "normalized_shape": list(module.normalized_shape)}
    if isinstance(module, nn.Embedding):
        return {"type": "Embedding", "num_embeddings": module.num_embeddings,
                "embedding_dim": module.embedding_dim}
    if isinstance(module, _RNN):
        return {"type": type(module).__name__, "input_size": module.input_size,
                "hidden_size": module.hidden_size}
    if isinstance(module, SlimAttention):
        return {"type": "SlimAttention", "num_heads": module.num_heads,
                "head_dim": module.head_dim, "kept_heads": list(module.kept_heads),
                "embed_dim": module.embed_dim}
    if isinstance(module, FusedHeadAttention):
        return {"type": "FusedHeadAttention", "num_heads": module.num_heads,
                "head_dim": module.head_dim, "scale": module.scale}
    counts = head_counts(module)  # an attention module whose heads a slim removed
    return {"type": type(module).__name__, "heads": counts} if counts else None


def architecture_card(base: str, base_model: nn.Module, slimmed: nn.Module) -> dict[str, Any]:
    """The card: base architecture plus every module whose shape differs from the base."""
    before = dict(base_model.named_modules())
    changed: dict[str, Any] = {}
    replaced: list[str] = []  # modules built whole from their entry: skip what is inside
    for name, module in slimmed.named_modules():
        if any(name.startswith(f"{r}.") for r in replaced):
            continue
        shape = _shape_of(module)
        if name in before and isinstance(module, nn.Identity) and \
                not isinstance(before[name], nn.Identity):
            changed[name] = {"type": "Identity"}
            replaced.append(name)
        elif shape is not None and name in before and shape != _shape_of(before[name]):
            changed[name] = shape
            if isinstance(module, SlimAttention | FusedHeadAttention):
                replaced.append(name)
    card = {
        "format": CARD_FORMAT,
        "version": CARD_VERSION,
        "base": base,
        "modules": changed,
        "params": sum(p.numel() for p in slimmed.parameters()),
    }
    card.update(_bare_changes(base_model, slimmed, changed))
    return card


def _bare_changes(base_model: nn.Module, slimmed: nn.Module, changed: dict[str, Any]
                  ) -> dict[str, Any]:
    """Bare parameters (outside the modules `changed` rebuilds) whose shape changed, and
    width attributes whose value changed: {"parameters": ..., "attributes": ...}."""
    old_params = dict(base_model.named_parameters())
    parameters = {
        name: list(p.shape) for name, p in slimmed.named_parameters()
        if name in old_params and p.shape != old_params[name].shape
        and not any(name.startswith(f"{m}.") for m in changed)}
    old_modules = dict(base_model.named_modules())
    attributes = {
        f"{name}.{attr}" if name else attr: getattr(module, attr)
        for name, module in slimmed.named_modules() if name in old_modules
        for attr in WIDTH_ATTRIBUTES
        if isinstance(getattr(module, attr, None), int)
        and getattr(module, attr) != getattr(old_modules[name], attr, None)}
    out: dict[str, Any] = {}
    if parameters:
        out["parameters"] = parameters
    if attributes:
        out["attributes"] = attributes
    return out


def _resized(old: nn.Module, shape: dict[str, Any]) -> nn.Module:
    kind = shape.get("type")
    if kind == "SlimAttention" and isinstance(old, nn.MultiheadAttention):
        embed = int(shape.get("embed_dim", old.embed_dim))
        same = embed == old.embed_dim
        return SlimAttention(
            embed, int(shape["num_heads"]), int(shape["head_dim"]),
            kdim=old.kdim if same else embed, vdim=old.vdim if same else embed,
            in_bias=old.in_proj_bias is not None,
            out_bias=old.out_proj.bias is not None, batch_first=old.batch_first,
            dropout=old.dropout, kept_heads=tuple(int(h) for h in shape["kept_heads"]),
            original_heads=old.num_heads)
    if kind == "FusedHeadAttention" and not isinstance(old, FusedHeadAttention):
        fused = FusedHeadAttention.replacing(old, int(shape["num_heads"]),
                                             int(shape["head_dim"]), new_projections=True)
        fused.scale = float(shape["scale"])
        return fused
    if kind != type(old).__name__:
        raise ModelError(f"card says {kind!r} but the base architecture has "
                         f"{type(old).__name__}")
    if "heads" in shape:  # an attention module's head counts, set in place (the model is
        # a copy of the base; its Linears have their own entries, applied on this module)
        set_head_counts(old, {str(k): int(v) for k, v in dict(shape["heads"]).items()})
        return old
    if isinstance(old, nn.Linear):
        return nn.Linear(int(shape["in_features"]), int(shape["out_features"]),
                         bias=old.bias is not None)
    if isinstance(old, _CONV):
        kwargs: dict[str, Any] = {
            "kernel_size": old.kernel_size, "stride": old.stride, "padding": old.padding,
            "dilation": old.dilation, "groups": int(shape["groups"]),
            "bias": old.bias is not None,
        }
        if isinstance(old, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d):
            kwargs["output_padding"] = old.output_padding
        else:
            kwargs["padding_mode"] = old.padding_mode
        return type(old)(int(shape["in_channels"]), int(shape["out_channels"]), **kwargs)
    if isinstance(old, _BN):
        return type(old)(int(shape["num_features"]), eps=old.eps, momentum=old.momentum,
                         affine=old.affine, track_running_stats=old.track_running_stats)
    if isinstance(old, nn.GroupNorm):
        return nn.GroupNorm(int(shape["num_groups"]), int(shape["num_channels"]), eps=old.eps,
                            affine=old.affine)
    if isinstance(old, nn.LayerNorm):
        return nn.LayerNorm(list(shape["normalized_shape"]), eps=old.eps,
                            elementwise_affine=old.elementwise_affine,
                            bias=getattr(old, "bias", None) is not None)
    if isinstance(old, nn.RMSNorm):
        return nn.RMSNorm(list(shape["normalized_shape"]), eps=old.eps,
                          elementwise_affine=old.elementwise_affine)
    if isinstance(old, nn.Embedding):
        return nn.Embedding(int(shape["num_embeddings"]), int(shape["embedding_dim"]),
                            padding_idx=old.padding_idx, max_norm=old.max_norm,
                            norm_type=old.norm_type,
                            scale_grad_by_freq=old.scale_grad_by_freq, sparse=old.sparse)
    if isinstance(old, nn.LSTM | nn.GRU):
        return type(old)(int(shape["input_size"]), int(shape["hidden_size"]),
                         num_layers=old.num_layers, bias=old.bias, batch_first=old.batch_first,
                         dropout=old.dropout, bidirectional=old.bidirectional)
    if isinstance(old, nn.RNN):
        return nn.RNN(int(shape["input_size"]), int(shape["hidden_size"]),
                      num_layers=old.num_layers, nonlinearity=old.nonlinearity, bias=old.bias,
                      batch_first=old.batch_first, dropout=old.dropout,
                      bidirectional=old.bidirectional)
    raise ModelError(f"cannot resize a {type(old).__name__}")


def build_from_card(card: dict[str, Any], base_model: nn.Module | None = None) -> nn.Module:
    """The slimmed architecture (uninitialised weights) that a card describes.

    The card's base is built from its sample (`sample:NAME`) unless `base_model` — the
    base architecture itself, such as the user's own model as loaded — is given; it is
    copied, never changed.
    """
    if card.get("format") != CARD_FORMAT or card.get("version") != CARD_VERSION:
        raise ModelError(f"not a pruneviz slim card (format {card.get('format')!r}, "
                         f"version {card.get('version')!r}); expected {CARD_FORMAT!r} "
                         f"version {CARD_VERSION}")
    if base_model is not None:
        return apply_card(copy.deepcopy(base_model), card)
    base = str(card.get("base", ""))
    kind, _, name = base.partition(":")
    if kind != "sample":
        raise ModelError(f"the card's base {base!r} is not a sample model (sample:NAME); "
                         "pass the base architecture (the model as loaded) to rebuild it")
    return apply_card(get_spec(name).build(), card)


def apply_card(model: nn.Module, card: dict[str, Any]) -> nn.Module:
    """Swap the modules a card names in `model` (the card's base) for their slimmed
    shapes; the weights are left to load."""
    base = str(card.get("base", ""))
    modules = dict(model.named_modules())
    entries = card.get("modules", {})
    if not isinstance(entries, dict):
        raise ModelError("the card's 'modules' must be an object mapping module names to "
                         "their shapes")
    for path, shape in entries.items():
        if not isinstance(shape, dict):
            raise ModelError(f"the card's entry for {path!r} is malformed: expected an "
                             f"object, got {type(shape).__name__}")
        if path not in modules:
            raise ModelError(f"the card names module {path!r}, which {base} does not have")
        parent_name, _, attr = path.rpartition(".")
        parent = modules[parent_name] if parent_name else model
        try:
            new = nn.Identity() if shape.get("type") == "Identity" else \
                _resized(modules[path], shape)
            setattr(parent, attr, new.to(model_device(modules[path])))  # where the old one was
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"the card's entry for {path!r} is malformed: {exc}") from None
    _apply_bare(model, card)
    return model.eval()


def _apply_bare(model: nn.Module, card: dict[str, Any]) -> None:
    """Give the card's bare parameters their shapes and its width attributes their values."""
    for path, value in _card_entries(card, "parameters").items():
        owner, attr, old = _attribute(model, path)
        if not isinstance(old, nn.Parameter) or not isinstance(value, list) or \
                not all(isinstance(n, int) for n in value):
            raise ModelError(f"the card's entry for {path!r} is malformed")
        setattr(owner, attr, nn.Parameter(torch.empty(value, dtype=old.dtype, device=old.device),
                                          requires_grad=old.requires_grad))
    for path, value in _card_entries(card, "attributes").items():
        owner, attr, _ = _attribute(model, path)
        if attr not in WIDTH_ATTRIBUTES or not isinstance(value, int):
            raise ModelError(f"the card's entry for {path!r} is malformed")
        setattr(owner, attr, value)


def _card_entries(card: dict[str, Any], key: str) -> dict[str, Any]:
    entries = card.get(key, {})
    if not isinstance(entries, dict):
        raise ModelError(f"the card's {key!r} must be an object")
    return entries


def _attribute(model: nn.Module, path: str) -> tuple[nn.Module, str, Any]:
    """The module holding `path`, its attribute name and value."""
    owner_name, _, attr = str(path).rpartition(".")
    try:
        owner = model.get_submodule(owner_name)
        return owner, attr, getattr(owner, attr)
    except AttributeError:
        raise ModelError(f"the card names {path!r}, which the base does not have") from None


def load_slimmed(card_path: Path, weights_path: Path,
                 base_model: nn.Module | None = None) -> nn.Module:
    """Rebuild a slimmed model from its card and safetensors weights (strict); see
    `build_from_card` for `base_model`."""
    try:
        card = json.loads(Path(card_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the slim card {card_path}: {exc}") from None
    if not isinstance(card, dict):
        raise ModelError(f"the slim card {card_path} is not a JSON object")
    model = build_from_card(card, base_model)
    try:
        state = load_file(str(weights_path))
        model.load_state_dict(state, strict=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ModelError(f"the weights {weights_path} do not fit the card: {exc}") from None
    return model


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that no half-written file is ever left behind, with the
    mode a new file of the user's gets (not the temporary file's 0600). A full disk is
    an OSError saying it in the user's terms: which folder, how much was needed."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            free = shutil.disk_usage(path.parent).free
            raise OSError(exc.errno, (
                f"No space left in {path.parent} to write {path.name}: it needs "
                f"{len(data):,} bytes and {free:,} are free; free some space, or write "
                "somewhere else")) from None
        raise
    _fsync_folder(path.parent)


def _umask() -> int:
    """This process's umask, read without changing it (Linux /proc), else by setting it
    and putting it back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort: not every system can)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


BATCH = "batch"  # the name of the dynamic first dimension in the .pt2 and ONNX files


def fresh_example(like: Tensor, model: nn.Module | None = None, batch: int = 2) -> Tensor:
    """A new CPU tensor shaped like one batch of `like` with `batch` rows (default 2: a
    batch of 1 would be specialised by torch.export), holding none of its values: seeded
    random floats, or for integer inputs (token ids) ids valid for `model`'s first
    nn.Embedding (zeros without one). What deployment files keep as their example."""
    shape = (batch, *like.shape[1:])
    generator = torch.Generator().manual_seed(0)
    if like.is_floating_point():
        return torch.randn(shape, generator=generator).to(like.dtype)
    if like.dtype == torch.bool:
        return torch.zeros(shape, dtype=torch.bool)
    vocab = next((m.num_embeddings for m in (model.modules() if model is not None else ())
                  if isinstance(m, nn.Embedding)), 1)
    return torch.randint(0, vocab, shape, generator=generator).to(like.dtype)


def program(model: nn.Module, example: Tensor) -> torch.export.ExportedProgram:
    """`torch.export` of a CPU copy of `model` in eval mode with a dynamic batch (first)
    dimension, traced on `fresh_example(example)`: the program keeps that new tensor as
    its example, never the caller's data. Raises what torch.export raises."""
    cpu = copy.deepcopy(model).cpu().eval()
    sample = fresh_example(example, cpu)
    return torch.export.export(cpu, (sample,),
                               dynamic_shapes=({0: torch.export.Dim(BATCH, min=1)},))


def program_bytes(model: nn.Module | torch.export.ExportedProgram,
                  example: Tensor | None = None) -> bytes:
    """The .pt2 file of `program(model, example)` (or of a program), as bytes."""
    if not isinstance(model, torch.export.ExportedProgram):
        if example is None:
            raise ValueError("an example input is needed to export a model")
        model = program(model, example)
    buffer = io.BytesIO()
    torch.export.save(model, buffer)
    return buffer.getvalue()


def export_program(model: nn.Module, example: Tensor, path: Path) -> str | None:
    """Write a `torch.export` program of `model` (a CPU copy, whatever device the model is
    on: the program is a deployment file) with a dynamic batch dimension, traced on a
    fresh tensor shaped like `example` (`fresh_example`: no data of the caller's is kept
    in the file); returns why it failed, or None."""
    try:
        write_atomic(path, program_bytes(model, example))
    except Exception as exc:  # noqa: BLE001 - export is best effort; the reason is reported
        return f"{type(exc).__name__}: {exc}"
    return None


def _check_program(path: Path, model: nn.Module, example: Tensor) -> str | None:
    """Reload the program just written to `path` and run it at batch 1 and 64 against
    `model`; on a failure the file is removed and the reason returned."""
    try:
        loaded = torch.export.load(str(path)).module()
        x = example.detach().cpu()
        with torch.inference_mode():
            for n in (1, 64):
                batch = x.repeat(-(-n // len(x)), *([1] * (x.dim() - 1)))[:n]
                want = copy.deepcopy(model).cpu().eval()(batch)
                if not torch.allclose(loaded(batch), want, rtol=1e-4, atol=1e-5):
                    raise ModelError(f"the reloaded program's output at batch {n} differs "
                                     "from the slimmed model's")
    except Exception as exc:  # noqa: BLE001 - a program fails in many ways: say which
        path.unlink(missing_ok=True)
        return f"{type(exc).__name__}: {exc}"
    return None


def save_slimmed(
    base: str, base_model: nn.Module, slimmed: nn.Module, example: Tensor, out: Path
) -> dict[str, Any]:
    """Write slim.safetensors, slim.json (the card) and slim.pt2; reload and verify."""
    out.mkdir(parents=True, exist_ok=True)
    card = architecture_card(base, base_model, slimmed)
    weights = out / "slim.safetensors"
    card_path = out / "slim.json"
    write_atomic(weights, dense_bytes(slimmed.state_dict()))
    write_atomic(card_path, json.dumps(card, indent=2).encode())
    reloaded = load_slimmed(card_path, weights, base_model)
    with torch.inference_mode():
        same = torch.equal(reloaded(example), slimmed.eval()(example))
    program_error = export_program(slimmed, example, out / "slim.pt2")
    if program_error is None:
        program_error = _check_program(out / "slim.pt2", slimmed, example)
    return {
        "weights": str(weights), "card": str(card_path),
        "program": None if program_error else str(out / "slim.pt2"),
        "program_error": program_error, "reload_identical": same,
    }
