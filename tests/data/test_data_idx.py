"""The IDX reader: exact round trips, and corrupt files rejected naming the file."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from subp_fx.data.idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, read_idx_ubyte
from subp_fx.errors import DataError

IMAGES = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)


@pytest.mark.parametrize("file_name", ["images-idx3-ubyte.gz", "images-idx3-ubyte"])
def test_images_round_trip_exactly(tmp_path, idx_writer, file_name):
    path = tmp_path / file_name
    idx_writer(path, IDX_IMAGES_MAGIC, IMAGES)
    parsed = read_idx_ubyte(path, IDX_IMAGES_MAGIC)
    assert parsed.dtype == np.uint8
    assert parsed.shape == (3, 4, 5)
    np.testing.assert_array_equal(parsed, IMAGES)


def test_labels_round_trip_exactly(tmp_path, idx_writer):
    labels = np.array([0, 9, 4, 4, 255], dtype=np.uint8)
    path = tmp_path / "labels-idx1-ubyte.gz"
    idx_writer(path, IDX_LABELS_MAGIC, labels)
    np.testing.assert_array_equal(read_idx_ubyte(path, IDX_LABELS_MAGIC), labels)


def test_wrong_magic_names_file_and_both_numbers(tmp_path, idx_writer):
    path = tmp_path / "swapped-idx3-ubyte"
    idx_writer(path, IDX_LABELS_MAGIC, np.zeros(5, dtype=np.uint8))
    with pytest.raises(DataError) as error:
        read_idx_ubyte(path, IDX_IMAGES_MAGIC)
    message = str(error.value)
    assert str(path) in message and "2049" in message and "2051" in message


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_truncated_body_names_file(tmp_path, idx_writer, suffix):
    whole = tmp_path / "whole"
    idx_writer(whole, IDX_IMAGES_MAGIC, IMAGES)
    path = tmp_path / f"cut-idx3-ubyte{suffix}"
    content = whole.read_bytes()[:-7]
    path.write_bytes(gzip.compress(content) if suffix else content)
    with pytest.raises(DataError, match="truncated") as error:
        read_idx_ubyte(path, IDX_IMAGES_MAGIC)
    assert str(path) in str(error.value)


def test_trailing_bytes_rejected(tmp_path, idx_writer):
    path = tmp_path / "long-idx3-ubyte"
    idx_writer(path, IDX_IMAGES_MAGIC, IMAGES)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(DataError, match="longer than its header"):
        read_idx_ubyte(path, IDX_IMAGES_MAGIC)


@pytest.mark.parametrize("length", [0, 3, 6, 15])
def test_truncated_header_rejected(tmp_path, idx_writer, length):
    whole = tmp_path / "whole"
    idx_writer(whole, IDX_IMAGES_MAGIC, IMAGES)
    path = tmp_path / "header-idx3-ubyte"
    path.write_bytes(whole.read_bytes()[:length])
    with pytest.raises(DataError) as error:
        read_idx_ubyte(path, IDX_IMAGES_MAGIC)
    assert str(path) in str(error.value)


def test_cut_gzip_stream_names_file(tmp_path, idx_writer):
    path = tmp_path / "cut-idx3-ubyte.gz"
    idx_writer(path, IDX_IMAGES_MAGIC, IMAGES)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataError, match="gzip") as error:
        read_idx_ubyte(path, IDX_IMAGES_MAGIC)
    assert str(path) in str(error.value)


def test_not_gzip_despite_name(tmp_path, idx_writer):
    path = tmp_path / "plain-idx3-ubyte.gz"
    raw = tmp_path / "raw"
    idx_writer(raw, IDX_IMAGES_MAGIC, IMAGES)
    path.write_bytes(raw.read_bytes())
    with pytest.raises(DataError, match="gzip"):
        read_idx_ubyte(path, IDX_IMAGES_MAGIC)
