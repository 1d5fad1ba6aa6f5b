"""What a user sees when something goes wrong in the CLI or the app beyond bad values:
Ctrl-C, a plan nested or sized to break the parser or the message, a full disk, the
mode of written files, and how checkpoint weights were read."""

from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pruneviz import cli
from pruneviz.core.plan import LayerPlan, Plan
from pruneviz.errors import PlanError, PrunevizError, shortened
from pruneviz.output import model_files

ROOT = Path(__file__).resolve().parents[1]


def test_a_plan_nested_a_hundred_thousand_levels_deep_is_one_clear_line() -> None:
    with pytest.raises(PlanError, match="nested too deeply"):
        Plan.from_json("[" * 100_000 + "]" * 100_000)


def test_a_plan_naming_600000_unknown_layers_gives_a_short_message() -> None:
    plan = Plan({f"layer{i}": LayerPlan("unstructured", "l1", sparsity=0.5)
                 for i in range(600_000)})
    with pytest.raises(PlanError) as info:
        plan.validate_for(["fc1", "fc2"])
    message = str(info.value)
    assert len(message) < 1_000
    assert "and 599,988 more" in message


def test_the_cli_quotes_at_most_a_thousand_characters_of_any_error(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def huge(args: object) -> int:
        raise PrunevizError("x" * 5_000_000)

    monkeypatch.setitem(cli.COMMANDS, "samples", huge)
    monkeypatch.delenv("PRUNEVIZ_DEBUG", raising=False)
    assert cli.main(["samples"]) == 2
    err = capsys.readouterr().err
    assert len(err) < 1_200
    assert "(4,999,000 more characters)" in err
    assert shortened("short") == "short"


def test_ctrl_c_in_any_verb_ends_with_one_line_and_exit_130(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "samples", interrupted)
    assert cli.main(["samples"]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("pruneviz: stopped by Ctrl-C before samples finished")
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1


@pytest.mark.slow
def test_ctrl_c_during_finetune_writes_the_best_weights_so_far_and_exits_130(
        tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pruneviz", "finetune", "sample:digits_mlp", "--sparsity",
         "0.5", "--epochs", "200", "--out", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    for line in proc.stderr:  # the first epoch's line: training is under way
        if line.startswith("finetune: epoch") or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    stdout, rest = proc.communicate(timeout=120)
    assert proc.returncode == 130, rest
    assert "Traceback" not in rest
    assert "stopped by Ctrl-C at step" in rest
    assert "the best weights so far" in rest
    for name in ("weights.safetensors", "history.json", "report.json"):
        assert (out / name).is_file(), name
    assert "cancelled at step" in stdout


def test_a_full_disk_names_the_folder_and_the_space_needed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Full(io.BytesIO):
        def write(self, data: object) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(model_files.os, "fdopen", lambda fd, mode: Full())
    with pytest.raises(OSError, match=rf"No space left in {tmp_path} to write w.bin: "
                       r"it needs 1,000 bytes and [\d,]+ are free"):
        model_files.write_atomic(tmp_path / "w.bin", bytes(1000))
    assert list(tmp_path.iterdir()) == []  # no stray temporary file


def test_written_files_get_the_users_usual_mode(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        model_files.write_atomic(tmp_path / "a.bin", b"x")
        os.umask(0o027)
        model_files.write_atomic(tmp_path / "b.bin", b"x")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o640


def test_the_cli_says_which_entry_of_a_checkpoint_it_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pruneviz.workflows.workbench import open_workbench

    state = open_workbench("sample:digits_mlp").pristine.state_dict()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": state, "epoch": torch.tensor(3)}, path)
    monkeypatch.delenv("PRUNEVIZ_DEBUG", raising=False)
    assert cli.main(["evaluate", "sample:digits_mlp", "--weights", str(path)]) == 0
    err = capsys.readouterr().err
    assert (f"note: {path} is a checkpoint: its weights were read from the 'model' entry "
            "(the others were ignored: epoch)") in err


HANGS = '''
import time
from torch import nn

def build():
    time.sleep(3600)  # waits for something that never comes
    return nn.Linear(4, 3)

def data(split="test"):
    time.sleep(3600)
'''


@pytest.fixture
def short_timeout() -> object:
    from pruneviz.data import userfile

    before = userfile.LOAD_TIMEOUT_S
    userfile.set_load_timeout(0.5)
    yield
    userfile.set_load_timeout(before)


@pytest.mark.usefixtures("short_timeout")
def test_a_factory_that_never_returns_is_named_after_the_time_limit(tmp_path: Path) -> None:
    from pruneviz.data.user_models import load_factory
    from pruneviz.data.userfile import UserFileError

    path = tmp_path / "hangs.py"
    path.write_text(HANGS)
    start = time.monotonic()
    with pytest.raises(UserFileError, match=rf"the model factory {path}:build did not "
                       r"return within 0.5 s.*--load-timeout"):
        load_factory(f"{path}:build")
    assert time.monotonic() - start < 10


@pytest.mark.usefixtures("short_timeout")
def test_a_data_function_or_an_import_that_never_returns_is_named(tmp_path: Path) -> None:
    from pruneviz.data.readers import load_data
    from pruneviz.data.userfile import UserFileError, load_callable

    path = tmp_path / "hangs.py"
    path.write_text(HANGS)
    with pytest.raises(UserFileError, match=rf"the data function {path}:data did not return"):
        load_data(f"{path}:data")
    stuck = tmp_path / "stuck.py"
    stuck.write_text("import time\ntime.sleep(3600)\ndef build(): pass\n")
    with pytest.raises(UserFileError, match=rf"importing {stuck} did not return within 0.5 s"):
        load_callable(f"{stuck}:build", "model factory")


def test_the_cli_takes_a_load_timeout(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from pruneviz.data import userfile

    monkeypatch.setattr(userfile, "LOAD_TIMEOUT_S", userfile.LOAD_TIMEOUT_S)
    monkeypatch.delenv("PRUNEVIZ_DEBUG", raising=False)
    path = tmp_path / "hangs.py"
    path.write_text(HANGS)
    code = cli.main(["evaluate", f"{path}:build", "--data", "x.npz", "--load-timeout", "0.5"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{path}:build did not return within 0.5 s" in err
