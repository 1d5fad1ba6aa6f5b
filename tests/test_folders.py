"""Output folders: pruneviz writes a manifest of what it wrote, refuses folders holding
files it did not write (unless --force), never writes over an input of the run, and
removes only what an earlier run of its own wrote."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pruneviz import cli
from pruneviz.output.folders import MANIFEST, foreign_files, read_manifest, stray_temporaries


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli.main(list(args))
    return code, capsys.readouterr().err


@pytest.fixture(autouse=True)
def no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRUNEVIZ_DEBUG", raising=False)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_prune_writes_a_manifest_of_every_file_it_wrote(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, err = run(capsys, "prune", "sample:digits_mlp", "--sparsity", "0.5", "--out",
                    str(out))
    assert code == 0, err
    listed = read_manifest(out)
    assert set(listed) == {"weights.safetensors", "weights.sparse.safetensors", "plan.json",
                           "report.json"}
    for name, entry in listed.items():
        assert entry == {"bytes": (out / name).stat().st_size, "sha256": sha(out / name)}
    assert foreign_files(out) == []
    code, err = run(capsys, "prune", "sample:digits_mlp", "--sparsity", "0.6", "--out",
                    str(out))
    assert code == 0, err  # its own earlier files: replaced


def test_a_folder_holding_other_files_is_refused_unless_forced_and_they_stay(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("mine")
    (out / "base_weights.safetensors").write_bytes(b"not pruneviz's")
    code, err = run(capsys, "export", "sample:digits_cnn", "--sparsity", "0.5",
                    "--granularity", "filter", "--out", str(out))
    assert code == 2
    assert "holds files pruneviz did not write there (base_weights.safetensors, " \
           "thesis.tex)" in err
    assert sorted(p.name for p in out.iterdir()) == ["base_weights.safetensors", "thesis.tex"]
    code, err = run(capsys, "export", "sample:digits_cnn", "--sparsity", "0.5",
                    "--granularity", "filter", "--out", str(out), "--force")
    assert code == 0, err
    assert (out / "thesis.tex").read_text() == "mine"
    assert (out / "base_weights.safetensors").read_bytes() == b"not pruneviz's"
    assert "thesis.tex" not in read_manifest(out)


def test_a_plan_inside_the_output_folder_is_never_rewritten(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, err = run(capsys, "prune", "sample:digits_mlp", "--sparsity", "0.5", "--out",
                    str(out))
    assert code == 0, err
    plan = out / "plan.json"
    before = sha(plan)
    for force in ([], ["--force"]):
        code, err = run(capsys, "prune", "sample:digits_mlp", "--plan", str(plan), "--out",
                        str(out), *force)
        assert code == 2
        assert "it is one of this run's inputs" in err
        assert sha(plan) == before


def test_a_re_export_removes_only_the_optional_files_its_own_manifest_lists(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, err = run(capsys, "export", "sample:digits_cnn", "--sparsity", "0.5",
                    "--granularity", "filter", "--out", str(out))
    assert code == 0, err
    assert (out / "slim" / "slim.safetensors").is_file()
    code, err = run(capsys, "export", "sample:digits_cnn", "--sparsity", "0.5", "--out",
                    str(out))  # a complete export is there: refused, untouched
    assert code == 2
    assert "holds a complete export already" in err
    assert (out / "slim" / "slim.safetensors").is_file()
    code, err = run(capsys, "export", "sample:digits_cnn", "--sparsity", "0.5", "--out",
                    str(out), "--force")  # unstructured: no slimmed model any more
    assert code == 0, err
    assert not (out / "slim").exists()
    manifest = json.loads((out / MANIFEST).read_text())
    assert all(entry["sha256"] for entry in manifest["files"].values())  # complete


def test_an_export_clears_the_temporary_files_an_interrupted_one_left(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, err = run(capsys, "export", "sample:digits_cnn", "--sparsity", "0.5",
                    "--granularity", "filter", "--out", str(out))
    assert code == 0, err
    # what a kill between writing a file and renaming it into place leaves
    strays = [out / ".weights.safetensors.k3j2x9.tmp", out / ".pruneviz-probe.a1b2.tmp",
              out / "slim" / ".slim.safetensors.zz81.tmp", out / "slim" / ".slim.q7.tmp.pt2"]
    for stray in strays:
        stray.write_bytes(b"half a file")
    mine = [out / ".mine.tmp", out / "slim" / ".notes.txt"]  # hidden, but not pruneviz's
    for path in mine:
        path.write_text("mine")
    assert stray_temporaries(out, ["weights.safetensors", "slim/slim.safetensors",
                                   "slim/slim.pt2"]) == sorted(strays)
    code, err = run(capsys, "export", "sample:digits_cnn", "--sparsity", "0.5",
                    "--granularity", "filter", "--out", str(out), "--force")
    assert code == 0, err
    assert not any(stray.exists() for stray in strays)
    assert all(path.read_text() == "mine" for path in mine)


def test_finetune_refuses_a_foreign_folder_before_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "data.csv").write_text("1,2")
    code, err = run(capsys, "finetune", "sample:digits_mlp", "--sparsity", "0.5",
                    "--epochs", "50", "--out", str(out))
    assert code == 2
    assert "holds files pruneviz did not write there (data.csv)" in err
    assert "finetune: epoch" not in err
