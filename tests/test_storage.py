"""Weight files: the sparse encoding decodes bit-exactly, picks its smallest form, and sizes
are the bytes really written."""

from __future__ import annotations

import gzip
import json
import math
import os
import zlib
from pathlib import Path

import pytest
import torch
from fixtures.models import ZOO, assert_bit_identical
from safetensors.torch import load, load_file, save, save_file
from torch import Tensor

from pruneviz import ModelError, decode_sparse, dense_bytes, file_sizes, sparse_bytes
from pruneviz.measure.storage import sparse_layout


def _with_sparsity(shape: tuple[int, ...], sparsity: float, seed: int = 0,
                   dtype: torch.dtype = torch.float32) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=generator).to(dtype)
    n = t.numel()
    zeros = torch.randperm(n, generator=generator)[: round(sparsity * n)]
    t.view(-1)[zeros] = 0
    return t


def _layout(data: bytes) -> dict[str, dict[str, object]]:
    return {name: {"encoding": layout.encoding} for name, layout in sparse_layout(data).items()}


def _split(data: bytes) -> tuple[bytes, bytes]:
    """(layout, payload) of a sparse file: its `data` tensor is [len][layout][payload]."""
    body = load(data)["data"].numpy().tobytes()
    n = int.from_bytes(body[:4], "little")
    return body[4 : 4 + n], body[4 + n :]


def _stored_bytes(data: bytes, name: str) -> int:
    """Bytes of the payload of a file holding only `name`."""
    assert list(sparse_layout(data)) == [name]
    return len(_split(data)[1])


def _with_layout(good: bytes, entries: list[list[object]]) -> bytes:
    """A copy of `good` whose layout is replaced by `entries` (payload unchanged)."""
    layout = zlib.compress(json.dumps(entries).encode())
    body = bytearray(len(layout).to_bytes(4, "little") + layout + _split(good)[1])
    return save({"data": torch.frombuffer(body, dtype=torch.uint8)},
                metadata={"format": "pruneviz.sparse/1"})


def _int_bytes(max_value: int) -> int:
    for size, limit in [(1, 2**8), (2, 2**15), (4, 2**31)]:
        if max_value < limit:
            return size
    return 8


def _bits(t: Tensor) -> Tensor:
    if not t.is_floating_point():
        return t
    return t.reshape(-1).view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def _reference_sizes(t: Tensor) -> dict[str, int]:
    """What each encoding costs, computed from its definition."""
    n = t.numel()
    nnz = int((_bits(t) != 0).sum())  # -0.0 is not all-zero bits, so it counts
    item = t.element_size()
    rows = t.shape[0]
    cols = n // rows
    return {
        "dense": n * item,
        "bitmask": nnz * item + math.ceil(n / 8),
        "csr": nnz * item + nnz * _int_bytes(cols) + (rows + 1) * _int_bytes(nnz),
    }


CASES: dict[str, Tensor] = {
    "dense": _with_sparsity((64, 300), 0.0),
    "half": _with_sparsity((64, 300), 0.5),
    "ninety": _with_sparsity((64, 300), 0.9),
    "ninety_nine": _with_sparsity((64, 300), 0.99),
    "all_zero": torch.zeros(64, 300),
    "vector": _with_sparsity((1000,), 0.7, seed=1),
    "conv": _with_sparsity((16, 8, 3, 3), 0.8, seed=2),
    "conv_csr": _with_sparsity((16, 8, 3, 3), 0.995, seed=3),
    "float64": _with_sparsity((40, 40), 0.6, seed=4, dtype=torch.float64),
    "float16": _with_sparsity((40, 40), 0.6, seed=5, dtype=torch.float16),
    "bfloat16": _with_sparsity((40, 40), 0.95, seed=6, dtype=torch.bfloat16),
    "int64": torch.tensor([0, 5, 0, 0, -3, 0, 0, 0] * 20, dtype=torch.int64),
    "int32": (torch.arange(120, dtype=torch.int32).view(12, 10) % 7 == 0).int() * 9,
    "bool": torch.arange(200).view(20, 10) % 9 == 0,
    "uint8": (torch.arange(64, dtype=torch.uint8) * 37) * (torch.arange(64) % 3 == 0),
    "scalar": torch.tensor(3.5),
    "empty": torch.zeros(0, 4),
    "one": torch.tensor([0.0]),
}


def _negative_zeros() -> Tensor:
    t = _with_sparsity((32, 32), 0.8, seed=7)
    t.view(-1)[::5] = -0.0  # -0.0 has a sign bit set: it is a value, not a zero
    return t


CASES["negative_zero"] = _negative_zeros()


@pytest.mark.parametrize("name", CASES)
def test_round_trip_is_bit_exact(name: str) -> None:
    state = {name: CASES[name], "other.weight": _with_sparsity((5, 7), 0.5, seed=9)}
    data = sparse_bytes(state)
    back = decode_sparse(data)
    assert_bit_identical(back, state)
    for key, value in back.items():
        assert value.dtype == state[key].dtype
        assert value.shape == state[key].shape
        assert torch.equal(value, state[key])


def test_negative_zero_survives() -> None:
    t = CASES["negative_zero"]
    back = decode_sparse(sparse_bytes({"w": t}))["w"]
    assert (torch.signbit(back) == torch.signbit(t)).all()
    assert int(torch.signbit(back[back == 0]).sum()) > 0


