"""subp-fx: Soft Uniform Block Pruning (1xN block sparsity) for CNNs, from torch.fx to fast CPU code.

Names are imported on first use (PEP 562), so ``import subp_fx`` is cheap and a deployment that
only loads a compiled model (``subp_fx.load_compiled``) needs numpy and the TVM runtime, not torch.
"""

from __future__ import annotations

from subp_fx.lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "LayerSelection": "subp_fx.algorithm.config",
    "SparsityConfig": "subp_fx.algorithm.config",
    "SubpError": "subp_fx.errors",
    "ConfigError": "subp_fx.errors",
    "DataError": "subp_fx.errors",
    "CheckpointError": "subp_fx.errors",
    "UntraceableModelError": "subp_fx.errors",
    "SelectionError": "subp_fx.errors",
    "ConversionError": "subp_fx.errors",
    "UnsupportedOpError": "subp_fx.errors",
    "ArtifactError": "subp_fx.errors",
    "CalibrationError": "subp_fx.errors",
    "block_importance": "subp_fx.algorithm.masks",
    "uniform_block_mask": "subp_fx.algorithm.masks",
    "prune_rate_at": "subp_fx.algorithm.masks",
    "to_block_layout": "subp_fx.algorithm.masks",
    "expand_block_mask": "subp_fx.algorithm.masks",
    "kept_per_row": "subp_fx.algorithm.masks",
    "SUBPConv2d": "subp_fx.algorithm.modules",
    "MaskUpdate": "subp_fx.algorithm.modules",
    "BlockSparseConv2d": "subp_fx.algorithm.block_sparse",
    "prepare": "subp_fx.passes",
    "dry_run": "subp_fx.passes",
    "format_dry_run": "subp_fx.passes",
    "update_masks": "subp_fx.passes",
    "masks_are_final": "subp_fx.passes",
    "fold_batchnorm": "subp_fx.passes",
    "convert": "subp_fx.passes",
    "impose_random_masks": "subp_fx.passes",
    "strip_masks": "subp_fx.passes",
    # The compile API lives in subp_fx.codegen, the only package that imports TVM.
    "compile": "subp_fx.codegen.pipeline",
    "load_compiled": "subp_fx.codegen.runtime.compiled",
    "CompiledModel": "subp_fx.codegen.runtime.compiled",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports("subp_fx", globals(), _EXPORTS)
