"""Weight files: dense safetensors, a sparse encoding, and gzip — as real bytes.

The sparse encoding ("pruneviz.sparse", version 1) stores each tensor in whichever of
three forms is smallest: dense; a 1-bit-per-element mask plus the non-zero values
("bitmask"); or CSR over the tensor viewed as (rows, columns) with the smallest integer
type that holds its indices ("csr"). Zero means all bits zero, so a -0.0 weight is kept
as a value and decodes bit-exactly.

The file is a safetensors file (so reading it never unpickles anything) whose metadata
says `{"format": "pruneviz.sparse/1"}` and which holds one uint8 tensor `data`, so that
per-tensor headers do not dominate small models. `data` is:

- 4 bytes: the length L of the layout (little-endian);
- L bytes: the layout, zlib-compressed UTF-8 JSON: a list of
  `[name, dtype, shape, encoding, extra]` in payload order (`extra` is
  `[row_index_dtype, col_index_dtype]` for CSR, else null);
- the payload, tensor after tensor: dense → raw bytes; bitmask → packed mask bits
  (ceil(numel / 8) bytes, most significant bit first), then the values; csr → row
  pointers, column indices, then the values. All little-endian.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from pruneviz.errors import Cancelled, ModelError

SPARSE_FORMAT = "pruneviz.sparse/1"
ENCODINGS = ("dense", "bitmask", "csr")
_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_INDEX_TYPES = {"uint8": torch.uint8, "int16": torch.int16, "int32": torch.int32,
                "int64": torch.int64}


def dense_bytes(state: dict[str, Tensor]) -> bytes:
    """The state dict as a dense safetensors file."""
    return st_save({k: v.detach().cpu().contiguous() for k, v in state.items()})


def dense_size_of(state: dict[str, Tensor]) -> int:
    """len(dense_bytes(state)) without writing the weights: safetensors itself writes the
    header of a copy of `state` with one element per tensor (which gives the order it
    lays tensors out in), and the real header differs only in shapes and offsets."""
    tensors = {k: v.detach() for k, v in state.items()}
    probe = st_save({k: torch.zeros(1, dtype=v.dtype) for k, v in tensors.items()})
    listed = json.loads(probe[8:8 + int.from_bytes(probe[:8], "little")])
    header: dict[str, Any] = {}
    offset = 0
    for name, entry in listed.items():
        if name == "__metadata__":
            header[name] = entry
            continue
        t = tensors[name]
        size = t.numel() * t.element_size()
        header[name] = {"dtype": entry["dtype"], "shape": list(t.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    return 8 + -(-len(text) // 8) * 8 + offset


def _raw(t: Tensor) -> bytes:
    flat = t.detach().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def _nonzero_bits(flat: Tensor) -> Tensor:
    if flat.dtype == torch.bool:
        return flat
    return flat.view(_INT_VIEW[flat.element_size()]) != 0


def smallest_index_dtype(max_value: int) -> torch.dtype:
    """The smallest integer type safetensors stores that holds 0..max_value."""
    for dtype in _INDEX_TYPES.values():
        if max_value <= torch.iinfo(dtype).max:
            return dtype
    raise ValueError(f"index {max_value} does not fit in int64")


def _index_type(max_value: int) -> str:
    return str(smallest_index_dtype(max_value)).removeprefix("torch.")


def _itemsize(index_type: str) -> int:
    return torch.empty((), dtype=_INDEX_TYPES[index_type]).element_size()


@dataclass(frozen=True)
class TensorLayout:
    """How one tensor is stored in the sparse encoding."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    encoding: str
    index_types: tuple[str, str] | None  # (row pointers, column indices) for CSR


def _choose(name: str, t: Tensor) -> tuple[TensorLayout, int, Tensor | None]:
    """The smallest encoding of `t`: its layout, its payload bytes, and its non-zero flags
    (None when stored dense because it is empty, a scalar or complex)."""
    t = t.detach()
    dtype = str(t.dtype).removeprefix("torch.")
    shape = tuple(int(d) for d in t.shape)
    numel = t.numel()
    item = t.element_size()
    if numel == 0 or t.dim() == 0 or t.is_complex():
        return TensorLayout(name, dtype, shape, "dense", None), numel * item, None
    nz = _nonzero_bits(t.reshape(-1))
    nnz = int(nz.sum())
    rows = shape[0]
    cols = numel // rows
    row_type, col_type = _index_type(nnz), _index_type(cols - 1)
    sizes = {
        "dense": numel * item,
        "bitmask": nnz * item + (numel + 7) // 8,
        "csr": nnz * (item + _itemsize(col_type)) + (rows + 1) * _itemsize(row_type),
    }
    best = min(sizes, key=lambda k: sizes[k])
    types = (row_type, col_type) if best == "csr" else None
    return TensorLayout(name, dtype, shape, best, types), sizes[best], nz


