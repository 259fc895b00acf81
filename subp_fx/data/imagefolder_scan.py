"""Find the images of a ``root/{train,val}/<class>/...`` tree, failing early with a clear reason.

Scanning is separate from loading so that every layout problem (missing split, no class
folders, empty classes, val classes unknown to train) is reported before training starts, with
the folder at fault, instead of surfacing as an exception inside a DataLoader worker.
"""

from __future__ import annotations

import os
from pathlib import Path

from subp_fx.errors import DataError

# The suffixes torchvision's ImageFolder accepts, matched case-insensitively (``.JPEG`` in ImageNet).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SPLIT_NAMES: tuple[str, ...] = ("train", "val")
_MAX_NAMES_IN_MESSAGE = 5


def locate_split_dirs(root: Path) -> dict[str, Path]:
    """split name -> its folder, after checking that ``root`` and both splits exist."""
    if not root.is_dir():
        raise DataError(
            f"ImageFolder root {root} does not exist or is not a folder. Set the recipe's data.root: "
            f"key to a folder holding train/ and val/, each with one sub-folder of images per class."
        )
    missing = [name for name in SPLIT_NAMES if not (root / name).is_dir()]
    if missing:
        raise DataError(
            f"ImageFolder root {root} lacks {' and '.join(f'{name}/' for name in missing)}. It must hold "
            f"train/ and val/, each with one sub-folder of images per class (e.g. {root}/train/cat/1.jpg)."
        )
    return {name: root / name for name in SPLIT_NAMES}


def list_class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the class sub-folders (hidden folders such as ``.cache`` are skipped)."""
    class_names = sorted(
        entry.name for entry in os.scandir(split_dir) if entry.is_dir() and not entry.name.startswith(".")
    )
    if not class_names:
        raise DataError(
            f"split folder {split_dir} has no class sub-folders. Put each class's images in its own "
            f"sub-folder, e.g. {split_dir}/cat/1.jpg and {split_dir}/dog/1.jpg."
        )
    return class_names


def is_image_file(file_name: str) -> bool:
    return file_name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(class_dir: Path) -> list[str]:
    """Sorted paths of every image under ``class_dir``, following nested folders and symlinks."""
    found = []
    for folder, _, file_names in os.walk(class_dir, followlinks=True):
        found.extend(os.path.join(folder, name) for name in file_names if is_image_file(name))
    return sorted(found)


def check_val_classes(train_classes: list[str], val_classes: list[str], val_dir: Path) -> None:
    """Val may lack some train classes, but a val class the model never saw has no label index."""
    unknown = sorted(set(val_classes) - set(train_classes))
    if unknown:
        raise DataError(
            f"val folder {val_dir} has class folder(s) {_short_list(unknown)} that train/ does not have; "
            f"labels are numbered from the train classes, so every val class must also exist under "
            f"train/. Rename or remove those folders, or add them to train/."
        )


def scan_split(split_dir: Path, class_names: list[str]) -> list[tuple[str, int]]:
    """(image path, class index) for every image, class index taken from ``class_names``.

    Only class folders that exist in this split are scanned; each must contain images.
    """
    samples: list[tuple[str, int]] = []
    empty_classes = []
    for class_index, class_name in enumerate(class_names):
        class_dir = split_dir / class_name
        if not class_dir.is_dir():
            continue
        images = list_images(class_dir)
        if not images:
            empty_classes.append(class_name)
        samples.extend((path, class_index) for path in images)
    extensions = ", ".join(IMAGE_EXTENSIONS)
    if not samples:
        raise DataError(
            f"split folder {split_dir} has class folders but no images in them (looked for files "
            f"ending in {extensions}, any case). Add images or point data.root: at the right folder."
        )
    if empty_classes:
        raise DataError(
            f"split folder {split_dir} has class folder(s) {_short_list(empty_classes)} with no images "
            f"(looked for files ending in {extensions}, any case). Add images to them or remove them."
        )
    return samples


def _short_list(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMES_IN_MESSAGE])
    hidden = len(names) - _MAX_NAMES_IN_MESSAGE
    return shown + (f" and {hidden} more" if hidden > 0 else "")