@pytest.mark.parametrize(
    ("name", "encoding"),
    [("dense", "dense"), ("half", "bitmask"), ("ninety", "bitmask"), ("ninety_nine", "csr"),
     ("all_zero", "csr"), ("conv", "bitmask"), ("conv_csr", "csr"), ("scalar", "dense")],
)
def test_encoding_is_the_smallest(name: str, encoding: str) -> None:
    t = CASES[name]
    data = sparse_bytes({name: t})
    assert _layout(data)[name]["encoding"] == encoding
    if t.dim() > 0:
        sizes = _reference_sizes(t)
        assert _stored_bytes(data, name) == min(sizes.values())
        assert sizes[encoding] == min(sizes.values())


def test_sparse_file_shrinks_with_sparsity() -> None:
    sizes = [len(sparse_bytes({"w": CASES[n]}))
             for n in ["dense", "half", "ninety", "ninety_nine", "all_zero"]]
    assert sizes == sorted(sizes, reverse=True)
    dense = len(dense_bytes({"w": CASES["dense"]}))
    assert sizes[0] <= dense + 512  # only the header's layout metadata is extra
    assert sizes[2] < dense * 0.2


def test_file_sizes_are_the_bytes_written(tmp_path: Path) -> None:
    model = ZOO["conv_bn"].build()
    with torch.no_grad():
        model.conv2.weight.view(-1)[::2] = 0.0
    state = model.state_dict()
    sizes = file_sizes(state)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    assert sizes.dense == os.path.getsize(path)
    assert path.read_bytes() == dense_bytes(state)
    sparse = sparse_bytes(state)
    assert sizes.sparse == len(sparse)
    assert sizes.gzip == len(gzip.compress(path.read_bytes(), 6))
    assert sizes.sparse < sizes.dense
    # The dense file is a plain safetensors file; the sparse one decodes to the same state.
    loaded = load_file(str(path))
    assert_bit_identical({k: loaded[k] for k in state}, dict(state))
    assert_bit_identical(decode_sparse(sparse), dict(state))


def test_any_tensor_name_round_trips() -> None:
    state = {"a::b": torch.zeros(3), "layout": torch.ones(2), "data": torch.tensor([0.0, 2.0])}
    assert_bit_identical(decode_sparse(sparse_bytes(state)), state)


def _corrupt(case: str) -> bytes:
    good = sparse_bytes({"w": CASES["ninety"], "v": CASES["ninety_nine"]})
    header_len = int.from_bytes(good[:8], "little")
    if case == "unknown_encoding":
        assert _layout(good)["v"]["encoding"] == "csr"
        layouts = sparse_layout(good)
        entries = [[lay.name, lay.dtype, list(lay.shape),
                    "zip" if lay.name == "v" else lay.encoding,
                    list(lay.index_types) if lay.index_types else None]
                   for lay in layouts.values()]
        return _with_layout(good, entries)
    return {
        "empty": b"",
        "garbage": b"not a weight file at all, just text",
        "truncated_header": good[:20],
        "truncated_data": good[:-10],
        "half": good[: len(good) // 2],
        "huge_header_length": (2**40).to_bytes(8, "little") + good[8:],
        "header_not_json": good[:8] + b"{" * header_len + good[8 + header_len :],
        "plain_safetensors": dense_bytes({"w": torch.zeros(3)}),
    }[case]


@pytest.mark.parametrize("case", [
    "empty", "garbage", "truncated_header", "truncated_data", "half", "huge_header_length",
    "header_not_json", "plain_safetensors", "unknown_encoding",
])
def test_corrupt_bytes_raise_model_error(case: str) -> None:
    with pytest.raises(ModelError):
        decode_sparse(_corrupt(case))


def test_the_sparse_size_is_the_files_length_without_building_it() -> None:
    from pruneviz.measure.storage import sparse_size_of, tensor_figures

    gen = torch.Generator().manual_seed(0)
    for n in (0, 1, 7, 100, 4099, 70_001):
        state = {"w": torch.randn(n, generator=gen), "b": torch.zeros(3),
                 "i": torch.arange(n % 5)}
        state["w"][::3] = 0
        figures = [tensor_figures(k, v) for k, v in state.items()]
        assert sparse_size_of(figures) == len(sparse_bytes(state)), n


@pytest.mark.parametrize("model", ZOO.keys())
def test_dense_size_is_the_dense_file_length_without_writing_it(model: str) -> None:
    from pruneviz.measure.storage import dense_size_of

    state = ZOO[model].build().state_dict()
    assert dense_size_of(state) == len(dense_bytes(state))


def test_dense_size_follows_safetensors_layout_for_mixed_and_odd_tensors() -> None:
    """Mixed dtypes (laid out by dtype, then name), a scalar, an empty tensor and a
    non-ASCII name (written unescaped): the header length, byte for byte."""
    from pruneviz.measure.storage import dense_size_of

    state = {"ü名": torch.ones(3, 2), "s": torch.tensor(1.5), "e": torch.zeros(0, 4),
             "b": torch.ones(5, dtype=torch.bool), "h": torch.ones(7, dtype=torch.float16),
             "i": torch.arange(9), "w" * 40: torch.ones(1000, 3)}
    for keep in range(1, len(state) + 1):
        part = dict(list(state.items())[:keep])
        assert dense_size_of(part) == len(dense_bytes(part)), keep