def _encode(name: str, t: Tensor) -> tuple[TensorLayout, list[bytes]]:
    t = t.detach().contiguous()
    layout, _, nz = _choose(name, t)
    if layout.encoding == "dense" or nz is None:
        return layout, [_raw(t)]
    flat = t.reshape(-1)
    values = _raw(flat[nz])
    if layout.encoding == "bitmask":
        mask = np.packbits(nz.numpy()).tobytes()
        return layout, [mask, values]
    assert layout.index_types is not None
    row_type, col_type = layout.index_types
    rows = layout.shape[0]
    nz2 = nz.view(rows, -1)
    crow = torch.zeros(rows + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(nz2.sum(dim=1), 0)
    col = torch.nonzero(nz2)[:, 1]
    parts = [_raw(crow.to(_INDEX_TYPES[row_type])), _raw(col.to(_INDEX_TYPES[col_type])), values]
    return layout, parts


def _entry(layout: TensorLayout) -> list[Any]:
    return [layout.name, layout.dtype, list(layout.shape), layout.encoding,
            list(layout.index_types) if layout.index_types else None]


def _container(entries: list[list[Any]], payload: bytes | int) -> bytes:
    """The file: a safetensors byte tensor holding the compressed layout list, then the
    payload (given as its length, the payload's bytes are zeros: same file size)."""
    packed = zlib.compress(json.dumps(entries, separators=(",", ":")).encode(), 9)
    body = bytearray(len(packed).to_bytes(4, "little") + packed)
    body += bytes(payload) if isinstance(payload, int) else payload
    data = torch.frombuffer(body, dtype=torch.uint8)
    return st_save({"data": data}, metadata={"format": SPARSE_FORMAT})


def sparse_bytes(state: dict[str, Tensor]) -> bytes:
    """The state dict in the sparse encoding (see the module docstring)."""
    entries: list[list[Any]] = []
    payload: list[bytes] = []
    for name, t in state.items():
        layout, parts = _encode(name, t.detach().cpu())
        entries.append(_entry(layout))
        payload.extend(parts)
    return _container(entries, b"".join(payload))


@dataclass(frozen=True)
class TensorFigures:
    """One tensor in the sparse file: its layout entry, its payload bytes, its non-zeros."""

    entry: list[Any]
    payload: int
    nonzero: int
    numel: int


def tensor_figures(name: str, t: Tensor) -> TensorFigures:
    """What tensor `name` adds to the sparse file (one pass over it, nothing encoded)."""
    layout, size, nz = _choose(name, t)
    nonzero = t.numel() if nz is None else int(nz.sum())
    return TensorFigures(_entry(layout), size, nonzero, t.numel())


def sparse_size_of(figures: Iterable[TensorFigures]) -> int:
    """len(sparse_bytes(state)) from each tensor's figures, in the state dict's order,
    without building the file: the container's safetensors header is made for an empty
    body and given the body's real length (a safetensors header is JSON padded with
    spaces to a multiple of 8 bytes)."""
    listed = list(figures)
    entries = [f.entry for f in listed]
    packed = zlib.compress(json.dumps(entries, separators=(",", ":")).encode(), 9)
    body = 4 + len(packed) + sum(f.payload for f in listed)
    probe = st_save({"data": torch.zeros(0, dtype=torch.uint8)},
                    metadata={"format": SPARSE_FORMAT})
    header = probe[8:8 + int.from_bytes(probe[:8], "little")].rstrip(b" ")
    header = header.replace(b'"shape":[0]', b'"shape":[%d]' % body).replace(
        b'"data_offsets":[0,0]', b'"data_offsets":[0,%d]' % body)
    return 8 + -(-len(header) // 8) * 8 + body


def sparse_size(state: dict[str, Tensor]) -> int:
    """len(sparse_bytes(state)), without encoding the values (several times faster)."""
    return sparse_size_of(tensor_figures(name, t) for name, t in state.items())


def _read_container(data: bytes) -> tuple[list[TensorLayout], bytes]:
    try:
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len]) if 0 < header_len < len(data) else {}
        metadata = header.get("__metadata__") or {} if isinstance(header, dict) else {}
    except (ValueError, UnicodeDecodeError):
        metadata = {}
    tag = str(metadata.get("format", ""))
    if not tag.startswith("pruneviz.sparse"):
        raise ModelError(
            "not a pruneviz sparse weight file (no 'pruneviz.sparse' format tag in its header)"
        )
    if tag != SPARSE_FORMAT:
        raise ModelError(f"sparse weight file format {tag!r} is not supported; this pruneviz "
                         f"reads {SPARSE_FORMAT!r}")
    try:
        body = st_load(data)["data"].numpy().tobytes()
        layout_len = int.from_bytes(body[:4], "little")
        entries = json.loads(zlib.decompress(body[4 : 4 + layout_len]))
        layouts = [
            TensorLayout(str(n), str(d), tuple(int(x) for x in s), str(e),
                         (str(x[0]), str(x[1])) if x else None)
            for n, d, s, e, x in entries
        ]
        payload = body[4 + layout_len :]
    except (SafetensorError, KeyError, ValueError, TypeError, zlib.error) as exc:
        raise ModelError(f"the sparse weight file is damaged: {exc}") from None
    return layouts, payload


