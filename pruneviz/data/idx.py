"""Reading IDX files (MNIST, Fashion-MNIST or any IDX images/labels pair) from a folder,
checked against the official checksums, or downloaded once into a cache folder.

IDX files are parsed here with numpy; every problem is a DataError that says what is
wrong and what to do.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from pruneviz.data.limits import check_declared
from pruneviz.errors import DataError

Split = Literal["test", "train"]
Array = NDArray[Any]

# Where `mnist` and `fashion-mnist` are downloaded from, and their official checksums.
# MNIST: SHA-256 of the UNCOMPRESSED files, so a re-compressed .gz still verifies.
# Fashion-MNIST: only the MD5s of the published .gz files are known.
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
MNIST_CLASSES = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
DOWNLOAD_TIMEOUT = 30.0  # seconds without an answer before a download gives up
MAX_DOWNLOAD_BYTES = 200 * 1024 * 1024  # no official file is a tenth of this
IDX_KINDS = ("mnist", "fashion-mnist", "idx")
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _idx_names(split: Split) -> tuple[str, str]:
    prefix = "t10k" if split == "test" else "train"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def cache_folder(kind: str) -> Path:
    """Where `mnist` / `fashion-mnist` are downloaded to: $PRUNEVIZ_CACHE/<kind>."""
    base = os.environ.get("PRUNEVIZ_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "pruneviz"
    return root / kind


def read_idx(kind: str, folder_text: str | None, split: Split
             ) -> tuple[Array, Array, tuple[str, ...]]:
    """The images (N, 1, H, W) as float32, their int64 labels and the class names of
    `kind` (mnist, fashion-mnist or idx) in `folder_text`, or in the download cache."""
    names = _idx_names(split)
    if folder_text is None:
        if kind == "idx":
            raise DataError("idx needs a folder: pass idx:FOLDER, the folder holding "
                            f"{names[0]}[.gz] and {names[1]}[.gz]")
        folder = cache_folder(kind)
        _download_missing(kind, folder, names)
    else:
        folder = Path(folder_text).expanduser()
        if not folder.is_dir():
            raise DataError(f"{folder} is not a folder; {kind}:FOLDER names the folder "
                            f"holding {names[0]}[.gz] and {names[1]}[.gz]")
    image_bytes = _idx_content(kind, folder, names[0], split)
    label_bytes = _idx_content(kind, folder, names[1], split)
    images = parse_idx(image_bytes, str(folder / names[0]))
    labels = parse_idx(label_bytes, str(folder / names[1]))
    if images.ndim != 3:
        raise DataError(f"{folder / names[0]} holds an array of shape {images.shape}; IDX "
                        "images must be (samples, height, width)")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{folder / names[1]} holds a {labels.dtype} array of shape "
                        f"{labels.shape}; IDX labels must be one integer per image")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{folder} has {images.shape[0]:,} images but {labels.shape[0]:,} "
                        "labels; the two files must belong together")
    scale = np.float32(255.0) if images.dtype == np.uint8 else np.float32(1.0)
    x = (images.astype(np.float32) / scale)[:, None, :, :]
    classes = {"mnist": MNIST_CLASSES, "fashion-mnist": FASHION_MNIST_CLASSES}.get(kind, ())
    return x, labels.astype(np.int64), classes


def parse_idx(content: bytes, where: str) -> Array:
    """The array in an IDX file: checks the magic number, type code, dimensions, length."""
    if len(content) < 4 or content[0] != 0 or content[1] != 0:
        raise DataError(f"{where} is not an IDX file (wrong magic number); pass the "
                        "uncompressed file or its .gz")
    code, ndim = content[2], content[3]
    if code not in _IDX_TYPES or ndim == 0:
        raise DataError(f"{where} is not a valid IDX file (type code {code:#04x}, "
                        f"{ndim} dimensions)")
    start = 4 + 4 * ndim
    if len(content) < start:
        raise DataError(f"{where} is truncated: its header is incomplete; download it again")
    dims = struct.unpack(f">{ndim}I", content[4:start])
    dtype = np.dtype(_IDX_TYPES[code])
    expected = start + math.prod(dims) * dtype.itemsize
    if len(content) != expected:
        state = "truncated" if len(content) < expected else "longer than its header says"
        raise DataError(f"{where} is {state}: an array of shape {dims} needs {expected:,} "
                        f"bytes, the file has {len(content):,}; download it again")
    return np.frombuffer(content, dtype=dtype, offset=start).reshape(dims)


def gunzip_idx(data: bytes, where: str) -> bytes:
    """A gzipped IDX file's content, decompressed no further than its header says it
    holds (one byte more, to tell a longer file), after checking that against the data
    limit: a small .gz that expands without end is refused after its header."""
    inflater = zlib.decompressobj(wbits=31)  # gzip
    try:
        content = inflater.decompress(data, 4)
        if len(content) == 4 and content[:2] == b"\0\0":
            ndim = content[3]
            content += inflater.decompress(inflater.unconsumed_tail, 4 * ndim)
            if len(content) == 4 + 4 * ndim and content[2] in _IDX_TYPES:
                dims = struct.unpack(f">{ndim}I", content[4:])
                items = math.prod(dims)
                check_declared(where, items * 4, what=f"an array of shape {dims}")
                total = len(content) + items * np.dtype(_IDX_TYPES[content[2]]).itemsize
                content += inflater.decompress(inflater.unconsumed_tail, total - len(content))
                content += inflater.decompress(inflater.unconsumed_tail, 1)  # one too many?
                if len(content) <= total and not inflater.eof:
                    raise zlib.error("the stream ends before its end marker")
                return content  # parse_idx checks the length against the header
        return content + inflater.decompress(inflater.unconsumed_tail, 1 << 20)
    except zlib.error as exc:
        raise DataError(f"{where} is not a valid gzip file ({exc}): it is corrupt or "
                        "truncated; download it again") from None


def _idx_content(kind: str, folder: Path, name: str, split: Split) -> bytes:
    """The uncompressed bytes of `name` (or `name`.gz) in `folder`, checksum-verified."""
    packed, plain = folder / f"{name}.gz", folder / name
    path = packed if packed.is_file() else plain if plain.is_file() else None
    if path is None:
        images, labels = _idx_names(split)
        raise DataError(f"{folder} has no {name}.gz (or {name}); the {split} split needs "
                        f"{images}[.gz] and {labels}[.gz] there")
    if kind == "fashion-mnist" and path == plain:
        raise DataError(
            f"{plain} cannot be verified: only the checksums of the official Fashion-MNIST "
            f".gz files are published; put the original {name}.gz there, or load the "
            f"files without the check as idx:{folder}")
    try:
        check_declared(str(path), path.stat().st_size, what="a file")
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path} cannot be read ({exc}); check its permissions") from None
    return _verified(kind, name, data, compressed=path == packed, where=str(path))


def _verified(kind: str, name: str, data: bytes, *, compressed: bool, where: str) -> bytes:
    """The uncompressed content of an IDX file after checking the official checksum."""
    title = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}.get(kind)
    mismatch = (
        f"{where} does not match the official {title} file {name}: it is corrupt, truncated "
        "or not the official one; download the original again (a copy in the download "
        f"cache can simply be deleted), or load other IDX files unchecked with idx:FOLDER")
    if kind == "fashion-mnist":
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if digest != FASHION_MNIST_MD5[f"{name}.gz"]:
            raise DataError(mismatch + " (a re-compressed .gz cannot be verified either)")
    content = gunzip_idx(data, where) if compressed else data
    if kind == "mnist" and hashlib.sha256(content).hexdigest() != MNIST_SHA256[name]:
        raise DataError(mismatch)
    return content


def _download_missing(kind: str, folder: Path, names: Iterable[str]) -> None:
    """Download the official files not yet in the cache `folder` (verified, then kept)."""
    base = MNIST_URL if kind == "mnist" else FASHION_MNIST_URL
    missing = [n for n in names
               if not (folder / f"{n}.gz").is_file() and not (folder / n).is_file()]
    if not missing:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the download cache {folder} ({exc}); set "
                        "PRUNEVIZ_CACHE to a writable folder, or pass mnist:FOLDER") from None
    for name in missing:
        _download(base + f"{name}.gz", folder / f"{name}.gz", kind, name)


def _download(url: str, target: Path, kind: str, name: str) -> None:
    """Fetch `url` to a temporary file, verify it, then move it to `target`."""
    if not url.startswith(("https://", "http://")):
        raise DataError(f"refusing to download {url}: only http(s) addresses are used")
    offline = (f"could not download {url} ({{}}); put the files in a folder and pass "
               f"{kind}:FOLDER")
    part = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, then renamed
        dir=target.parent, prefix=f".{target.name}.", suffix=".part", delete=False)
    try:
        # S310: the address is one of our fixed http(s) constants, checked above.
        with part, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:  # noqa: S310
            _copy_limited(response.read, part.write, url)
        data = Path(part.name).read_bytes()
        _verified(kind, name, data, compressed=True, where=f"the download {url}")
        os.replace(part.name, target)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DataError(offline.format(reason)) from None
    finally:
        Path(part.name).unlink(missing_ok=True)


def _copy_limited(read: Callable[[int], bytes], write: Callable[[bytes], object],
                  url: str) -> None:
    total = 0
    while chunk := read(1 << 20):
        total += len(chunk)
        if total > MAX_DOWNLOAD_BYTES:
            raise DataError(f"{url} is larger than {MAX_DOWNLOAD_BYTES:,} bytes, far more "
                            "than the official file; it is not the file pruneviz expects")
        write(chunk)


__all__ = [
    "FASHION_MNIST_MD5",
    "FASHION_MNIST_URL",
    "IDX_KINDS",
    "MNIST_SHA256",
    "MNIST_URL",
    "Split",
    "cache_folder",
    "parse_idx",
    "read_idx",
]
