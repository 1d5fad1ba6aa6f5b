"""Data uploaded in the browser (pruneviz.data.uploads): every form the CLI reads from a
file or folder (npz, CSV, a zip of an image folder or of IDX files) gives the same data
as the CLI; hostile zips are refused before anything is written outside their folder;
identical data has the same digest; a model that does not fit says what it takes."""

from __future__ import annotations

import gzip
import io
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pruneviz.data import idx, uploads
from pruneviz.data.readers import load_data
from pruneviz.data.tasks import Task
from pruneviz.data.uploads import data_digest, fit_upload, preview, read_upload
from pruneviz.errors import DataError, ModelError


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def zip_bytes(files: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def idx_files(prefix: str, n: int = 12, seed: int = 0, *, gz: bool = False
              ) -> tuple[dict[str, bytes], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    files = {}
    for name, array in ((f"{prefix}-images-idx3-ubyte", images),
                        (f"{prefix}-labels-idx1-ubyte", labels)):
        content = idx_bytes(array)
        files[f"{name}.gz" if gz else name] = gzip.compress(content, mtime=0) if gz else content
    return files, images, labels


# --- every form -------------------------------------------------------------------------


def test_npz_upload_reads_like_the_cli(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((30, 1, 8, 8)).astype(np.float32)
    y = np.arange(30) % 3
    content = npz_bytes(x=x, y=y)
    (tmp_path / "eval.npz").write_bytes(content)
    upload = read_upload("eval.npz", content, split="evaluation")
    cli = load_data(str(tmp_path / "eval.npz"))
    assert upload.name == "eval.npz"
    assert upload.split == "evaluation"
    assert upload.data.name == "eval.npz"
    assert torch.equal(upload.data.x, cli.x)
    assert torch.equal(upload.data.y, cli.y)
    assert upload.data.task is Task.CLASSIFICATION
    assert upload.digest == data_digest(cli)


def test_a_browser_path_in_the_name_is_cut_to_the_file_name() -> None:
    content = npz_bytes(x=np.zeros((4, 3), np.float32), y=np.arange(4))
    assert read_upload("C:\\Users\\me\\eval.npz", content, split="training").name == "eval.npz"


def test_a_name_like_another_data_form_is_only_a_file_name() -> None:
    content = npz_bytes(x=np.zeros((4, 3), np.float32), y=np.arange(4))
    upload = read_upload("mnist:my data.npz", content, split="evaluation")
    assert upload.name == "mnist:my data.npz"
    assert upload.data.name == "mnist:my data.npz"
    assert len(upload.data) == 4


def test_csv_upload_with_a_label_column() -> None:
    text = "a,b,kind\n0.5,1.0,1\n0.25,2.0,0\n1.5,3.0,2\n"
    upload = read_upload("t.csv", text.encode(), split="training", label_column="kind")
    assert upload.data.x.tolist() == [[0.5, 1.0], [0.25, 2.0], [1.5, 3.0]]
    assert upload.data.y.tolist() == [1, 0, 2]
    with pytest.raises(DataError, match=r"t.csv has no column 'nope'"):
        read_upload("t.csv", text.encode(), split="training", label_column="nope")
    with pytest.raises(DataError, match=r"t.csv has no header row, so its columns have no "
                       r"names and the label column 'kind' cannot be found; add a header row, "
                       r"or leave the label column out"):
        read_upload("t.csv", b"1,2,3\n4,5,6\n", split="training", label_column="kind")


def test_zip_of_an_image_folder_in_a_wrapping_folder() -> None:
    rng = np.random.default_rng(1)
    cats = [rng.integers(0, 256, (6, 5), dtype=np.uint8) for _ in range(2)]
    dogs = [rng.integers(0, 256, (6, 5), dtype=np.uint8) for _ in range(3)]
    files = {f"pets/cat/{i}.png": png_bytes(a) for i, a in enumerate(cats)}
    files |= {f"pets/dog/{i}.png": png_bytes(a) for i, a in enumerate(dogs)}
    files |= {"__MACOSX/pets/cat/._0.png": b"junk", "pets/.DS_Store": b"junk"}
    upload = read_upload("pets.zip", zip_bytes(files), split="evaluation")
    data = upload.data
    assert data.classes == ("cat", "dog")
    assert data.x.shape == (5, 1, 6, 5)
    assert data.y.tolist() == [0, 0, 1, 1, 1]
    assert torch.equal(data.x[0, 0], torch.from_numpy(cats[0].astype(np.float32) / 255))
    assert any("skipped" in note for note in upload.notes)
    summary = preview(data)
    assert summary.class_counts == (("cat", 2), ("dog", 3))
    assert summary.samples == 5
    assert summary.input_shape == (1, 6, 5)
    assert len(summary.images) == 5
    assert summary.images[0].shape == (6, 5)
    assert summary.image_labels[:3] == ("cat", "cat", "dog")
    assert all(im.min() >= 0 and im.max() <= 1 for im in summary.images)


def test_zip_with_train_and_test_folders_uses_the_split() -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    files = {f"{split}/{c}/{i}.png": png_bytes(image + i)
             for split, n in (("train", 3), ("test", 1)) for c in ("a", "b") for i in range(n)}
    content = zip_bytes(files)
    assert len(read_upload("d.zip", content, split="training").data) == 6
    evaluation = read_upload("d.zip", content, split="evaluation")
    assert len(evaluation.data) == 2
    assert evaluation.data.x.shape[1] == 3  # colour
    assert preview(evaluation.data).images[0].shape == (4, 4, 3)


@pytest.mark.parametrize("gz", [False, True])
def test_zip_of_idx_files(gz: bool) -> None:
    files, images, labels = idx_files("t10k", gz=gz)
    train, _, train_labels = idx_files("train", n=7, seed=1, gz=gz)
    content = zip_bytes({**{f"mnist/{k}": v for k, v in files.items()}, **train})
    upload = read_upload("mnist.zip", content, split="evaluation")
    assert upload.data.name == "mnist.zip"
    assert torch.equal(upload.data.x[:, 0], torch.from_numpy(images.astype(np.float32) / 255))
    assert upload.data.y.tolist() == labels.tolist()
    training = read_upload("mnist.zip", content, split="training")
    assert training.data.y.tolist() == train_labels.tolist()


def test_idx_zip_as_mnist_checks_the_official_checksums(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    import hashlib

    files, _, _ = idx_files("t10k")
    content = zip_bytes(files)
    with pytest.raises(DataError, match=r"does not match the official MNIST file"):
        read_upload("m.zip", content, split="evaluation", idx_kind="mnist")
    monkeypatch.setattr(idx, "MNIST_SHA256", {k: hashlib.sha256(v).hexdigest()
                                              for k, v in files.items()})
    upload = read_upload("m.zip", content, split="evaluation", idx_kind="mnist")
    assert upload.data.classes == tuple("0123456789")
    assert any("MNIST checksums" in note for note in upload.notes)


def test_idx_zip_without_the_splits_files_names_them_not_the_temporary_folder() -> None:
    files, _, _ = idx_files("train")
    with pytest.raises(DataError) as info:
        read_upload("m.zip", zip_bytes(files), split="evaluation")
    message = str(info.value)
    assert "m.zip has no t10k-images-idx3-ubyte.gz" in message
    assert "pruneviz-upload-" not in message
    assert "/tmp" not in message


# --- refused ----------------------------------------------------------------------------


def test_reader_messages_name_the_upload() -> None:
    with pytest.raises(DataError) as info:
        read_upload("e.npz", npz_bytes(a=np.zeros(3)), split="evaluation")
    assert str(info.value).startswith("e.npz has no array named x (it has: a)")


@pytest.mark.parametrize(("name", "content", "message"), [
    ("data.txt", b"1,2", r"data.txt is not a data file .*\.npz file"),
    ("data.npz", b"", r"is empty \(0 bytes\)"),
    ("data.zip", b"not a zip", r"data.zip is not a valid zip file"),
    ("data.npz", npz_bytes(x=np.zeros(400))[:300], r"data.npz is not a valid .npz file"),
])
def test_bad_files_are_explained(name: str, content: bytes, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_upload(name, content, split="evaluation")


def test_an_upload_over_the_size_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "At most 100 MB per file" in uploads.describe_uploads()
    content = npz_bytes(x=np.zeros((100, 10), np.float32), y=np.zeros(100, np.int64))
    monkeypatch.setattr(uploads, "MAX_UPLOAD_BYTES", len(content) - 1)
    with pytest.raises(DataError, match=r"more than the 0 MB an upload may be"):
        read_upload("big.npz", content, split="evaluation")


@pytest.mark.parametrize("member", ["../evil.png", "a/../../evil.png", "/etc/evil.png",
                                    "C:/evil.png", "a\\..\\..\\evil.png"])
def test_a_zip_climbing_out_of_its_folder_is_refused(member: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    content = zip_bytes({"a/x.png": png_bytes(np.zeros((4, 4), np.uint8)), member: b"x"})
    with pytest.raises(DataError, match=r"a path outside the zip's own folder"):
        read_upload("bad.zip", content, split="evaluation")
    assert not any(p.name == "evil.png" for p in tmp_path.rglob("*"))
    assert list((tmp_path / "tmp").iterdir()) == []  # the private folder is gone


def test_a_zip_holding_a_link_is_refused() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("a/link.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(DataError, match=r"a symbolic link; pruneviz never unpacks links"):
        read_upload("l.zip", buffer.getvalue(), split="evaluation")


def test_a_zip_with_too_many_members_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uploads, "MAX_ZIP_MEMBERS", 5)
    files = {f"a/{i}.png": b"" for i in range(6)}
    with pytest.raises(DataError, match=r"holds 6 files, more than the 5"):
        read_upload("many.zip", zip_bytes(files), split="evaluation")


def test_a_zip_bomb_is_refused_before_it_is_unpacked(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    content = zip_bytes({"a/zeros.png": bytes(80 << 20)})  # 80 MB of zeros: ~80 KB packed
    assert len(content) < 1 << 20
    with pytest.raises(DataError, match=r"expands from .* over 100 times"):
        read_upload("bomb.zip", content, split="evaluation")
    assert list(tmp_path.iterdir()) == []


# --- digest, fit, preview ---------------------------------------------------------------


def test_identical_values_have_the_same_digest_whatever_the_file() -> None:
    x = np.random.default_rng(0).random((10, 4)).astype(np.float32)
    y = np.arange(10) % 2
    first = read_upload("a.npz", npz_bytes(x=x, y=y), split="evaluation")
    csv = "\n".join(",".join([*map(repr, map(float, row)), str(label)])
                    for row, label in zip(x, y, strict=True))
    second = read_upload("b.csv", csv.encode(), split="evaluation")
    assert first.digest == second.digest
    changed = x.copy()
    changed[0, 0] += 1
    assert read_upload("c.npz", npz_bytes(x=changed, y=y), split="evaluation").digest \
        != first.digest


def test_data_that_does_not_fit_says_what_the_model_takes() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    example = torch.zeros(1, 1, 8, 8)
    wrong = read_upload("w.npz", npz_bytes(x=np.zeros((5, 3, 8, 8), np.float32),
                                           y=np.zeros(5, np.int64)), split="evaluation")
    with pytest.raises(DataError, match=r"the upload w.npz does not fit the model: its samples "
                       r"are numbers of shape \(3, 8, 8\), but the model takes numbers of "
                       r"shape \(1, 8, 8\)"):
        fit_upload(model, wrong.data, example, "the upload w.npz")
    labels = read_upload("l.npz", npz_bytes(x=np.zeros((5, 1, 8, 8), np.float32),
                                            y=np.full(5, 12)), split="evaluation")
    with pytest.raises(ModelError, match=r"class label 12, but the model scores only 10"):
        fit_upload(model, labels.data, example, "l.npz")
    right = read_upload("r.npz", npz_bytes(x=np.zeros((5, 1, 8, 8), np.float32),
                                           y=np.arange(5)), split="evaluation")
    fit_upload(model, right.data, example, "r.npz")


def test_preview_of_data_that_is_not_images() -> None:
    upload = read_upload("r.npz", npz_bytes(x=np.zeros((6, 5), np.float32),
                                            y=np.linspace(0, 1, 6)), split="evaluation")
    summary = preview(upload.data)
    assert summary.task is Task.REGRESSION
    assert summary.class_counts == ()
    assert summary.images == ()
    assert summary.input_shape == (5,)


def test_preview_of_an_autoencoders_images_has_no_labels() -> None:
    upload = read_upload("a.npz", npz_bytes(x=np.zeros((3, 1, 4, 4), np.float32)),
                         split="evaluation")
    summary = preview(upload.data)
    assert summary.task is Task.RECONSTRUCTION
    assert len(summary.images) == 3
    assert summary.image_labels == ()
