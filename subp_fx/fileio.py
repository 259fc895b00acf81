"""Writing artefacts so that a crash or a refusal never leaves a half-written one.

The one place that knows how: every file (checkpoint, tuning log) is written through
:func:`atomic_file` and every artefact directory (a compiled model, a compile's output) through
:func:`staged_directory`. Both write beside the destination (same filesystem, so the final rename
is atomic) and clean up after themselves on any error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """An open temporary file beside ``path``; when the block ends normally its bytes are flushed,
    fsynced and renamed over ``path``, so a reader (or a crash) never sees half a file. On an error
    the temporary file is removed and ``path`` is untouched. ``mode``: "wb" or "w"."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_file writes whole files: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, mode) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def publish_directory(complete: Path, destination: Path) -> None:
    """Rename the finished directory ``complete`` to ``destination`` (same filesystem). An old
    ``destination`` is moved aside first and removed only once the new one is in place."""
    if not destination.exists():
        os.rename(complete, destination)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".old", dir=destination.parent))
    os.rename(destination, aside / destination.name)
    os.rename(complete, destination)
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def staged_directory(destination: str | os.PathLike) -> Iterator[Path]:
    """An empty temporary directory beside ``destination`` to fill; when the block ends normally it
    replaces ``destination`` (:func:`publish_directory`), on an error it is removed. Whether an
    existing ``destination`` may be replaced is the caller's decision, checked before."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".partial", dir=destination.parent))
    try:
        yield staging
        publish_directory(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
