"""torch.fx passes: each a plain function over a GraphModule, documented with what it rewrites
and what it refuses."""

from subp_fx.passes.convert import ConvertedConv, convert
from subp_fx.passes.drop_identities import drop_identities
from subp_fx.passes.dry_run import ConvPlan, DryRunReport, dry_run, format_dry_run
from subp_fx.passes.fold_batchnorm import fold_batchnorm
from subp_fx.passes.fold_constants import fold_constants
from subp_fx.passes.fold_layer_scale import fold_layer_scale
from subp_fx.passes.fold_static_shapes import fold_static_shapes
from subp_fx.passes.fuse_channel_shuffle import fuse_channel_shuffles
from subp_fx.passes.impose_random_masks import impose_random_masks
from subp_fx.passes.modularize_functional import modularize_functional
from subp_fx.passes.prepare import prepare, subp_modules
from subp_fx.passes.select import ConvDecision, select_convs
from subp_fx.passes.strip_masks import strip_masks
from subp_fx.passes.trace import trace
from subp_fx.passes.update import decay_pruned_weights, masks_are_final, update_masks

__all__ = [
    "ConvDecision",
    "ConvPlan",
    "DryRunReport",
    "decay_pruned_weights",
    "dry_run",
    "format_dry_run",
    "masks_are_final",
    "prepare",
    "select_convs",
    "subp_modules",
    "trace",
    "update_masks",
    "ConvertedConv",
    "convert",
    "drop_identities",
    "fold_batchnorm",
    "fold_constants",
    "fold_layer_scale",
    "fold_static_shapes",
    "fuse_channel_shuffles",
    "impose_random_masks",
    "modularize_functional",
    "strip_masks",
]
