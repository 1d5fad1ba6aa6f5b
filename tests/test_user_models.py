"""The user's own model and weights: loaded safely, refused clearly, and prunable.

Weights files are built here the ways users make them — torch.save of a state dict, of a
checkpoint, of a whole model; safetensors; TorchScript; torch.export — and the hostile
ways: pickles whose loading runs a command. Hostile payloads write a sentinel file when
they run; each test checks first that the payload does run when unpickled the unsafe way,
then that reading the file with pruneviz leaves no sentinel.

The fixture models in tests/fixtures/user_models/ are user files the library has never
seen, loaded by `file.py:factory` reference and taken through the whole engine.
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fixtures.models import assert_bit_identical, snapshot
from safetensors.torch import save as save_safetensors
from safetensors.torch import save_file, save_model
from torch import Tensor, nn

from pruneviz.core.attention import SlimAttention
from pruneviz.core.granularity import Granularity
from pruneviz.core.plan import LayerPlan, Plan
from pruneviz.core.session import PruningSession
from pruneviz.core.slim import max_abs_diff, slim
from pruneviz.data.tasks import Task
from pruneviz.data.tensors import TensorData
from pruneviz.data.user_models import fit_weights, load_factory, load_user_model, read_weights
from pruneviz.data.userfile import UserFileError, load_callable
from pruneviz.errors import ModelError, PrunevizError
from pruneviz.workflows.sensitivity import SensitivityRun
from pruneviz.workflows.workbench import Workbench, build_workbench

USER_MODELS = Path(__file__).parent / "fixtures" / "user_models"
RESIDUAL = f"{USER_MODELS / 'residual_concat.py'}:build"
BROKEN = USER_MODELS / "broken_factories.py"
TOLERANCE = 1e-5  # max |slimmed - masked| / max |masked|
FILTER, CHANNEL = Granularity.FILTER, Granularity.CHANNEL


def ref(file: str, factory: str = "build") -> str:
    return f"{USER_MODELS / file}:{factory}"


def state_of(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def torch_bytes(obj: Any, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


def refused(source: Path | bytes, name: str = "", *, match: str) -> str:
    """read_weights(source) raises a ModelError matching `match`; its message."""
    with pytest.raises(ModelError, match=match) as info:
        read_weights(source, name)
    message = str(info.value)
    assert "Traceback" not in message
    return message


# -- hostile pickles ---------------------------------------------------------------------
class RunsCommand:
    """Unpickling it runs a shell command (os.system)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return os.system, (self.command,)


