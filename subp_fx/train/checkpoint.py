"""Checkpoints: written atomically, read back with errors a user can act on."""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from subp_fx.errors import CheckpointError

CHECKPOINT_FORMAT = "subp-fx-checkpoint"
CHECKPOINT_VERSION = 1


def save_atomic(payload: dict, path: str | Path) -> None:
    """Write ``payload`` to ``path`` so that a reader (or a crash) never sees half a file: the
    bytes go to a temporary file in the same folder, are fsynced, then renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file on the CPU; raise ``CheckpointError`` if it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; pass a file written by `subp-fx prune` (last.pt or best.pt in the run's output dir)")
    try:
        # weights_only: a checkpoint is data; unpickling arbitrary objects would run code.
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise CheckpointError(f"checkpoint {str(path)!r} is corrupt ({str(exc).splitlines()[0]}); use another checkpoint or retrain") from None
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds Python objects besides tensors and plain values, so it is not loaded "
            "(loading is weights-only: unpickling arbitrary objects could run code). It was written by another tool "
            "or an older subp-fx; re-save its model state_dict with torch.save, or retrain"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or not a PyTorch file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "use another checkpoint (best.pt / last.pt) or retrain"
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(payload).__name__}, not a dict of tensors or a subp-fx checkpoint")
    return payload


def is_training_checkpoint(payload: dict) -> bool:
    return payload.get("format") == CHECKPOINT_FORMAT
