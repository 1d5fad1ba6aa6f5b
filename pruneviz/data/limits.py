"""How much data a file may make pruneviz hold, checked before it is read.

Every data form declares its size before its values: an .npy header its shape and dtype,
an IDX header its dimensions, an image header its width and height, a CSV file its length
on disk. Readers check that declaration with `check_declared` before they decompress,
allocate or decode anything, so a small hostile file (a compressed array of zeros that
expands a thousandfold, an image header claiming a billion pixels) is refused at the
cost of reading its header.
"""

from __future__ import annotations

from pruneviz.errors import DataError

# Decoded data (float32 inputs and int64 targets) one data set may hold.
MAX_DATA_BYTES = 2 << 30
# A compressed member may expand this many times (real data: 2-10x); past it, only when
# small.
MAX_EXPANSION = 100
SMALL_BYTES = 64 << 20
# CSV text is parsed cell by cell into Python objects (~15x the file): larger data
# belongs in an .npz file.
MAX_CSV_BYTES = 64 << 20
MAX_IMAGE_PIXELS = 4096 * 4096  # one image's width x height


def check_declared(where: str, nbytes: int, *, what: str = "data") -> None:
    """Refuse `where` if holding what it declares (`nbytes`, decoded) exceeds the limit."""
    if nbytes > MAX_DATA_BYTES:
        raise DataError(
            f"{where} declares {what} of {nbytes:,} bytes once decoded, more than the "
            f"{MAX_DATA_BYTES:,} pruneviz reads into memory; nothing was decoded. Use a "
            "smaller evaluation set (a few thousand samples measure a model well)")


def check_expansion(where: str, member: str, packed: int, declared: int) -> None:
    """Refuse a compressed member expanding beyond MAX_EXPANSION times (past SMALL_BYTES)."""
    if declared > SMALL_BYTES and declared > MAX_EXPANSION * max(packed, 1):
        raise DataError(
            f"{where}: {member} expands from {packed:,} to {declared:,} bytes, over "
            f"{MAX_EXPANSION} times; real data does not compress like that, so it was not "
            "decompressed. Save the arrays again (np.savez), or uncompressed")


__all__ = ["MAX_CSV_BYTES", "MAX_DATA_BYTES", "MAX_EXPANSION", "MAX_IMAGE_PIXELS",
           "check_declared", "check_expansion"]
