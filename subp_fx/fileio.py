"""Writing artefacts so that a crash or a refusal never leaves a half-written one."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


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
