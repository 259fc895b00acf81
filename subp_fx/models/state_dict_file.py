"""Load weights from a local state-dict file, with errors that say what does not fit and why.

Pretrained weights are how pruning usually starts (dense ImageNet ResNet -> SUBP fine-tuning), and
they never come from the network here: the user points at a file. Files are read with
``weights_only=True``: a checkpoint is data, and unpickling arbitrary objects would run code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from subp_fx.errors import CheckpointError

# Keys under which training scripts commonly nest the model's state dict.
_WRAPPER_KEYS = ("state_dict", "model")
# Prefix DistributedDataParallel / DataParallel put in front of every key.
_PARALLEL_PREFIX = "module."
# How many offending keys an error message lists before summarising the rest.
_SHOWN_KEYS = 5


# Longest excerpt of torch.load's own error kept in ours (its messages run to several sentences).
_DETAIL_CHARS = 120


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else "no detail"
    return line if len(line) <= _DETAIL_CHARS else line[: _DETAIL_CHARS - 3] + "..."


def _read(path: Path) -> object:
    if not path.exists():
        raise CheckpointError(
            f"checkpoint file {str(path)!r} does not exist; pass the path of a local state-dict file "
            "(e.g. one written by torch.save(model.state_dict(), path)); weights are never downloaded"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint path {str(path)!r} is not a file; pass the path of a state-dict file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load signals corruption through many exception types
        raise CheckpointError(
            f"cannot read checkpoint file {str(path)!r} ({type(exc).__name__}: {_first_line(exc)}); "
            "it is truncated, corrupt, not a torch.save file, or holds Python objects other than tensors "
            "(loading uses weights_only=True); re-save it with torch.save(model.state_dict(), path)"
        ) from exc


def extract_state_dict(content: object, path: Path | str) -> dict[str, torch.Tensor]:
    """The tensor mapping inside a file: accepts a bare state dict, one nested under
    ``state_dict`` or ``model``, and keys prefixed with ``module.`` by DDP."""
    while isinstance(content, Mapping):
        wrapper = next((key for key in _WRAPPER_KEYS if isinstance(content.get(key), Mapping)), None)
        if wrapper is None:
            break
        content = content[wrapper]
    if not isinstance(content, Mapping) or not all(isinstance(value, torch.Tensor) for value in content.values()):
        found = type(content).__name__
        if isinstance(content, Mapping):
            found = f"a dict with non-tensor entries (keys: {_listed(list(content))})"
        raise CheckpointError(
            f"checkpoint file {str(path)!r} holds {found}, not a state dict; expected a mapping of parameter "
            f"names to tensors, bare or under one of the keys {', '.join(map(repr, _WRAPPER_KEYS))}"
        )
    return {_strip_parallel_prefix(str(key)): tensor for key, tensor in content.items()}


def _strip_parallel_prefix(key: str) -> str:
    return key[len(_PARALLEL_PREFIX) :] if key.startswith(_PARALLEL_PREFIX) else key


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return shown + (f" and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else "")


@dataclass(frozen=True)
class _Misfit:
    """How a file's state dict differs from the model's."""

    missing: list[str]
    unexpected: list[str]
    shape_mismatches: list[str]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shape_mismatches)

    def describe(self) -> str:
        parts = [
            f"{len(keys)} {what}: {_listed(keys)}"
            for what, keys in (
                ("missing key(s)", self.missing),
                ("unexpected key(s)", self.unexpected),
                ("shape mismatch(es)", self.shape_mismatches),
            )
            if keys
        ]
        return "; ".join(parts)


def _misfit(model: nn.Module, state: dict[str, torch.Tensor], strict: bool) -> _Misfit:
    expected = model.state_dict()
    return _Misfit(
        missing=[key for key in expected if key not in state] if strict else [],
        unexpected=[key for key in state if key not in expected] if strict else [],
        shape_mismatches=[
            f"{key} is {tuple(tensor.shape)} in the file but {tuple(expected[key].shape)} in the model"
            for key, tensor in state.items()
            if key in expected and tensor.shape != expected[key].shape
        ],
    )


def _fix_hint(strict: bool, misfit: _Misfit) -> str:
    hint = "Build the model the file was saved from (same architecture, num_classes, in_channels and small_input)"
    if strict and (misfit.missing or misfit.unexpected):
        hint += ", or pass strict=False to load only the keys both have"
    if misfit.shape_mismatches:
        hint += (
            "; to reuse the rest of the file, delete the mismatched keys from the loaded dict "
            "and load it with strict=False"
        )
    return hint


def load_state_dict_file(
    model: nn.Module, path: str | Path, strict: bool = True
) -> nn.modules.module._IncompatibleKeys:
    """Load a local torchvision-format state-dict file into ``model`` in place.

    ``strict=True`` requires the file's keys to match the model's exactly; ``strict=False`` loads
    the keys both have and returns the ones that were not (``missing_keys``, ``unexpected_keys``).
    Shapes must match either way. Raises ``CheckpointError`` for a missing, unreadable or corrupt
    file and for keys or shapes that do not fit, naming the file and the first offending keys.
    """
    path = Path(path)
    return load_state_dict(
        model, extract_state_dict(_read(path), path), source=f"checkpoint file {str(path)!r}", strict=strict
    )


def load_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], source: str, strict: bool = True
) -> nn.modules.module._IncompatibleKeys:
    """``model.load_state_dict(state)`` that first checks the fit and raises ``CheckpointError``
    naming ``source`` and the first offending keys."""
    misfit = _misfit(model, state, strict)
    if misfit:
        raise CheckpointError(
            f"{source} does not fit the {type(model).__name__} model: {misfit.describe()}. {_fix_hint(strict, misfit)}"
        )
    return model.load_state_dict(state, strict=strict)
