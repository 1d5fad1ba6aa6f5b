"""User data: .npz, CSV, image folders, IDX (MNIST) with checksums and download, data
functions, metrics (top-k, the user's own) and stratified subsets."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from pruneviz.data import idx
from pruneviz.data.idx import parse_idx
from pruneviz.data.readers import describe_data_ref, load_data
from pruneviz.data.tasks import Task, parse_metric, parse_task, top_k, user_metric
from pruneviz.data.tensors import TensorData
from pruneviz.data.userfile import UserFileError
from pruneviz.errors import DataError, PrunevizError
from pruneviz.measure.metrics import evaluate

# --- helpers ----------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of an unsigned-byte array (header, big-endian dims, data)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def mnist_like(n: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, size=n, dtype=np.uint8))


def write_idx(folder: Path, prefix: str = "t10k", *, gz: bool, n: int = 20,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Write an images/labels IDX pair named like the official files; return the arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = mnist_like(n, seed)
    for name, array in ((f"{prefix}-images-idx3-ubyte", images),
                        (f"{prefix}-labels-idx1-ubyte", labels)):
        content = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(content, mtime=0))
        else:
            (folder / name).write_bytes(content)
    return images, labels


def uncompressed_sha256(folder: Path) -> dict[str, str]:
    """SHA-256 of the uncompressed content of every IDX file in `folder`."""
    out = {}
    for path in folder.iterdir():
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        out[path.name.removesuffix(".gz")] = hashlib.sha256(data).hexdigest()
    return out


def write_py(path: Path, source: str) -> Path:
    path.write_text(source)
    return path


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


# --- .npz -------------------------------------------------------------------------------


def test_npz_classification_round_trips_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 3, 4, 4))
    y = rng.integers(0, 5, size=30)
    np.savez(tmp_path / "eval.npz", x=x, y=y)
    data = load_data(str(tmp_path / "eval.npz"))
    assert data.task is Task.CLASSIFICATION
    assert data.x.dtype == torch.float32
    assert data.y.dtype == torch.int64
    assert torch.equal(data.x, torch.from_numpy(x.astype(np.float32)))
    assert torch.equal(data.y, torch.from_numpy(y))
    assert data.name == "eval.npz"
    assert data.metric_name == "accuracy"


def test_npz_integer_inputs_stay_integer(tmp_path: Path) -> None:
    tokens = np.arange(40, dtype=np.int32).reshape(10, 4)
    np.savez(tmp_path / "tokens.npz", x=tokens, y=np.arange(10) % 2)
    data = load_data(str(tmp_path / "tokens.npz"))
    assert data.x.dtype == torch.int64
    assert torch.equal(data.x, torch.from_numpy(tokens.astype(np.int64)))
    assert nn.Embedding(40, 3)(data.x).shape == (10, 4, 3)  # usable as token ids


def test_npz_without_y_is_reconstruction(tmp_path: Path) -> None:
    x = np.random.default_rng(2).random((8, 6)).astype(np.float32)
    np.savez(tmp_path / "ae.npz", x=x)
    data = load_data(str(tmp_path / "ae.npz"))
    assert data.task is Task.RECONSTRUCTION
    assert torch.equal(data.y, data.x)
    assert data.metric_name == "mse"
    with pytest.raises(DataError, match=r"no targets.*--task reconstruction"):
        load_data(str(tmp_path / "ae.npz"), task="classification")


def test_npz_float_targets_are_regression(tmp_path: Path) -> None:
    x = np.random.default_rng(3).random((12, 5))
    y = np.linspace(-1.0, 1.0, 12)
    np.savez(tmp_path / "reg.npz", x=x, y=y)
    data = load_data(str(tmp_path / "reg.npz"))
    assert data.task is Task.REGRESSION
    assert data.y.shape == (12, 1)
    assert data.y.dtype == torch.float32
    assert torch.equal(data.y[:, 0], torch.from_numpy(y.astype(np.float32)))
    assert not data.higher_is_better
    assert data.metric_name == "mse"
    # Integer targets can be asked to be regression too.
    np.savez(tmp_path / "count.npz", x=x, y=np.arange(12))
    assert load_data(str(tmp_path / "count.npz"), task=Task.REGRESSION).y.dtype == torch.float32


def test_npz_object_arrays_are_refused_without_unpickling(tmp_path: Path) -> None:
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}, None], dtype=object), y=np.arange(2))
    with pytest.raises(DataError, match=r"Python objects.*never loads"):
        load_data(str(tmp_path / "obj.npz"))


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"inputs": np.zeros((2, 2))}, "no array named x.*inputs.*np.savez"),
        ({"x": np.zeros((0, 3)), "y": np.zeros(0, dtype=np.int64)}, "empty"),
        ({"x": np.array([[1.0, np.nan]]), "y": np.array([0])}, "NaN"),
        ({"x": np.zeros((3, 2)), "y": np.array([0, 1])}, "3 inputs but 2 targets"),
        ({"x": np.zeros((2, 2)), "y": np.array([0, -1])}, "renumber the classes from 0"),
        ({"x": np.array(["a", "b"]), "y": np.array([0, 1])}, "not numbers"),
        ({"x": np.zeros((2, 2)), "y": np.array([0.0, np.inf])}, "NaN or infinite"),
    ],
)
def test_npz_problems_are_explained(tmp_path: Path, arrays: dict[str, np.ndarray],
                                    message: str) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_data(str(tmp_path / "bad.npz"))


def test_fractional_labels_cannot_be_classes(tmp_path: Path) -> None:
    np.savez(tmp_path / "f.npz", x=np.zeros((2, 2)), y=np.array([0.0, 0.5]))
    with pytest.raises(DataError, match=r"whole numbers.*--task regression"):
        load_data(str(tmp_path / "f.npz"), task="classification")
    np.savez(tmp_path / "w.npz", x=np.zeros((2, 2)), y=np.array([0.0, 2.0]))
    assert load_data(str(tmp_path / "w.npz"), task="classification").y.tolist() == [0, 2]


def test_a_file_that_is_not_an_npz_is_refused(tmp_path: Path) -> None:
    (tmp_path / "fake.npz").write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match=r"fake\.npz"):
        load_data(str(tmp_path / "fake.npz"))


# --- references that are not data -------------------------------------------------------


def test_missing_files_and_unknown_forms(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does not exist"):
        load_data(str(tmp_path / "nope.npz"))
    (tmp_path / "data.json").write_text("{}")
    with pytest.raises(DataError, match=r"\.json is not a data format.*\.npz.*mnist:FOLDER"):
        load_data(str(tmp_path / "data.json"))
    with pytest.raises(DataError, match=r"no data given"):
        load_data("  ")
    with pytest.raises(DataError, match=r"unknown split"):
        load_data(str(tmp_path / "data.json"), split="validation")  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"unknown task 'segmentation'.*regression"):
        load_data(str(tmp_path / "data.json"), task="segmentation")


def test_help_lists_every_form() -> None:
    text = describe_data_ref()
    for form in (".npz", ".csv", "subfolder per class", "mnist:FOLDER", "fashion-mnist",
                 "idx:FOLDER", "PRUNEVIZ_CACHE", "file.py:function"):
        assert form in text


# --- .csv -------------------------------------------------------------------------------


def test_csv_with_header_uses_the_label_column(tmp_path: Path) -> None:
    path = tmp_path / "iris.csv"
    path.write_text("a,label,b\n1.5,0,2\n3,2,4.25\n-1,1,0\n")
    data = load_data(str(path))
    assert data.task is Task.CLASSIFICATION
    assert data.x.tolist() == [[1.5, 2.0], [3.0, 4.25], [-1.0, 0.0]]
    assert data.y.tolist() == [0, 2, 1]


def test_csv_without_header_uses_the_last_column(tmp_path: Path) -> None:
    path = tmp_path / "plain.csv"
    path.write_text("1,2,0\n\n3,4,1\n")
    data = load_data(str(path))
    assert data.x.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert data.y.tolist() == [0, 1]
    with pytest.raises(DataError, match=r"no header row.*--label-column"):
        load_data(str(path), label_column="label")


def test_csv_named_label_column_and_regression(tmp_path: Path) -> None:
    path = tmp_path / "houses.csv"
    path.write_text("rooms;price;age\n3;250.5;10\n4;300.25;2\n")
    data = load_data(str(path), label_column="price")
    assert data.task is Task.REGRESSION
    assert data.y.tolist() == [[250.5], [300.25]]
    assert data.x.tolist() == [[3.0, 10.0], [4.0, 2.0]]
    with pytest.raises(DataError, match=r"no column 'cost'.*rooms, price, age"):
        load_data(str(path), label_column="cost")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b,label\n1,2,0\n3,x,1\n", r"row 3, column 'b' is 'x', not a number"),
        ("1,2,0\n3,,1\n", r"row 2, column 2 is empty"),
        ("a,b,label\n1,2,0\n3,4\n", r"row 3 has 2 cells but the header has 3"),
        ("a,b,label\n", "header but no data rows"),
        ("\n\n", "empty"),
        ("label\n1\n2\n", "at least one feature column"),
    ],
)
def test_csv_problems_name_the_row_and_column(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        load_data(str(path))


# --- image folders ----------------------------------------------------------------------


def test_grey_image_folder_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    expected: list[tuple[np.ndarray, int]] = []
    for label, name in enumerate(["cat", "dog"]):
        for i in range(3):
            image = rng.integers(0, 256, size=(5, 7), dtype=np.uint8)
            save_png(tmp_path / "pets" / name / f"{i}.png", image)
            expected.append((image, label))
    (tmp_path / "pets" / "dog" / "notes.txt").write_text("ignored")
    data = load_data(str(tmp_path / "pets"))
    assert data.x.shape == (6, 1, 5, 7)
    assert data.x.dtype == torch.float32
    assert data.classes == ("cat", "dog")
    for i, (image, label) in enumerate(expected):
        assert torch.equal(data.x[i, 0], torch.from_numpy(image.astype(np.float32) / 255))
        assert int(data.y[i]) == label


def test_colour_images_make_three_channels(tmp_path: Path) -> None:
    rgb = np.random.default_rng(5).integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    grey = np.full((4, 4), 128, dtype=np.uint8)
    save_png(tmp_path / "imgs" / "a" / "colour.png", rgb)
    save_png(tmp_path / "imgs" / "b" / "grey.png", grey)
    data = load_data(str(tmp_path / "imgs"))
    assert data.x.shape == (2, 3, 4, 4)
    assert torch.equal(data.x[0], torch.from_numpy(rgb.transpose(2, 0, 1) / np.float32(255)))
    assert torch.equal(data.x[1], torch.full((3, 4, 4), 128 / np.float32(255)))


def test_image_folder_splits(tmp_path: Path) -> None:
    for split, count in (("train", 3), ("test", 1)):
        for i in range(count):
            save_png(tmp_path / "ds" / split / "only" / f"{i}.png", np.zeros((2, 2), np.uint8))
    assert len(load_data(str(tmp_path / "ds"), split="train")) == 3
    test = load_data(str(tmp_path / "ds"))
    assert len(test) == 1
    assert test.name == "ds/test"


def test_image_folder_problems(tmp_path: Path) -> None:
    save_png(tmp_path / "mixed" / "a" / "small.png", np.zeros((4, 4), np.uint8))
    save_png(tmp_path / "mixed" / "b" / "big.png", np.zeros((8, 6), np.uint8))
    with pytest.raises(DataError, match=r"differ in size.*small\.png is 4x4.*big\.png is 6x8"):
        load_data(str(tmp_path / "mixed"))
    save_png(tmp_path / "flat" / "one.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"no class subfolders.*one subfolder per class"):
        load_data(str(tmp_path / "flat"))
    save_png(tmp_path / "hole" / "a" / "x.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "hole" / "b").mkdir()
    with pytest.raises(DataError, match=r"hole/b has no images"):
        load_data(str(tmp_path / "hole"))
    save_png(tmp_path / "broken" / "a" / "ok.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "broken" / "a" / "bad.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"bad\.png cannot be read as an image"):
        load_data(str(tmp_path / "broken"))
    with pytest.raises(DataError, match=r"more than the limit of 1"):
        load_data(str(tmp_path / "mixed"), max_samples=1)


def test_an_image_file_that_is_really_postscript_is_not_decoded(tmp_path: Path) -> None:
    """Pillow picks the decoder by content: an EPS named .png would be handed to Ghostscript
    (which runs the PostScript). Only raster formats are allowed."""
    save_png(tmp_path / "eps" / "a" / "ok.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "eps" / "a" / "evil.png").write_bytes(
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 4 4\nshowpage\n")
    with pytest.raises(DataError, match=r"evil\.png cannot be read as an image"):
        load_data(str(tmp_path / "eps"))


# --- IDX --------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trips(tmp_path: Path, gz: bool) -> None:
    images, labels = write_idx(tmp_path / "idx", gz=gz)
    data = load_data(f"idx:{tmp_path / 'idx'}")
    assert data.x.shape == (20, 1, 28, 28)
    assert data.y.dtype == torch.int64
    assert torch.equal(data.x[:, 0], torch.from_numpy(images.astype(np.float32) / 255))
    assert torch.equal(data.y, torch.from_numpy(labels.astype(np.int64)))
    assert data.task is Task.CLASSIFICATION


def test_idx_train_split_uses_the_train_files(tmp_path: Path) -> None:
    write_idx(tmp_path / "idx", "t10k", gz=True, n=5)
    _, labels = write_idx(tmp_path / "idx", "train", gz=False, n=9, seed=7)
    data = load_data(f"idx:{tmp_path / 'idx'}", split="train")
    assert len(data) == 9
    assert data.y.tolist() == labels.tolist()


def test_idx_structure_problems(tmp_path: Path) -> None:
    images, labels = mnist_like(4)
    good = idx_bytes(images)
    with pytest.raises(DataError, match=r"truncated.*download it again"):
        parse_idx(good[:-1], "f")
    with pytest.raises(DataError, match=r"longer than its header says"):
        parse_idx(good + b"\0", "f")
    with pytest.raises(DataError, match=r"magic number"):
        parse_idx(b"\x1f\x8b" + good[2:], "f")
    folder = tmp_path / "pair"
    folder.mkdir()
    (folder / "t10k-images-idx3-ubyte").write_bytes(good)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels[:3]))
    with pytest.raises(DataError, match=r"4 images but 3 labels"):
        load_data(f"idx:{folder}")
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"no t10k-labels-idx1-ubyte.gz"):
        load_data(f"idx:{folder}")
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels))[:-8])
    with pytest.raises(DataError, match=r"not a valid gzip file.*corrupt or truncated"):
        load_data(f"idx:{folder}")
    with pytest.raises(DataError, match=r"is not a folder"):
        load_data(f"idx:{tmp_path / 'missing'}")
    with pytest.raises(DataError, match=r"holds IDX files: pass mnist:.*idx:"):
        load_data(str(folder))
    with pytest.raises(DataError, match=r"idx needs a folder"):
        load_data("idx")


def test_mnist_checksum_mismatch_is_an_error(tmp_path: Path) -> None:
    write_idx(tmp_path / "m", gz=True)  # named like the official files, but not them
    with pytest.raises(DataError, match=r"not match the official MNIST file.*corrupt, "
                       "truncated or not the official one.*idx:FOLDER"):
        load_data(f"mnist:{tmp_path / 'm'}")
    assert len(load_data(f"idx:{tmp_path / 'm'}")) == 20  # unchecked: fine


def test_mnist_checksum_is_of_the_uncompressed_bytes(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    images, _ = write_idx(tmp_path / "m", gz=True)
    monkeypatch.setattr(idx, "MNIST_SHA256", uncompressed_sha256(tmp_path / "m"))
    data = load_data(f"mnist:{tmp_path / 'm'}")
    assert data.classes == tuple("0123456789")
    assert data.name == "mnist/test"
    assert torch.equal(data.x[:, 0], torch.from_numpy(images.astype(np.float32) / 255))
    # A re-compressed (different .gz bytes) or uncompressed copy still verifies.
    path = tmp_path / "m" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1))
    assert len(load_data(f"mnist:{tmp_path / 'm'}")) == 20
    path.unlink()
    (tmp_path / "m" / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(images))
    assert len(load_data(f"mnist:{tmp_path / 'm'}")) == 20
    # One changed pixel does not.
    changed = images.copy()
    changed[0, 0, 0] ^= 1
    (tmp_path / "m" / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(changed))
    with pytest.raises(DataError, match=r"does not match the official MNIST"):
        load_data(f"mnist:{tmp_path / 'm'}")


def test_fashion_mnist_verifies_the_gz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_idx(tmp_path / "f", gz=True)
    with pytest.raises(DataError, match=r"official Fashion-MNIST.*re-compressed"):
        load_data(f"fashion-mnist:{tmp_path / 'f'}")
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in (tmp_path / "f").iterdir()}
    monkeypatch.setattr(idx, "FASHION_MNIST_MD5", md5)
    data = load_data(f"fashion-mnist:{tmp_path / 'f'}")
    assert data.classes[9] == "Ankle boot"
    assert len(data) == 20
    write_idx(tmp_path / "raw", gz=False)
    with pytest.raises(DataError, match=r"cannot be verified.*original.*idx:"):
        load_data(f"fashion-mnist:{tmp_path / 'raw'}")


# --- download ---------------------------------------------------------------------------


class _Server:
    """A local HTTP server for a folder, counting the requests it answers."""

    def __init__(self, folder: Path) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                super().do_GET()

            def log_message(self, format: str, *args: object) -> None:
                pass

        handler = functools.partial(Handler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Server]:
    """Generated MNIST-like .gz files served locally, their digests made 'official'."""
    write_idx(tmp_path / "served", gz=True)
    server = _Server(tmp_path / "served")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("PRUNEVIZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(idx, "MNIST_URL", server.url)
    monkeypatch.setattr(idx, "MNIST_SHA256", uncompressed_sha256(tmp_path / "served"))
    yield server
    server.close()


def test_download_once_then_use_the_cache(mirror: _Server, tmp_path: Path) -> None:
    data = load_data("mnist")
    assert len(data) == 20
    assert len(mirror.requests) == 2
    cached = sorted(p.name for p in (tmp_path / "cache" / "mnist").iterdir())
    assert cached == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    again = load_data("mnist")
    assert len(mirror.requests) == 2  # nothing downloaded the second time
    assert torch.equal(again.x, data.x)
    assert torch.equal(again.y, data.y)


def test_fashion_mnist_downloads_from_its_own_mirror(
        mirror: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served = tmp_path / "served"
    monkeypatch.setattr(idx, "FASHION_MNIST_URL", mirror.url)
    monkeypatch.setattr(idx, "FASHION_MNIST_MD5", {
        p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in served.iterdir()})
    data = load_data("fashion-mnist")
    assert data.name == "fashion-mnist/test"
    assert len(mirror.requests) == 2
    assert (tmp_path / "cache" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").is_file()


def test_a_download_that_does_not_verify_is_not_kept(
        mirror: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idx, "MNIST_SHA256", dict.fromkeys(idx.MNIST_SHA256, "0" * 64))
    with pytest.raises(DataError, match=r"the download http.*does not match the official"):
        load_data("mnist")
    assert list((tmp_path / "cache" / "mnist").iterdir()) == []


def test_offline_download_explains_what_to_do(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("PRUNEVIZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(idx, "MNIST_URL", f"http://127.0.0.1:{port}/")
    with pytest.raises(DataError, match=r"could not download .*put the files in a folder "
                       r"and pass mnist:FOLDER"):
        load_data("mnist")
    assert list((tmp_path / "cache" / "mnist").iterdir()) == []


# --- data functions ---------------------------------------------------------------------


DATA_FILE = '''
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

X = torch.arange(24, dtype=torch.float32).reshape(6, 4)
Y = torch.tensor([0, 1, 2, 0, 1, 2])

def pair(split):
    n = 6 if split == "test" else 4
    return X[:n].numpy(), Y[:n].numpy()

def dataset():
    return TensorDataset(X, Y)

def loader(split="test"):
    return DataLoader(TensorDataset(X, Y), batch_size=4)

class Items(Dataset):
    def __init__(self, items):
        self.items = items
    def __len__(self):
        return len(self.items)
    def __getitem__(self, i):
        return self.items[i]

def numbers():
    return Items([(torch.tensor([1.0, 2.0]), 3.5), (torch.tensor([0.0, 1.0]), -1.0)])

def dicts():
    return Items([{"image": X[0], "label": 0}])

def ragged():
    return Items([(torch.zeros(3), 0), (torch.zeros(4), 1)])

def broken():
    raise RuntimeError("no disk")

def text():
    return "not data"
'''


@pytest.fixture
def data_file(tmp_path: Path) -> str:
    return str(write_py(tmp_path / "mydata.py", DATA_FILE))


def test_data_function_forms(data_file: str) -> None:
    expected_x = torch.arange(24, dtype=torch.float32).reshape(6, 4)
    for name in ("pair", "dataset", "loader"):
        data = load_data(f"{data_file}:{name}")
        assert torch.equal(data.x, expected_x), name
        assert data.y.tolist() == [0, 1, 2, 0, 1, 2]
        assert data.task is Task.CLASSIFICATION
    assert len(load_data(f"{data_file}:pair", split="train")) == 4  # split given by keyword
    assert load_data(f"{data_file}:pair").name == "pair(test)"
    numbers = load_data(f"{data_file}:numbers")
    assert numbers.task is Task.REGRESSION
    assert numbers.y.tolist() == [[3.5], [-1.0]]


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("dicts", DataError, "item 0 .* is a dict with keys image, label, not an "
                             r"\(input, target\) pair"),
        ("ragged", DataError, r"item 1 .* input of shape \(4,\), but item 0 has \(3,\)"),
        ("broken", UserFileError, "failed: RuntimeError: no disk"),
        ("text", DataError, "returned a str; it must return a torch Dataset"),
        ("missing", UserFileError, "has no function 'missing'"),
    ],
)
def test_data_function_problems(data_file: str, name: str, error: type[Exception],
                                message: str) -> None:
    with pytest.raises(error, match=message):
        load_data(f"{data_file}:{name}")


def test_data_function_sample_limit(data_file: str) -> None:
    for name in ("pair", "dataset", "loader"):
        with pytest.raises(DataError, match=r"more than (the limit of )?5"):
            load_data(f"{data_file}:{name}", max_samples=5)
    assert len(load_data(f"{data_file}:dataset", max_samples=6)) == 6


# --- metrics ----------------------------------------------------------------------------


def test_top_k_accuracy() -> None:
    output = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    target = torch.tensor([2, 1, 0])
    assert top_k(1).batch_sum(output, target) == 0.0
    assert top_k(2).batch_sum(output, target) == 2.0
    assert top_k(3).batch_sum(output, target) == 3.0
    assert top_k(5).name == "top-5 accuracy"
    with pytest.raises(DataError, match=r"at least 5 classes.*smaller k"):
        top_k(5).batch_sum(output, target)


def test_parse_metric() -> None:
    cls, reg = Task.CLASSIFICATION, Task.REGRESSION
    assert parse_metric(None, cls) is None
    assert parse_metric("", reg) is None
    assert parse_metric("accuracy", cls) is None
    assert parse_metric("top1", cls) is None
    assert parse_metric("mse", reg) is None
    assert parse_metric("mse", Task.RECONSTRUCTION) is None
    for text, k in (("top5", 5), ("top-5", 5), ("TOP3", 3), ("top_10", 10)):
        scorer = parse_metric(text, cls)
        assert scorer is not None
        assert scorer.name == f"top-{k} accuracy"
    with pytest.raises(DataError, match=r"needs class labels.*regression"):
        parse_metric("top5", reg)
    with pytest.raises(DataError, match=r"--task regression"):
        parse_metric("mse", cls)
    with pytest.raises(DataError, match=r"unknown metric 'f1'.*top5"):
        parse_metric("f1", cls)
    with pytest.raises(DataError, match=r"at least 1"):
        parse_metric("top0", cls)


METRIC_FILE = '''
import math
import torch

def mae(output, target):
    return (output - target).abs().mean()
mae.higher_is_better = False

def hit_rate(output, target):
    return float((output.argmax(dim=1) == target).float().mean())

def nan_metric(output, target):
    return math.nan

def shaped(output, target):
    return output

def crashes(output, target):
    raise KeyError("oops")
'''


def test_user_metric_function(tmp_path: Path) -> None:
    path = write_py(tmp_path / "mymetrics.py", METRIC_FILE)
    scorer = user_metric(f"{path}:mae")
    assert scorer.name == "mae"
    assert scorer.higher_is_better is False
    out, target = torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [1.0]])
    assert scorer.batch_sum(out, target) == pytest.approx(3.0)  # mean 1.5, times 2
    hit = parse_metric(f"{path}:hit_rate", Task.CLASSIFICATION)
    assert hit is not None
    assert hit.higher_is_better
    with pytest.raises(UserFileError, match=r"nan_metric returned nan \(not finite\)"):
        user_metric(f"{path}:nan_metric").batch_sum(out, target)
    with pytest.raises(UserFileError, match=r"shaped returned a Tensor of shape \(2, 1\), "
                       "not a number"):
        user_metric(f"{path}:shaped").batch_sum(out, target)
    with pytest.raises(UserFileError, match=r"crashes raised KeyError"):
        user_metric(f"{path}:crashes").batch_sum(out, target)


def test_evaluate_uses_the_scorer(tmp_path: Path) -> None:
    path = write_py(tmp_path / "m2.py", METRIC_FILE)
    torch.manual_seed(0)
    model = nn.Linear(4, 6)
    x, y = torch.randn(50, 4), torch.randint(0, 6, (50,))
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    with torch.no_grad():
        logits = model(x)
    top3 = load_data(str(tmp_path / "d.npz"), metric="top-3")
    result = evaluate(model, top3, batch_size=7)
    expected = (logits.topk(3, dim=1).indices == y[:, None]).any(dim=1).float().mean()
    assert result.metric_name == "top-3 accuracy"
    assert top3.higher_is_better
    assert result.metric == pytest.approx(float(expected))
    assert result.loss == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)
    mine = load_data(str(tmp_path / "d.npz"), metric=f"{path}:hit_rate")
    plain = evaluate(model, load_data(str(tmp_path / "d.npz")), batch_size=7)
    assert evaluate(model, mine, batch_size=7).metric == pytest.approx(plain.metric)
    assert mine.head(10).scorer is mine.scorer


# --- tasks ------------------------------------------------------------------------------


def test_regression_loss_and_metric_are_mse() -> None:
    out = torch.tensor([[1.0], [2.0], [4.0]])
    target = torch.tensor([[0.0], [2.0], [1.0]])
    assert Task.REGRESSION.metric_sum(out, target) == pytest.approx(10.0)
    assert Task.REGRESSION.loss_sum(out, target) == pytest.approx(10.0)
    assert float(Task.REGRESSION.loss(out, target)) == pytest.approx(10.0 / 3)
    # (N,) outputs against (N, 1) targets compare sample by sample, never broadcast.
    assert Task.REGRESSION.metric_sum(out[:, 0], target) == pytest.approx(10.0)
    with pytest.raises(DataError, match=r"output has shape \(3, 2\).*targets have shape"):
        Task.REGRESSION.metric_sum(torch.zeros(3, 2), target)
    assert parse_task("regression") is Task.REGRESSION
    with pytest.raises(PrunevizError, match=r"allowed: classification, regression"):
        parse_task("ranking")


# --- subsets ----------------------------------------------------------------------------


def _sorted_classes(counts: list[int]) -> TensorData:
    y = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    x = torch.arange(len(y), dtype=torch.float32)[:, None]
    return TensorData(x, y, Task.CLASSIFICATION, "sorted", classes=("a", "b", "c"))


def test_subset_is_stratified_and_seeded() -> None:
    data = _sorted_classes([500, 300, 200])
    sub = data.subset(100)
    assert sub.name == "sorted[100 of 1,000]"
    assert torch.bincount(sub.y).tolist() == [50, 30, 20]
    assert torch.equal(sub.x[:, 0], torch.sort(sub.x[:, 0]).values)  # original order
    assert torch.equal(sub.y, data.y[sub.x[:, 0].long()])  # pairs stay together
    assert torch.equal(data.subset(100).x, sub.x)
    assert not torch.equal(data.subset(100, seed=1).x, sub.x)
    assert sub.classes == ("a", "b", "c")
    assert data.subset(1000) is data
    assert data.subset(5000) is data
    odd = _sorted_classes([5, 3, 3]).subset(4)
    assert len(odd) == 4
    assert torch.bincount(odd.y, minlength=3).min() >= 1
    with pytest.raises(DataError, match=r"at least 1"):
        data.subset(0)


def test_subset_of_regression_keeps_the_scorer(tmp_path: Path) -> None:
    x = torch.randn(40, 3)
    data = TensorData(x, x.sum(dim=1, keepdim=True), Task.REGRESSION, "r", scorer=top_k(1))
    sub = data.subset(10, seed=3)
    assert len(sub) == 10
    assert sub.scorer is data.scorer
    assert torch.equal(sub.y, sub.x.sum(dim=1, keepdim=True))
    assert torch.equal(data.subset(10, seed=3).x, sub.x)