def sparse_layout(data: bytes) -> dict[str, TensorLayout]:
    """How each tensor is stored in a sparse weight file (without decoding the values)."""
    layouts, _ = _read_container(data)
    return {layout.name: layout for layout in layouts}


class _Reader:
    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.pos = 0

    def take(self, count: int, dtype: torch.dtype) -> Tensor:
        size = count * torch.empty((), dtype=dtype).element_size()
        if count < 0 or self.pos + size > len(self.payload):
            raise ModelError("the sparse weight file is truncated: its payload ends early")
        chunk = bytearray(self.payload[self.pos : self.pos + size])
        self.pos += size
        return torch.frombuffer(chunk, dtype=dtype) if size else torch.empty(0, dtype=dtype)


def _decode_one(layout: TensorLayout, reader: _Reader) -> Tensor:
    dtype = getattr(torch, layout.dtype, None)
    if not isinstance(dtype, torch.dtype) or layout.encoding not in ENCODINGS:
        raise ModelError(
            f"the sparse weight file is damaged: tensor {layout.name!r} has dtype "
            f"{layout.dtype!r} and encoding {layout.encoding!r}"
        )
    numel = int(np.prod(layout.shape)) if layout.shape else 1
    if layout.encoding == "dense":
        return reader.take(numel, dtype).clone().view(layout.shape)
    flat = torch.zeros(numel, dtype=dtype)
    if layout.encoding == "bitmask":
        packed = reader.take((numel + 7) // 8, torch.uint8).numpy()
        bits = torch.from_numpy(np.unpackbits(packed)[:numel].astype(bool))
        flat[bits] = reader.take(int(bits.sum()), dtype)
        return flat.view(layout.shape)
    if layout.index_types is None or not set(layout.index_types) <= set(_INDEX_TYPES):
        raise ModelError(f"the sparse weight file is damaged: bad CSR index types for "
                         f"{layout.name!r}")
    rows = layout.shape[0]
    cols = numel // rows if rows else 0
    crow = reader.take(rows + 1, _INDEX_TYPES[layout.index_types[0]]).long()
    nnz = int(crow[-1])
    col = reader.take(nnz, _INDEX_TYPES[layout.index_types[1]]).long()
    counts = crow[1:] - crow[:-1]
    if (counts < 0).any() or (col < 0).any() or (col >= cols).any():
        raise ModelError(f"the sparse weight file is damaged: bad CSR indices for "
                         f"{layout.name!r}")
    row = torch.repeat_interleave(torch.arange(rows), counts)
    flat[row * cols + col] = reader.take(nnz, dtype)
    return flat.view(layout.shape)


def decode_sparse(data: bytes) -> dict[str, Tensor]:
    """Decode bytes made by `sparse_bytes` back into the exact original state dict."""
    layouts, payload = _read_container(data)
    reader = _Reader(payload)
    out = {layout.name: _decode_one(layout, reader) for layout in layouts}
    if reader.pos != len(payload):
        raise ModelError("the sparse weight file is damaged: its payload has extra bytes")
    return out


@dataclass(frozen=True)
class FileSizes:
    """Sizes in bytes of one state dict saved three ways (`gzip` None: not measured yet)."""

    dense: int
    sparse: int
    gzip: int | None


GZIP_LEVEL = 6
_CHUNK = 1 << 20


def gzip_size(data: bytes, level: int = GZIP_LEVEL, stop: Callable[[], bool] | None = None
              ) -> int:
    """len(gzip.compress(data, level)), compressed a megabyte at a time so that `stop` can
    end it (then `Cancelled` is raised)."""
    packer = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: the gzip container
    total = 0
    view = memoryview(data)
    for start in range(0, len(data), _CHUNK):
        if stop is not None and stop():
            raise Cancelled("the gzip size was not measured: stopped")
        total += len(packer.compress(view[start:start + _CHUNK]))
    return total + len(packer.flush())


def file_sizes(state: dict[str, Tensor], gzip_level: int = GZIP_LEVEL) -> FileSizes:
    """Serialise `state` densely, sparsely and as gzip of the dense file; return the sizes."""
    state = {k: v.detach().cpu() for k, v in state.items()}  # the bytes are the CPU's
    dense = dense_bytes(state)
    return FileSizes(len(dense), len(sparse_bytes(state)), gzip_size(dense, gzip_level))
