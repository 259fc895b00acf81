"""What a graph must already be before it is lowered: folded, converted, its shapes constants.

``lower_graph`` lowers the *inference* form of a model: every SUBP conv converted to its compact
``BlockSparseConv2d`` (``passes.convert``; a masked ``SUBPConv2d`` has no 1xN kernel), every
batch norm that ``passes.fold_batchnorm`` can fold folded (an unfolded one would cost a separate
pass over memory, silently), and every Python value computed from a static shape a constant
(``passes.fold_static_shapes``: the lowering has no rule for ``x.size()`` arithmetic). ``compile``
runs these passes first (``pipeline.inference_graph``); a caller of ``lower_graph`` must too. A
batch norm that cannot be folded (see ``batchnorm_plan``) is allowed: it runs as a per-channel
kernel and the compile report says why.
"""

from __future__ import annotations

import torch.fx as fx

from subp_fx.algorithm.modules import SUBPConv2d
from subp_fx.errors import ConversionError
from subp_fx.passes.fold_batchnorm import batchnorm_plan
from subp_fx.passes.fold_static_shapes import shape_queries


def _listed(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_inference_graph(gm: fx.GraphModule) -> None:
    """Raise :class:`ConversionError` naming the layers when ``gm`` still holds an unconverted SUBP
    conv, a batch norm that ``fold_batchnorm`` would fold, or a shape query that
    ``fold_static_shapes`` would fold."""
    problems = []
    unconverted = [name for name, module in gm.named_modules() if isinstance(module, SUBPConv2d)]
    if unconverted:
        problems.append(
            f"SUBP conv(s) {_listed(unconverted)} are not converted: run subp_fx.convert first (it makes each a "
            "BlockSparseConv2d holding only its kept 1xN blocks)"
        )
    foldable, _ = batchnorm_plan(gm)
    if foldable:
        problems.append(
            f"batch norm(s) {_listed([str(node.target) for node in foldable])} can be folded into their convs but are "
            "not: run subp_fx.fold_batchnorm first"
        )
    queries = shape_queries(gm)
    if queries:
        problems.append(
            f"node(s) {_listed([node.name for node in queries])} read a tensor's shape: run "
            "subp_fx.passes.fold_static_shapes(gm, example_input_shape) first (it makes such values constants)"
        )
    if problems:
        raise ConversionError(
            "lower_graph lowers a model's inference form (compile runs these passes itself); " + "; ".join(problems)
        )
