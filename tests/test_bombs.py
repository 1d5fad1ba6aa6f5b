"""Hostile weight files are refused before they cost memory: a compressed member that
expands, a file declaring far more data than the model has, a safetensors header longer
than its file, many tiny tensors. Each is read in a child process whose peak resident
memory is measured: the refusal costs a few megabytes, where reading would cost the
hundreds the file declares."""

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
    import resource, sys, torch
    from torch import nn
    from pruneviz.data.user_models import WeightLimits, read_weights
    from pruneviz.errors import ModelError
    model = nn.Linear(4, 3)
    data = open(sys.argv[1], "rb").read()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        read_weights(data, sys.argv[2], limits=WeightLimits.for_model(model))
        outcome = "read"
    except ModelError as exc:
        outcome = "refused: " + str(exc)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(after - before)
    print(outcome)
""")


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
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), name], cwd=root,
                          capture_output=True, text=True, timeout=120, check=True)
    peak_kb, outcome = done.stdout.strip().split("\n", 1)
    assert outcome.startswith("refused: "), outcome
    assert message in outcome
    assert int(peak_kb) < PEAK_LIMIT_KB, f"refusing cost {int(peak_kb) >> 10} MB"


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