class EvalsCode:
    """Unpickling it evaluates Python code (builtins.exec)."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return exec, (self.code,)


def hostile_payloads(sentinel: Path) -> dict[str, bytes]:
    """Files whose unpickling creates `sentinel`, in the forms a .pt file can take."""
    command = RunsCommand(f"touch {sentinel}")
    code = EvalsCode(f"open({str(sentinel)!r}, 'w').close()")
    weights = {"fc.weight": torch.ones(2, 2)}
    return {
        "torch.save zip, os.system": torch_bytes({**weights, "x": command}),
        "torch.save legacy, os.system": torch_bytes({**weights, "x": command},
                                                    _use_new_zipfile_serialization=False),
        "torch.save zip, exec": torch_bytes({**weights, "x": code}),
        "raw pickle protocol 2": pickle.dumps(command, protocol=2),
        "raw pickle protocol 5": pickle.dumps({"x": command}, protocol=5),
    }


def unsafe_load(path: Path) -> None:
    """What a careless loader does (in another process): torch.load(weights_only=False)."""
    script = "import sys, torch; torch.load(sys.argv[1], weights_only=False)"
    subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                   check=False, timeout=120)


@pytest.mark.slow
def test_hostile_payloads_really_run_when_unpickled_unsafely(tmp_path: Path) -> None:
    # The sentinel check below proves nothing unless the payloads do run.
    sentinel = tmp_path / "ran"
    for name, payload in hostile_payloads(sentinel).items():
        path = tmp_path / "weights.pt"
        path.write_bytes(payload)
        unsafe_load(path)
        assert sentinel.exists(), name
        sentinel.unlink()


@pytest.mark.parametrize("payload", [
    "torch.save zip, os.system", "torch.save legacy, os.system", "torch.save zip, exec",
    "raw pickle protocol 2", "raw pickle protocol 5",
])
@pytest.mark.parametrize("as_upload", [False, True])
def test_hostile_pickle_is_refused_and_nothing_runs(
    tmp_path: Path, payload: str, as_upload: bool
) -> None:
    sentinel = tmp_path / "ran"
    data = hostile_payloads(sentinel)[payload]
    path = tmp_path / "weights.pth"
    path.write_bytes(data)
    with pytest.raises(ModelError) as info:
        read_weights(data if as_upload else path, "weights.pth")
    assert not sentinel.exists()
    message = str(info.value)
    assert message.startswith("weights.pth")
    assert "nothing in" in message
    if payload.startswith("torch.save") or payload.endswith("protocol 2"):
        called = "builtins.exec" if "exec" in payload else "posix.system"
        assert f"would call {called}" in message
        assert "malicious" in message
    assert "state_dict()" in message


# -- files that hold code: refused before anything is loaded ------------------------------
class Net(nn.Module):
    """A model of the test module itself (pickled by reference, like a user's class)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.fc(x)
        return out


@pytest.fixture
def no_torch_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything calls torch.load."""
    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", boom)


@pytest.mark.parametrize("name", ["model.pt", "model.pth", "scripted.zip", "weights.bin"])
def test_torchscript_archive_is_refused_before_loading(
    tmp_path: Path, name: str, no_torch_load: None
) -> None:
    path = tmp_path / name
    torch.jit.script(Net()).save(str(path))
    message = refused(path, match="TorchScript")
    assert "runs the code" in message
    assert "torch.save(model.state_dict()" in message
    assert "save_file" in message
    refused(path.read_bytes(), name, match="TorchScript")


def exported(tmp_path: Path, name: str) -> Path:
    program = torch.export.export(Net(), (torch.ones(1, 3),))
    path = tmp_path / name
    torch.export.save(program, str(path))
    return path


def test_torch_export_archive_is_refused_by_extension_and_by_content(
    tmp_path: Path, no_torch_load: None
) -> None:
    path = exported(tmp_path, "model.pt2")
    message = refused(path, match=r"torch\.export archive \(\.pt2\)")
    assert "runs the program" in message
    assert "state_dict()" in message
    # Renamed, it is still recognised by its members.
    renamed = path.rename(tmp_path / "model.pt")
    refused(renamed, match="torch.export archive")
    refused(renamed.read_bytes(), "upload.bin", match="torch.export archive")


def test_pt2_extension_is_refused_even_for_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt2"
    torch.save(Net().state_dict(), path)
    refused(path, match="torch.export archive")


# -- whole pickled models -----------------------------------------------------------------
WHOLE_MODEL = "this file holds a whole pickled model object"


@cache
def main_module_model(folder: str) -> Path:
    """A whole model saved by a training script: its class lives in __main__."""
    path = Path(folder) / "whole_main.pt"
    script = (
        "import sys, torch\n"
        "from torch import nn\n"
        "class Classifier(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = nn.Linear(3, 2)\n"
        "torch.save(Classifier(), sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=120)
    return path


def test_whole_model_from_a_script_is_refused(tmp_path: Path) -> None:
    message = refused(main_module_model(str(tmp_path)), match=WHOLE_MODEL)
    assert "__main__.Classifier" in message
    assert "not a state dict" in message
    assert "unpickling can run code" in message
    assert "save `model.state_dict()` instead" in message.replace("Save", "save")


@pytest.mark.parametrize("model", [Net(), nn.Linear(3, 2), nn.Sequential(nn.Linear(3, 2))],
                         ids=["own class", "torch.nn.Linear", "torch.nn.Sequential"])
@pytest.mark.parametrize("legacy", [False, True])
def test_whole_model_is_refused(tmp_path: Path, model: nn.Module, legacy: bool) -> None:
    path = tmp_path / "model.pt"
    torch.save(model, path, _use_new_zipfile_serialization=not legacy)
    message = refused(path, match=WHOLE_MODEL)
    assert "not a state dict" in message
    refused(path.read_bytes(), "model.pt", match=WHOLE_MODEL)


def test_a_user_factory_model_saved_whole_is_refused(tmp_path: Path) -> None:
    # Its class lives in the private module pruneviz imported the user's file as.
    path = tmp_path / "whole.pt"
    torch.save(load_factory(RESIDUAL), path)
    message = refused(path, match=WHOLE_MODEL)
    assert "ResidualConcatNet" in message


# -- damaged files ------------------------------------------------------------------------
def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"")
    message = refused(path, match=r"weights\.safetensors is empty \(0 bytes\)")
    assert "save_file" in message
    refused(b"", "upload.pt", match=r"upload\.pt is empty \(0 bytes\)")


def test_missing_file_and_folder_are_refused(tmp_path: Path) -> None:
    refused(tmp_path / "nope.pt", match="does not exist")
    refused(tmp_path, match="not a file")


@pytest.mark.parametrize("keep", [0.5, 0.9, 12 / 10_000, 5 / 10_000])
def test_truncated_safetensors_is_refused(tmp_path: Path, keep: float) -> None:
    data = save_safetensors(state_of(load_factory(RESIDUAL)))
    cut = data[: max(5, int(len(data) * keep))]
    message = refused(cut, "w.safetensors", match="damaged or truncated safetensors file")
    assert "download it again" in message


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("keep", [0.3, 0.97])
def test_truncated_torch_file_is_refused(keep: float, legacy: bool) -> None:
    data = torch_bytes(state_of(load_factory(RESIDUAL)), _use_new_zipfile_serialization=not legacy)
    message = refused(data[: int(len(data) * keep)], "w.pt", match="damaged or truncated")
    assert "download it again" in message


def test_unrecognised_content_is_refused() -> None:
    message = refused(b"hello, these are not weights", "w.pt",
                      match="neither a safetensors file nor a PyTorch state dict")
    assert "damaged" in message


def test_zip_archives_that_are_no_checkpoint_are_refused(tmp_path: Path) -> None:
    npz = tmp_path / "weights.npz"
    np.savez(npz, w=np.ones(3))
    refused(npz, match="numpy .npz archive")
    other = tmp_path / "other.pt"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("readme.txt", "hello")
    refused(other, match="not one written by torch.save")


# -- what the file holds ------------------------------------------------------------------
def test_non_tensor_entries_are_named() -> None:
    data = torch_bytes({"fc.weight": torch.ones(2, 3), "epoch": 7,
                        "optimizer": {"lr": 0.1}, "note": "best"})
    message = refused(data, "ckpt.pt", match="entries epoch \\(int\\), optimizer \\(dict\\)")
    assert "note (str)" in message
    assert "fc.weight" not in message
    assert "'state_dict'" in message


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict", "model"])
def test_checkpoint_dict_gives_its_state_dict_and_says_which_key(key: str) -> None:
    weights = state_of(load_factory(RESIDUAL))
    data = torch_bytes({key: weights, "epoch": 3, "optimizer": {"state": {}}})
    notes: list[str] = []
    state = read_weights(data, "ckpt.pt", notes=notes)
    assert_bit_identical(weights, state)
    assert len(notes) == 1
    assert f"{key!r} entry" in notes[0]
    assert "epoch" in notes[0]


def test_checkpoint_entry_that_is_not_a_state_dict_is_named() -> None:
    data = torch_bytes({"state_dict": {"fc.weight": torch.ones(2), "step": 4}, "epoch": 1})
    refused(data, "ckpt.pt", match="'state_dict' entry is not a state dict: its entries step")


@pytest.mark.parametrize("obj", [torch.ones(3), [torch.ones(3)], {}],
                         ids=["tensor", "list", "empty dict"])
def test_a_file_without_a_dict_of_tensors_is_refused(obj: Any) -> None:
    refused(torch_bytes(obj), "w.pt", match="holds (a Tensor|a list|an empty dict)")


def test_numpy_values_are_refused_without_unpickling() -> None:
    data = torch_bytes({"fc.weight": torch.ones(2), "best": np.float64(0.9)})
    refused(data, "w.pt", match="numpy values")


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_non_finite_values_are_named(tmp_path: Path, fmt: str) -> None:
    weights = state_of(load_factory(RESIDUAL))
    weights["stem.weight"][0, 0, 0, 0] = float("nan")
    weights["head.bias"][3] = float("-inf")
    path = tmp_path / f"w.{fmt}"
    if fmt == "pt":
        torch.save(weights, path)
    else:
        save_file(weights, path)
    message = refused(path, match="NaN or infinite values")
    assert "stem.weight (1 NaN, 0 inf)" in message
    assert "head.bias (0 NaN, 1 inf)" in message
    assert "retrain" in message


def test_sparse_tensors_are_refused() -> None:
    data = torch_bytes({"w": torch.eye(3).to_sparse()})
    refused(data, "w.pt", match="not dense")


# -- round trips --------------------------------------------------------------------------
def scrambled(model: nn.Module) -> nn.Module:
    """`model` with every tensor of its state dict changed (weights and buffers)."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.copy_(tensor * 2 + 1 if tensor.is_floating_point() else tensor + 5)
    return model


@pytest.mark.parametrize("fmt", ["pt", "pth-legacy", "safetensors", "checkpoint"])
@pytest.mark.parametrize("as_upload", [False, True])
def test_state_dict_round_trips_bit_exactly(tmp_path: Path, fmt: str, as_upload: bool) -> None:
    original = load_factory(RESIDUAL)
    expected = snapshot(original)
    path = tmp_path / f"weights.{'safetensors' if fmt == 'safetensors' else 'pt'}"
    if fmt == "safetensors":
        save_file(original.state_dict(), path)
    elif fmt == "checkpoint":
        torch.save({"model_state_dict": original.state_dict(), "epoch": 9}, path)
    else:
        torch.save(original.state_dict(), path,
                   _use_new_zipfile_serialization=fmt != "pth-legacy")
    source: Path | bytes = path.read_bytes() if as_upload else path
    model = load_user_model(RESIDUAL, source, path.name)
    assert_bit_identical(expected, snapshot(model))
    assert not model.training
    # num_batches_tracked and the running statistics came from the file, too.
    other = scrambled(load_factory(RESIDUAL))
    fit_weights(other, read_weights(source, path.name), path.name)
    assert_bit_identical(expected, snapshot(other))
    assert int(other.stem_bn.num_batches_tracked) == 100


def assert_same_tensors(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    """Bit-identical, in any order (safetensors stores the names sorted)."""
    assert_bit_identical(dict(sorted(a.items())), dict(sorted(b.items())))


def test_content_decides_the_format_not_the_extension() -> None:
    weights = state_of(load_factory(RESIDUAL))
    assert_same_tensors(weights, read_weights(save_safetensors(weights), "weights.pt"))
    assert_same_tensors(weights, read_weights(torch_bytes(weights), "weights.safetensors"))
    assert_same_tensors(weights, read_weights(torch_bytes(weights), "checkpoint.ckpt"))


def test_safetensors_whose_header_length_looks_like_a_pickle_is_safetensors() -> None:
    # The first byte of a safetensors file is its header length's lowest byte: 0x80,
    # the pickle protocol opcode, for some names.
    for length in range(1, 300):
        weights = {"w" * length: torch.arange(3.0)}
        data = save_safetensors(weights)
        if data[0] == 0x80:
            break
    assert data[0] == 0x80
    assert_same_tensors(weights, read_weights(data, "w.safetensors"))


def test_ordered_dict_from_torch_save_is_a_state_dict() -> None:
    model = load_factory(RESIDUAL)
    state = read_weights(torch_bytes(model.state_dict()), "w.pt")
    assert isinstance(model.state_dict(), OrderedDict)
    assert list(state) == list(model.state_dict())


def test_without_weights_the_factory_weights_are_used() -> None:
    assert_bit_identical(snapshot(load_factory(RESIDUAL)),
                         snapshot(load_user_model(RESIDUAL, None)))


# -- weights that do not fit the model ----------------------------------------------------
def fit_refused(model: nn.Module, state: dict[str, Tensor], match: str) -> str:
    before = snapshot(model)
    with pytest.raises(ModelError, match=match) as info:
        fit_weights(model, state, "w.safetensors")
    assert_bit_identical(before, snapshot(model))  # nothing was loaded
    return str(info.value)


def test_missing_and_unexpected_keys_are_listed() -> None:
    model = load_factory(RESIDUAL)
    state = state_of(model)
    del state["block1.bn.running_var"]
    del state["head.bias"]
    state["head.scale"] = torch.ones(10)
    message = fit_refused(model, state, "do not fit the model")
    assert "2 tensors the model has are missing from the file: block1.bn.running_var, " \
           "head.bias" in message
    assert "1 tensors in the file are not in the model: head.scale" in message
    assert message.startswith("the weights in w.safetensors")


def test_num_batches_tracked_may_be_left_out() -> None:
    model = scrambled(load_factory(RESIDUAL))
    counts = {k: v.clone() for k, v in model.state_dict().items()
              if k.endswith("num_batches_tracked")}
    assert counts
    state = {k: v for k, v in state_of(load_factory(RESIDUAL)).items() if k not in counts}
    fit_weights(model, state, "converted.safetensors")
    assert_bit_identical(state, {k: v for k, v in snapshot(model).items() if k in state})
    for name, count in counts.items():  # the model's own counts are kept
        assert torch.equal(model.state_dict()[name], count)


def test_long_key_lists_are_cut_with_a_count() -> None:
    model = load_factory(RESIDUAL)
    total = len([k for k in model.state_dict() if not k.endswith("num_batches_tracked")])
    message = fit_refused(model, {"x": torch.ones(1)}, "missing")
    assert f"{total} tensors the model has are missing" in message
    assert f"and {total - 10} more" in message


def test_wrapper_prefix_is_explained() -> None:
    model = load_factory(RESIDUAL)
    state = {f"module.{k}": v for k, v in state_of(model).items()}
    fit_refused(model, state, "every name in the file starts with 'module.'")


def test_shape_mismatches_name_both_shapes() -> None:
    model = load_factory(RESIDUAL)
    wide = load_factory(ref("residual_concat.py", "build_wide"))
    message = fit_refused(model, state_of(wide), "other shapes")
    assert "stem.weight (file (32, 3, 3, 3), model (16, 3, 3, 3))" in message
    assert "block1.wide.weight (file (16, 32, 3, 3), model (8, 16, 3, 3))" in message
    assert "26 tensors have other shapes" in message
    assert "and 16 more" in message


def test_floating_dtypes_convert_and_kinds_do_not() -> None:
    model = load_factory(RESIDUAL)
    doubled = {k: v.double() if v.is_floating_point() else v for k, v in state_of(model).items()}
    fit_weights(model, doubled, "w.pt")
    assert model.stem.weight.dtype == torch.float32
    assert torch.equal(model.stem.weight, doubled["stem.weight"].float())
    halved = {k: v.half() if v.is_floating_point() else v for k, v in state_of(model).items()}
    fit_weights(model, halved, "w.pt")
    assert model.stem.weight.dtype == torch.float32
    state = state_of(model)
    state["stem_bn.num_batches_tracked"] = torch.tensor(100.0)
    state["head.weight"] = state["head.weight"].to(torch.int64)
    message = fit_refused(model, state, "another kind of value")
    assert "stem_bn.num_batches_tracked (file torch.float32, model torch.int64)" in message
    assert "head.weight (file torch.int64, model torch.float32)" in message


def test_non_finite_state_is_refused_by_fit_weights() -> None:
    model = load_factory(RESIDUAL)
    state = state_of(model)
    state["down.bias"][0] = float("nan")
    fit_refused(model, state, r"NaN or infinite values in down\.bias \(1 NaN, 0 inf\)")


class Tied(nn.Module):
    """An embedding whose weight the classifier shares."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(7, 4)
        self.head = nn.Linear(4, 7, bias=False)
        self.head.weight = self.embed.weight


def test_tied_weights_saved_once_are_filled_in(tmp_path: Path) -> None:
    torch.manual_seed(3)
    original = Tied()
    path = tmp_path / "tied.safetensors"
    save_model(original, str(path))  # keeps one of the two names
    state = read_weights(path, path.name)
    assert len(state) == 1
    model = Tied()
    fit_weights(model, state, path.name)
    assert torch.equal(model.embed.weight, original.embed.weight)
    assert model.head.weight is model.embed.weight


# -- the factory --------------------------------------------------------------------------
def test_factory_that_raises_is_named() -> None:
    with pytest.raises(UserFileError, match="failed: RuntimeError: layer sizes do not add up"
                       ) as info:
        load_factory(f"{BROKEN}:raises")
    assert f"{BROKEN}:raises" in str(info.value)
    assert isinstance(info.value, PrunevizError)


def test_factory_returning_no_module_is_refused() -> None:
    with pytest.raises(ModelError, match="returned a value of type int, not a torch model"):
        load_factory(f"{BROKEN}:returns_int")
    with pytest.raises(ModelError, match=r"returned the class Small itself.*return Small\(\)"):
        load_user_model(f"{BROKEN}:returns_class", None)


def test_factory_with_non_finite_weights_is_refused() -> None:
    with pytest.raises(ModelError, match="NaN or infinite values") as info:
        load_factory(f"{BROKEN}:nan_weights")
    assert "fc.weight (1 NaN, 0 inf)" in str(info.value)
    assert "bn.running_var (0 NaN, 1 inf)" in str(info.value)


def test_weights_replace_a_factory_s_uninitialised_values() -> None:
    good = load_factory(f"{BROKEN}:small")
    model = load_user_model(f"{BROKEN}:uninitialised", torch_bytes(good.state_dict()), "w.pt")
    assert_bit_identical(snapshot(good), snapshot(model))


def test_factory_model_comes_in_eval_mode() -> None:
    assert not load_factory(f"{BROKEN}:small").training
    assert not load_user_model(f"{BROKEN}:small", None).training


def test_missing_factory_and_file_are_user_file_errors(tmp_path: Path) -> None:
    with pytest.raises(UserFileError, match="has no function 'nope'"):
        load_factory(f"{BROKEN}:nope")
    with pytest.raises(UserFileError, match="does not exist"):
        load_factory(f"{tmp_path / 'missing.py'}:build")


# -- the fixture models through the engine ------------------------------------------------
FIXTURES = ("residual_concat.py", "gru_model.py", "embed_transformer.py")


def fixture_data(file: str, samples: int = 48, seed: int = 2) -> TensorData:
    x, y = load_callable(ref(file, "sample_data"), "data function")(samples, seed)
    return TensorData(x, y, Task.CLASSIFICATION, file)


def fixture_bench(file: str, factory: str = "build") -> Workbench:
    model = load_user_model(ref(file, factory), None)
    data = fixture_data(file)
    return build_workbench(file, model, data.x[:4], data, fixture_data(file, 64, seed=5),
                           latency_batch_size=8)


def grouped_plan(session: PruningSession, sparsity: float, granularity: Granularity,
                 criterion: str = "l1") -> Plan:
    """The same entry on every layer whose channels at `granularity` are a coupled
    group that can be removed exactly (the classifier's outputs cannot; a width under a
    LayerNorm slims to a model of its own: tests/test_width.py) and that `criterion`
    can score (activation criteria cannot score attention heads or GRU units)."""
    entry = LayerPlan(granularity, criterion, sparsity=sparsity)
    return session.stamp(Plan({
        n: entry for n in session.layer_names
        if (group := session.group_of(n, granularity)) is not None and not group.unsupported
        and not group.shared_norms
        and not (granularity is FILTER and n in session.output_layers)
        and session.unsupported(n, granularity, criterion) is None
    }))


def assert_slims_exactly(session: PruningSession, x: Tensor) -> nn.Module:
    result = slim(session)
    with torch.inference_mode():
        scale = float(session.model(x).abs().max())
    assert max_abs_diff(session.model, result.model, x) <= TOLERANCE * scale
    assert result.params < sum(p.numel() for p in session.model.parameters())
    return result.model


@pytest.mark.parametrize("file", FIXTURES)
def test_fixture_models_are_small_and_deterministic(file: str) -> None:
    a, b = load_factory(ref(file)), load_factory(ref(file))
    assert_bit_identical(snapshot(a), snapshot(b))
    assert sum(p.numel() for p in a.parameters()) < 50_000


@pytest.mark.parametrize("file", FIXTURES)
def test_fixture_model_weights_round_trip_through_a_file(tmp_path: Path, file: str) -> None:
    original = load_factory(ref(file))
    path = tmp_path / "w.safetensors"
    save_file(original.state_dict(), path)
    model = load_user_model(ref(file), path)
    assert_bit_identical(snapshot(original), snapshot(model))


@pytest.mark.parametrize("file", FIXTURES)
def test_unstructured_plan_on_a_user_model(file: str) -> None:
    bench = fixture_bench(file)
    session = bench.session
    plan, skipped = session.uniform_plan(0.5, "unstructured", "l1")
    assert not skipped
    session.apply(plan)
    for result in session.results():
        assert result.sparsity == pytest.approx(0.5, abs=0.02)
    report = bench.meter.report()
    assert report.sparsity > 0.3
    for criterion in ("taylor", "random"):  # taylor runs the (int64 for tokens) data
        plan, skipped = session.uniform_plan(0.3, "unstructured", criterion)
        assert not skipped
        session.apply(plan)


@pytest.mark.parametrize("criterion", ["l1", "taylor", "activation", "fpgm"])
@pytest.mark.parametrize("file", FIXTURES)
def test_filter_plan_on_a_user_model_slims_to_the_masked_function(
    file: str, criterion: str
) -> None:
    bench = fixture_bench(file)
    session = bench.session
    plan = grouped_plan(session, 0.5, FILTER, criterion)
    assert plan.layers
    session.apply(plan)
    assert session.pruned_units()
    model = assert_slims_exactly(session, fixture_data(file, 16, seed=7).x)
    with torch.inference_mode():
        assert model(fixture_data(file, 3, seed=8).x).shape[0] == 3


@pytest.mark.parametrize("file", FIXTURES)
def test_channel_plan_on_a_user_model_slims_to_the_masked_function(file: str) -> None:
    session = fixture_bench(file).session
    session.apply(grouped_plan(session, 0.4, CHANNEL))
    assert session.pruned_units()
    assert_slims_exactly(session, fixture_data(file, 16, seed=7).x)


def test_residual_concat_couples_the_stem_with_both_branches_of_the_sum() -> None:
    session = fixture_bench("residual_concat.py").session
    assert not session.graph_note
    # stem's channels are added to cat([wide, depthwise]): its first half goes with
    # block1.wide's filters, its second half with the depthwise conv's.
    wide, depthwise = session.group_of("block1.wide"), session.group_of("block1.depthwise")
    assert wide is not None
    assert depthwise is not None
    assert wide.id != depthwise.id
    assert {"stem", "block1.point", "down"} <= set(wide.layers) & set(depthwise.layers)
    session.apply(session.stamp(Plan({"block1.depthwise": LayerPlan(FILTER, "l2",
                                                                    sparsity=0.5)})))
    model: Any = assert_slims_exactly(session, fixture_data("residual_concat.py", 16).x)
    assert model.block1.depthwise.out_channels == model.block1.depthwise.groups == 4
    assert model.stem.out_channels == model.block1.bn.num_features == 12
    assert model.block1.wide.out_channels == 8


def test_gru_hidden_units_and_the_projection_before_it_are_coupled() -> None:
    session = fixture_bench("gru_model.py").session
    assert not session.graph_note
    assert session.coupled_with("project") == ["project", "gru.weight_ih_l0"]
    group = session.group_of("gru.weight_hh_l0")
    assert group is not None
    assert group.unit == "hidden unit"
    session.apply(session.stamp(Plan({
        "project": LayerPlan(FILTER, "l1", sparsity=0.25),
        "gru.weight_hh_l0": LayerPlan(FILTER, "l2", sparsity=0.5),
    })))
    model: Any = assert_slims_exactly(session, fixture_data("gru_model.py", 16).x)
    assert (model.gru.input_size, model.gru.hidden_size) == (9, 12)
    assert model.project.out_features == 9
    assert model.fc.in_features == 12


def test_gru_final_hidden_state_is_coupled_like_its_outputs() -> None:
    # `_, hidden = gru(x)`; fc(hidden[-1]): the hidden state carries the same units.
    session = fixture_bench("gru_model.py", "build_final_state").session
    assert not session.graph_note
    assert session.coupled_with("gru.weight_ih_l0") == [
        "gru.weight_ih_l0", "gru.weight_hh_l0", "fc"]
    session.apply(grouped_plan(session, 0.5, FILTER))
    model: Any = assert_slims_exactly(session, fixture_data("gru_model.py", 16).x)
    assert (model.gru.input_size, model.gru.hidden_size) == (6, 12)


def test_gru_hidden_units_under_a_layer_norm_slim_to_a_model_of_their_own() -> None:
    # LayerNorm normalises the hidden units together: a masked unit still counts in its
    # statistics, a removed one does not. The units are prunable, and slimming says the
    # slimmed model differs from the masked one instead of claiming they match.
    session = fixture_bench("gru_model.py", "build_normed").session
    group = session.group_of("gru.weight_hh_l0")
    assert group is not None
    assert group.unsupported is None
    assert group.shared_norms == ("norm",)
    session.apply(grouped_plan(session, 0.5, FILTER))  # the projection and fc: exact
    assert session.pruned_units()
    assert group.id not in session.pruned_units()
    model: Any = assert_slims_exactly(session, fixture_data("gru_model.py", 16).x)
    assert model.gru.hidden_size == 24
    session.apply(session.stamp(Plan({
        "gru.weight_hh_l0": LayerPlan(FILTER, "l1", sparsity=0.25)})))
    assert any("normalise all its channels together" in note for note in session.notes)
    result = slim(session)
    assert result.model.gru.hidden_size == 18
    assert result.differs == (
        "norm normalises over all 24 channels; after removal its statistics use 18",)


def test_transformer_heads_are_prunable_structures() -> None:
    bench = fixture_bench("embed_transformer.py")
    session = bench.session
    assert bench.eval_data.x.dtype == torch.int64
    heads = [g for g in session.groups if g.unit == "head"]
    assert len(heads) == 1
    assert (heads[0].size, heads[0].unsupported) == (4, None)
    assert heads[0].layers == ["encoder.self_attn", "encoder.self_attn.out_proj"]
    # The residual stream: the embeddings, the LayerNorms and every writer and reader.
    stream = session.group_of("encoder.linear2")
    assert stream is not None
    assert stream.unsupported is None
    assert {("tokens", "embed"), ("positions", "param"), ("encoder.self_attn", "width"),
            ("encoder.self_attn.out_proj", "out")} <= {(m.module, m.kind)
                                                       for m in stream.members}
    assert set(stream.shared_norms) == {"encoder.norm1", "encoder.norm2", "norm"}
    session.apply(session.stamp(Plan({
        "encoder.self_attn": LayerPlan(FILTER, "l2", sparsity=0.5),
        "encoder.linear1": LayerPlan(FILTER, "taylor", sparsity=0.25),
    })))
    assert session.result("encoder.self_attn").structures_pruned == 2
    model: Any = assert_slims_exactly(session, fixture_data("embed_transformer.py", 16).x)
    attention = model.encoder.self_attn
    assert isinstance(attention, SlimAttention)
    assert (attention.num_heads, attention.head_dim) == (2, 6)
    assert model.encoder.linear1.out_features == 36
    report = bench.meter.report()
    assert report.sparsity > 0
    assert "encoder" in [block.name for block in session.blocks()]


def test_transformer_width_slims_and_names_its_layer_norms() -> None:
    session = fixture_bench("embed_transformer.py").session
    session.apply(session.stamp(Plan({
        "encoder.linear2": LayerPlan(FILTER, "l1", sparsity=0.25)})))
    result = slim(session)
    model: Any = result.model
    assert model.tokens.embedding_dim == 18
    assert model.positions.shape == (1, 12, 18)
    assert isinstance(model.encoder.self_attn, SlimAttention)
    assert model.encoder.self_attn.embed_dim == 18
    assert model.norm.normalized_shape == (18,)
    assert {r.split(" ")[0] for r in result.differs} == {"encoder.norm1", "encoder.norm2",
                                                         "norm"}
    with torch.inference_mode():
        out = model(fixture_data("embed_transformer.py", 16).x)
    assert out.shape == (16, 5)
    assert torch.isfinite(out).all()


def test_sensitivity_runs_on_token_inputs() -> None:
    bench = fixture_bench("embed_transformer.py")
    run = SensitivityRun(bench.session, bench.eval_data, criterion="taylor",
                         granularity="filter", levels=(0.0, 0.5))
    points = list(run.points())
    assert points
    units = {item.unit for item in run.items}
    assert "head" in units
