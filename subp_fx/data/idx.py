"""A strict reader for IDX files (the MNIST / Fashion-MNIST container format).

Layout: a 4-byte big-endian magic number whose third byte is the element type (0x08 =
unsigned byte) and whose last byte is the number of dimensions, then one big-endian uint32
per dimension, then the elements in C order. Every step is checked so that a truncated
download or a swapped file fails here, naming the file, instead of producing garbage tensors.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from subp_fx.errors import DataError

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (count, rows, cols)
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (count)

_UNSIGNED_BYTE_TYPE = 0x08
_MAGIC_AND_DIM_BYTES = 4


def read_file_bytes(path: Path) -> bytes:
    """Whole file content, transparently gunzipped when the name ends in ``.gz``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as compressed:
                return compressed.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise DataError(
            f"IDX file {path} is not a complete gzip stream ({error}). The download is probably "
            f"truncated or the file is not gzip-compressed despite its .gz name; fetch it again, "
            f"or store it uncompressed without the .gz suffix."
        ) from error
    except OSError as error:
        raise DataError(f"cannot read IDX file {path}: {error}. Check that it exists and is readable.") from error


def parse_idx_ubyte(content: bytes, expected_magic: int, source: Path) -> np.ndarray:
    """Decode IDX ``content`` into a uint8 array, checking the magic number and the size.

    ``source`` is only used in error messages, so the user learns which file is bad.
    """
    if len(content) < _MAGIC_AND_DIM_BYTES:
        raise DataError(
            f"IDX file {source} is {len(content)} bytes long, too short to hold even the 4-byte "
            f"magic number. The file is truncated; download it again."
        )
    (magic,) = struct.unpack(">I", content[:_MAGIC_AND_DIM_BYTES])
    if magic != expected_magic:
        raise DataError(
            f"IDX file {source} starts with magic number {magic}, expected {expected_magic} "
            f"({_describe_magic(expected_magic)}). The file is corrupt or is not the file its name "
            f"says (e.g. images and labels swapped); download it again."
        )
    ndim = magic & 0xFF
    header_bytes = _MAGIC_AND_DIM_BYTES * (1 + ndim)
    if len(content) < header_bytes:
        raise DataError(
            f"IDX file {source} is {len(content)} bytes long but its header alone needs "
            f"{header_bytes} bytes ({ndim} dimension sizes). The file is truncated; download it again."
        )
    shape = struct.unpack(f">{ndim}I", content[_MAGIC_AND_DIM_BYTES:header_bytes])
    expected_bytes = header_bytes + math.prod(shape)
    if len(content) != expected_bytes:
        problem = "truncated" if len(content) < expected_bytes else "longer than its header declares"
        raise DataError(
            f"IDX file {source} is {problem}: its header declares shape {tuple(shape)}, which needs "
            f"{expected_bytes} bytes, but it holds {len(content)} bytes. Download it again."
        )
    return np.frombuffer(content, dtype=np.uint8, offset=header_bytes).reshape(shape)


def read_idx_ubyte(path: Path, expected_magic: int) -> np.ndarray:
    """Read and validate one IDX file (gzipped or raw) into a uint8 array."""
    return parse_idx_ubyte(read_file_bytes(path), expected_magic, path)


def _describe_magic(magic: int) -> str:
    element_type = (magic >> 8) & 0xFF
    type_name = "unsigned bytes" if element_type == _UNSIGNED_BYTE_TYPE else f"element type 0x{element_type:02x}"
    return f"{type_name}, {magic & 0xFF} dimension(s)"
