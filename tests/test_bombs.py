"""Hostile weight and data files are refused before they cost memory: a compressed member
that expands, a file declaring far more data than the model has, a safetensors header
longer than its file, many tiny tensors; an .npz or IDX .gz that expands a thousandfold
or declares gigabytes, a huge image, a huge CSV. Each is read in a child process whose
peak resident memory is measured: the refusal costs a few megabytes, where reading would
cost the hundreds the file declares."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_safetensors
from torch import nn

from pruneviz.data.user_models import WeightLimits, read_weights
from pruneviz.errors import ModelError

EXPANDS_TO = 256 << 20  # what each bomb would cost if it were read
PEAK_LIMIT_KB = 48 << 10  # refusing one may cost this much at most (allocator noise)

CHILD = textwrap.dedent("""
    import resource, sys
    from torch import nn
    from pruneviz.data.readers import load_data
    from pruneviz.data.user_models import WeightLimits, read_weights
    from pruneviz.errors import PrunevizError
    kind, ref = sys.argv[1], sys.argv[2]
    data = open(ref, "rb").read() if kind == "weights" else None
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        if kind == "weights":
            read_weights(data, sys.argv[3], limits=WeightLimits.for_model(nn.Linear(4, 3)))
        else:
            load_data(ref)
        outcome = "read"
    except PrunevizError as exc:
        outcome = "refused: " + str(exc)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(after - before)
    print(outcome)
""")


def refusal_in_a_child(*args: str) -> tuple[int, str]:
    """Peak resident kilobytes added while the child reads (`weights`, path, name) or
    (`data`, ref), and what it said."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", CHILD, *args], cwd=root,
                          capture_output=True, text=True, timeout=120, check=True)
    peak_kb, outcome = done.stdout.strip().split("\n", 1)
    return int(peak_kb), outcome


def _model() -> nn.Module:
    return nn.Linear(4, 3)


def _torch_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def compressed_member() -> bytes:
    """torch.save's archive with its first storage swapped for a deflated one that
    expands to EXPANDS_TO bytes."""
    original = zipfile.ZipFile(io.BytesIO(_torch_bytes(_model().state_dict())))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as bomb:
        for info in original.infolist():
            if info.filename.endswith("/data/0"):
                bomb.writestr(info.filename, bytes(EXPANDS_TO), zipfile.ZIP_DEFLATED)
            else:
                bomb.writestr(info, original.read(info.filename))
    return out.getvalue()


