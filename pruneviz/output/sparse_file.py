"""The sparse-deployed form as a file: CSR layers and the architecture card in one
safetensors file, rebuilt into a model that runs the CSR matmuls.

`save_sparse(model, card)` takes a model whose mostly-zero layers are already
`SparseLinear` / `SparseConv1x1` modules (pruneviz.measure.sparse: `sparse_deploy(...).model`,
or `csr_model(masked, min_sparsity)` below, which converts by sparsity without timing) and
returns the bytes of a safetensors file holding:

- every tensor of the model's state dict; a CSR layer's weight is its three component
  tensors `<layer>.crow_indices`, `<layer>.col_indices` (smallest integer type) and
  `<layer>.values`, with `<layer>.bias` as usual — plain tensors, nothing pickled;
- in the file's metadata, under the one key `pruneviz` (one key, so that the file's bytes
  do not depend on the order safetensors happens to write several in), a JSON object:
  `format` ("pruneviz.sparse"), `version`, `card` (the architecture card of
  pruneviz.output.model_files) and `csr` (each CSR layer's kind, shape and, for a 1x1
  convolution, which product form it runs).

`load_sparse(path)` builds the card's architecture (a sample's, or `base_model`), puts a
CSR module of the recorded shape in each CSR layer's place, and loads the tensors strictly;
nothing in the file is run. The model it returns computes what the masked model computes
(float sums in another order), with the CSR layers run as `torch.sparse` products.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import Tensor, nn

from pruneviz.core.blocks import set_module
from pruneviz.errors import ModelError
from pruneviz.measure.sparse import SparseConv1x1, SparseLinear, csr_candidate, weight_sparsity
from pruneviz.measure.storage import smallest_index_dtype
from pruneviz.output.model_files import build_from_card

FORMAT = "pruneviz.sparse"
VERSION = "1"
METADATA_KEY = "pruneviz"


def csr_model(model: nn.Module, min_sparsity: float = 0.5) -> tuple[nn.Module, list[str]]:
    """A copy of `model` in which every plain Linear and pointwise Conv2d with at least
    `min_sparsity` of its weights zero is a CSR module; and their names. Nothing is timed
    (`pruneviz.measure.sparse.sparse_deploy` times each layer and converts only where
    CSR is faster); the input model is never changed."""
    if not 0.0 <= min_sparsity <= 1.0:
        raise ValueError(f"min_sparsity must be between 0 and 1, got {min_sparsity!r}")
    converted = copy.deepcopy(model).eval()
    names: list[str] = []
    for name, module in list(converted.named_modules()):
        if name and csr_candidate(module) and weight_sparsity(module.weight) >= min_sparsity:
            sparse: nn.Module = (SparseLinear.from_dense(module)
                                 if isinstance(module, nn.Linear)
                                 else SparseConv1x1.from_dense(module))
            set_module(converted, name, sparse)
            names.append(name)
    return converted, names


def _layer_entry(module: SparseLinear | SparseConv1x1) -> dict[str, Any]:
    if isinstance(module, SparseConv1x1):
        return {"type": "SparseConv1x1", "out": module.out_channels, "in": module.in_channels,
                "per_sample": module.per_sample, "bias": module.bias is not None}
    return {"type": "SparseLinear", "out": module.out_features, "in": module.in_features,
            "bias": module.bias is not None}


def save_sparse(model: nn.Module, card: dict[str, Any]) -> bytes:
    """The safetensors bytes of `model` (CSR layers as their component tensors) with the
    architecture `card` of its base and the CSR layers' shapes in the metadata."""
    layers = {name: _layer_entry(module) for name, module in model.named_modules()
              if isinstance(module, SparseLinear | SparseConv1x1)}
    if "" in layers:
        raise ModelError("the model is itself one CSR layer: save its parts instead")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for name, module in model.named_modules():
        if isinstance(module, SparseLinear | SparseConv1x1):
            state[f"{name}.crow_indices"] = state[f"{name}.crow_indices"].to(
                smallest_index_dtype(module.nnz))
            state[f"{name}.col_indices"] = state[f"{name}.col_indices"].to(
                smallest_index_dtype(max(module.shape[1] - 1, 0)))
    record = {"format": FORMAT, "version": VERSION, "card": card, "csr": layers}
    return save(state, metadata={METADATA_KEY: json.dumps(record, sort_keys=True)})


