"""Writers for tiny on-disk datasets (PNG ImageFolder trees and IDX files) used by the data tests."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# class name -> solid RGB colour of its images, so a loaded pixel identifies the class.
CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "cat": (200, 30, 30),
    "dog": (30, 200, 30),
    "fox": (30, 30, 200),
}


def write_png(path: Path, colour: tuple[int, int, int], size: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)


def write_idx(path: Path, magic: int, array: np.ndarray) -> None:
    """IDX bytes for ``array`` (uint8) with the given magic; gzipped when ``path`` ends in .gz."""
    content = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as compressed:
            compressed.write(content)
    else:
        path.write_bytes(content)


@pytest.fixture
def imagefolder_root(tmp_path: Path) -> Path:
    """train/: 3 classes x 4 solid-colour 40x40 PNGs; val/: the same classes x 2 PNGs."""
    for split, per_class in (("train", 4), ("val", 2)):
        for class_name, colour in CLASS_COLOURS.items():
            for index in range(per_class):
                write_png(tmp_path / split / class_name / f"{index}.png", colour)
    return tmp_path


@pytest.fixture
def fashion_arrays() -> dict[str, np.ndarray]:
    """Deterministic random stand-ins for the four Fashion-MNIST arrays (12 train, 6 val)."""
    rng = np.random.default_rng(0)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(12, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([9, 0, 3, 3, 7, 1], dtype=np.uint8),
    }


def write_fashion_files(root: Path, arrays: dict[str, np.ndarray], gzipped: bool) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        magic = 2051 if "images" in stem else 2049
        write_idx(root / (f"{stem}.gz" if gzipped else stem), magic, array)
    return root


@pytest.fixture(params=[True, False], ids=["gz", "raw"])
def fashion_root(request, tmp_path: Path, fashion_arrays) -> Path:
    return write_fashion_files(tmp_path / "fashion", fashion_arrays, gzipped=request.param)


@pytest.fixture
def idx_writer():
    """``write_idx`` as a fixture, since test modules cannot import conftest reliably."""
    return write_idx


@pytest.fixture
def png_writer():
    """``write_png`` as a fixture."""
    return write_png


@pytest.fixture
def class_colours() -> dict[str, tuple[int, int, int]]:
    return CLASS_COLOURS


@pytest.fixture
def fashion_writer():
    """``write_fashion_files(root, arrays, gzipped)`` as a fixture."""
    return write_fashion_files