def declared_data() -> bytes:
    """A stored torch.save archive of one tensor far bigger than the model's weights."""
    return _torch_bytes({"weight": torch.zeros(EXPANDS_TO // 4)})


def long_header() -> bytes:
    """A safetensors file whose header says it is 64 MB long (safetensors' own limit is
    100 MB), in a file of 113 bytes."""
    return struct.pack("<Q", 64 << 20) + b'{"w":' + b" " * 100


def big_safetensors() -> bytes:
    return save_safetensors({"weight": torch.zeros(EXPANDS_TO // 4)})


def many_tensors() -> bytes:
    """20,000 one-element tensors for a model of two."""
    return _torch_bytes({f"t{i}": torch.ones(1) for i in range(20_000)})


BOMBS = {
    "compressed member": (compressed_member, "bomb.pt", "compressed members"),
    "declared data": (declared_data, "bomb.pt", "more than any checkpoint of this model"),
    "long safetensors header": (long_header, "bomb.safetensors", "declares 67,108,864 bytes"),
    "big safetensors": (big_safetensors, "bomb.safetensors",
                        "more than any checkpoint of this model"),
    "many tiny tensors": (many_tensors, "bomb.pt", "20,000 tensor storages"),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", BOMBS)
def test_a_bomb_is_refused_with_bounded_memory(kind: str, tmp_path: Path) -> None:
    make, name, message = BOMBS[kind]
    path = tmp_path / name
    path.write_bytes(make())
    assert path.stat().st_size < EXPANDS_TO // 2 or kind in ("declared data",
                                                               "big safetensors")
    peak_kb, outcome = refusal_in_a_child("weights", str(path), name)
    assert outcome.startswith("refused: "), outcome
    assert message in outcome
    assert peak_kb < PEAK_LIMIT_KB, f"refusing cost {peak_kb >> 10} MB"


def _npy_header(shape: tuple[int, ...]) -> bytes:
    from numpy.lib import format as npy

    buffer = io.BytesIO()
    npy.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False,
                                        "shape": shape})
    return buffer.getvalue()


def npz_expanding(folder: Path) -> Path:
    """x: EXPANDS_TO bytes of float32 zeros, deflated to a few hundred kilobytes."""
    path = folder / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive, \
            archive.open("x.npy", "w", force_zip64=True) as member:
        member.write(_npy_header((EXPANDS_TO // 4,)))
        chunk = bytes(16 << 20)
        for _ in range(EXPANDS_TO // len(chunk)):
            member.write(chunk)
    return path


def npz_declaring(folder: Path) -> Path:
    """x's header declares 4 GB; the file holds a few bytes."""
    path = folder / "bomb.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", _npy_header((1 << 30,)) + bytes(64))
    return path


def idx_expanding(folder: Path) -> Path:
    """An IDX .gz whose header says 2x2x2 bytes and whose stream goes on for EXPANDS_TO."""
    import gzip

    (folder / "t10k-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01" + struct.pack(">I", 2)
                                                   + bytes(2))
    header = b"\0\0\x08\x03" + struct.pack(">3I", 2, 2, 2)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(header + bytes(EXPANDS_TO), compresslevel=1))
    return Path(f"idx:{folder}")


def idx_declaring(folder: Path) -> Path:
    """An IDX .gz whose header declares 10 GB of images."""
    import gzip

    header = b"\0\0\x08\x03" + struct.pack(">3I", 10_000, 1000, 1000)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + bytes(100)))
    (folder / "t10k-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01" + struct.pack(
        ">I", 10_000) + bytes(10_000))
    return Path(f"idx:{folder}")


def huge_image(folder: Path) -> Path:
    """One 5,000x5,000 PNG (a few kilobytes of one colour) in a class folder."""
    from PIL import Image

    (folder / "images" / "a").mkdir(parents=True)
    Image.new("1", (5000, 5000)).save(folder / "images" / "a" / "big.png")
    return folder / "images"


DATA_BOMBS = {
    "npz expanding": (npz_expanding, "expands from"),
    "npz declaring": (npz_declaring, "declares an array x of shape (1073741824,)"),
    "idx gz expanding": (idx_expanding, "longer than its header says"),
    "idx gz declaring": (idx_declaring, "declares an array of shape (10000, 1000, 1000)"),
    "huge image": (huge_image, "5,000x5,000 pixels"),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", DATA_BOMBS)
def test_a_data_bomb_is_refused_with_bounded_memory(kind: str, tmp_path: Path) -> None:
    make, message = DATA_BOMBS[kind]
    ref = make(tmp_path)
    peak_kb, outcome = refusal_in_a_child("data", str(ref))
    assert outcome.startswith("refused: "), outcome
    assert message in outcome
    assert peak_kb < PEAK_LIMIT_KB, f"refusing cost {peak_kb >> 10} MB"


def test_a_csv_beyond_the_text_limit_is_refused_before_it_is_parsed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pruneviz.data import readers
    from pruneviz.data.readers import load_data
    from pruneviz.errors import DataError

    path = tmp_path / "big.csv"
    path.write_text("a,label\n" + "1,0\n" * 100)
    monkeypatch.setattr(readers, "MAX_CSV_BYTES", 100)
    with pytest.raises(DataError, match=r"408 bytes of CSV text.*save the data as an .npz"):
        load_data(str(path))


def test_data_within_the_limits_is_read_as_before(tmp_path: Path) -> None:
    import numpy as np

    from pruneviz.data.readers import load_data

    path = tmp_path / "fine.npz"
    np.savez_compressed(path, x=np.random.default_rng(0).random((50, 4), dtype=np.float32),
                        y=np.arange(50) % 3)
    assert load_data(str(path)).x.shape == (50, 4)


def test_a_checkpoint_with_optimizer_state_still_fits_the_limits() -> None:
    """Adam keeps two tensors per parameter: such a checkpoint is read as before."""
    model = _model()
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    notes: list[str] = []
    state = read_weights(_torch_bytes(checkpoint), "ckpt.pt", notes=notes,
                         limits=WeightLimits.for_model(model))
    assert set(state) == set(model.state_dict())
    assert notes


def test_weights_of_the_right_model_in_either_format_are_read_within_the_limits() -> None:
    model = _model()
    limits = WeightLimits.for_model(model)
    for data, name in ((_torch_bytes(model.state_dict()), "w.pt"),
                       (save_safetensors(model.state_dict()), "w.safetensors")):
        assert set(read_weights(data, name, limits=limits)) == {"weight", "bias"}


def test_a_safetensors_header_longer_than_its_file_is_refused_without_limits() -> None:
    with pytest.raises(ModelError, match="damaged or truncated safetensors"):
        read_weights(long_header(), "bomb.safetensors")
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})
    fine = struct.pack("<Q", len(header)) + header.encode() + bytes(8)
    assert read_weights(fine, "w.safetensors")["w"].shape == (2,)