def _csr_module(name: str, entry: Any, state: dict[str, Tensor]) -> nn.Module:
    """The CSR module the file records at `name`, with its tensors from `state`."""
    if not isinstance(entry, dict) or entry.get("type") not in ("SparseLinear",
                                                                 "SparseConv1x1"):
        raise ModelError(f"the file's CSR entry for {name!r} is malformed: {entry!r}")
    try:
        shape = (int(entry["out"]), int(entry["in"]))
        parts = [state.pop(f"{name}.{part}") for part in ("crow_indices", "col_indices",
                                                          "values")]
        bias = state.pop(f"{name}.bias") if entry.get("bias") else None
        weight = torch.sparse_csr_tensor(parts[0].long(), parts[1].long(), parts[2], shape,
                                         check_invariants=True).to_dense()
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise ModelError(f"the file's CSR layer {name!r} is damaged or incomplete: "
                         f"{type(exc).__name__}: {exc}") from None
    if entry["type"] == "SparseLinear":
        return SparseLinear(weight, bias)
    return SparseConv1x1(weight.view(*shape, 1, 1), bias,
                         per_sample=bool(entry.get("per_sample", False)))


def load_sparse_bytes(data: bytes, base_model: nn.Module | None = None) -> nn.Module:
    """`load_sparse` from the file's bytes."""
    try:
        state = load(data)
        metadata = _metadata(data)
    except (SafetensorError, ValueError) as exc:
        raise ModelError(f"not a safetensors file: {exc}") from None
    try:
        record = json.loads(metadata.get(METADATA_KEY, "{}"))
    except ValueError as exc:
        raise ModelError(f"the sparse file's metadata is damaged: {exc}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT or \
            record.get("version") != VERSION:
        found = record if isinstance(record, dict) else {}
        raise ModelError(f"not a pruneviz sparse file (format {found.get('format')!r}, "
                         f"version {found.get('version')!r}); expected {FORMAT!r} "
                         f"version {VERSION}")
    card, layers = record.get("card"), record.get("csr")
    if not isinstance(card, dict) or not isinstance(layers, dict):
        raise ModelError("the sparse file's metadata is damaged: card and csr must be objects")
    model = build_from_card(card, base_model)
    modules = dict(model.named_modules())
    for name, entry in layers.items():
        if name not in modules:
            raise ModelError(f"the sparse file names layer {name!r}, which the architecture "
                             "does not have")
        set_module(model, name, _csr_module(name, entry, state))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"the sparse file's tensors do not fit the architecture: {exc}"
                         ) from None
    csr_parts = {f"{n}.{p}" for n in layers for p in ("crow_indices", "col_indices",
                                                       "values", "bias")}
    missing = [k for k in missing if k not in csr_parts]
    if missing or unexpected:
        raise ModelError(f"the sparse file's tensors do not fit the architecture: missing "
                         f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    return model.eval()


def _metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of safetensors bytes (its JSON header)."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8: 8 + size])
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else {}
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def load_sparse(path: str | Path, base_model: nn.Module | None = None) -> nn.Module:
    """Rebuild the sparse-deployed model saved by `save_sparse` (e.g. an export's
    `model.csr.safetensors`): the card's architecture with its CSR layers as
    `SparseLinear` / `SparseConv1x1` modules running `torch.sparse` products, in eval mode.

    The architecture is the card's sample (`sample:NAME`) unless `base_model` — your model
    as loaded, for a model of your own — is given (copied, never changed). Raises
    ModelError for a file that is not one or does not fit the architecture.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read the sparse file {path}: {exc.strerror or exc}"
                         ) from None
    return load_sparse_bytes(data, base_model)


__all__ = ["FORMAT", "csr_model", "load_sparse", "load_sparse_bytes", "save_sparse"]
