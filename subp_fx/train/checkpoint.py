"""Training checkpoints: one schema (:class:`TrainingCheckpoint`), written atomically, read back with
errors a user can act on; and :func:`load_trained`, the prepared model a checkpoint holds.

The trainer writes and resumes from it, ``--evaluate`` and ``subp-fx compile`` read it: all
through this module, none of them through string keys of their own. Compiling a checkpoint
imports this module, not the trainer (nor DDP, nor tqdm).
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.fx as fx

from subp_fx.errors import CheckpointError, ConfigError
from subp_fx.fileio import atomic_file
from subp_fx.models.state_dict_file import load_state_dict
from subp_fx.passes import prepare
from subp_fx.recipes.model import recipe_model
from subp_fx.recipes.schema import Recipe, validate_recipe

CHECKPOINT_FORMAT = "subp-fx-checkpoint"
CHECKPOINT_VERSION = 1


def save_atomic(payload: dict, path: str | Path) -> None:
    """Write ``payload`` to ``path`` so that a reader (or a crash) never sees half a file: the
    bytes go to a temporary file in the same folder, are fsynced, then renamed over ``path``."""
    with atomic_file(path) as stream:
        torch.save(payload, stream)


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file on the CPU; raise ``CheckpointError`` if it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not exist; "
            "pass a file written by `subp-fx prune` (last.pt or best.pt in the run's output dir)"
        )
    try:
        # weights_only: a checkpoint is data; unpickling arbitrary objects would run code.
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise CheckpointError(
                f"checkpoint {str(path)!r} is corrupt ({str(exc).splitlines()[0]}); use another checkpoint or retrain"
            ) from None
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds Python objects besides tensors and plain values, so it is not loaded "
            "(loading is weights-only: unpickling arbitrary objects could run code). It was written by another tool "
            "or an older subp-fx; re-save its model state_dict with torch.save, or retrain"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or not a PyTorch file "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "use another checkpoint (best.pt / last.pt) or retrain"
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds a {type(payload).__name__}, not a dict of tensors or a subp-fx checkpoint"
        )
    return payload


def is_training_checkpoint(payload: dict) -> bool:
    return payload.get("format") == CHECKPOINT_FORMAT


@dataclass
class TrainingCheckpoint:
    """What ``subp-fx prune`` saves after every epoch (``last.pt``, ``best.pt``).

    ``recipe`` is the run's recipe as plain data; ``epoch`` the number of epochs completed;
    ``model``, ``optimizer``, ``scheduler``, ``scaler`` state dicts; ``rng`` the RNG states (as
    tensors, so loading stays weights-only); ``num_classes``, ``in_channels``, ``image_size`` what
    the model was built for (a compile needs them without the dataset).
    """

    recipe: dict
    epoch: int
    model: dict
    optimizer: dict
    scheduler: dict
    scaler: dict
    best_top1: float
    metrics: dict
    rng: dict
    num_classes: int
    in_channels: int
    image_size: int

    def to_payload(self) -> dict:
        payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION}
        payload.update({field.name: getattr(self, field.name) for field in fields(self)})
        return payload

    @classmethod
    def from_payload(cls, payload: dict, source: str) -> TrainingCheckpoint:
        """The checkpoint in a loaded ``payload``; ``source`` names it in errors."""
        if not is_training_checkpoint(payload):
            raise CheckpointError(
                f"{source} is a plain state dict, not a subp-fx training checkpoint: it carries no recipe, epoch or "
                "optimiser state (resume and compile need a last.pt / best.pt written by `subp-fx prune`)"
            )
        if payload.get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(
                f"{source} is a subp-fx checkpoint of version {payload.get('version')!r}; this subp-fx reads version "
                f"{CHECKPOINT_VERSION}"
            )
        missing = [field.name for field in fields(cls) if field.name not in payload]
        if missing:
            raise CheckpointError(
                f"{source} lacks {', '.join(missing)}; it is truncated or not written by `subp-fx prune`"
            )
        return cls(**{field.name: payload[field.name] for field in fields(cls)})

    def save(self, path: str | Path) -> None:
        save_atomic(self.to_payload(), path)


def read_training_checkpoint(path: str | Path) -> TrainingCheckpoint:
    """The training checkpoint in ``path`` (``CheckpointError`` if it is missing, corrupt or not one)."""
    return TrainingCheckpoint.from_payload(read_checkpoint(path), f"checkpoint {str(path)!r}")


def load_trained(path: str | Path) -> tuple[fx.GraphModule, Recipe, TrainingCheckpoint]:
    """Rebuild the prepared model a ``subp-fx prune`` checkpoint holds: (model, recipe, checkpoint).
    The model is in eval mode on the CPU, its masks as trained."""
    checkpoint = read_training_checkpoint(path)
    try:
        recipe = validate_recipe(checkpoint.recipe, source=f"the recipe inside {path}")
    except ConfigError as error:
        raise CheckpointError(str(error)) from None
    model = recipe_model(recipe, checkpoint.num_classes, checkpoint.in_channels, load_pretrained=False)
    gm = prepare(model, recipe.sparsity)
    load_state_dict(gm, checkpoint.model, source=f"checkpoint {str(path)!r}")
    return gm.eval(), recipe, checkpoint
