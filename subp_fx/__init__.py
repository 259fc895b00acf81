"""subp-fx: Soft Uniform Block Pruning (1xN block sparsity) for CNNs, from torch.fx to fast CPU code."""

from subp_fx.config import LayerSelection, SparsityConfig
from subp_fx.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    SelectionError,
    SubpError,
    UntraceableModelError,
)
from subp_fx.masks import block_importance, expand_block_mask, kept_per_row, prune_rate_at, to_block_layout, uniform_block_mask
from subp_fx.modules import MaskUpdate, SUBPConv2d
from subp_fx.passes import dry_run, format_dry_run, masks_are_final, prepare, update_masks
from subp_fx.block_sparse import BlockSparseConv2d
from subp_fx.errors import ConversionError
from subp_fx.passes import convert, fold_batchnorm, impose_random_masks

__version__ = "0.1.0"

__all__ = [
    "CompiledModel",
    "compile",
    "load_compiled",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "LayerSelection",
    "MaskUpdate",
    "SUBPConv2d",
    "SelectionError",
    "SparsityConfig",
    "SubpError",
    "UntraceableModelError",
    "block_importance",
    "dry_run",
    "expand_block_mask",
    "format_dry_run",
    "kept_per_row",
    "masks_are_final",
    "prepare",
    "prune_rate_at",
    "to_block_layout",
    "uniform_block_mask",
    "update_masks",
    "BlockSparseConv2d",
    "ConversionError",
    "convert",
    "fold_batchnorm",
    "impose_random_masks",
]


# The compile API lives in subp_fx.codegen, the only package that imports TVM; importing
# subp_fx for training must not pay for (or require) TVM.
_CODEGEN_NAMES = {"compile", "load_compiled", "CompiledModel"}


def __getattr__(name: str):
    if name in _CODEGEN_NAMES:
        from subp_fx.codegen import api

        return getattr(api, name)
    raise AttributeError(f"module 'subp_fx' has no attribute {name!r}")
