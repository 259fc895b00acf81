"""Running a batch in sub-batches: whether a model can, and how many samples at a time.

Why: a model compiled for batch B runs each layer on all B samples before the next layer, so at
B=8 a ResNet-50's 56x56 activations (3.2 MB a sample, 25.7 MB a batch, read again as the
residual two layers later) no longer stay in the caches between the layers that write and read
them, and its 1x1 expand convs wait on memory (in-model profile, Zen 4, 2 threads: layer1's
conv3 at 37-39% of its compute limit at B=8 against 68-74% at B=1). The same compiled layers on
fewer samples at a time keep them cached; each sub-batch rereads the weights, which at these
sizes costs less. ResNet-50 66/128 per sample (Zen 4, 32 MiB L3, 2 threads): 20.1 ms at B=1,
19.8 at B=2, 20.1-21.2 at B=4, 21.4-22.0 at B=8 as one pass.

So the lowering compiles the layers for :func:`sub_batch_size` samples and an entry function
that copies each sub-batch out of the input, runs the layers on it and stacks the outputs
(``RelaxProgram.entry_over_sub_batches``).

What it refuses: a graph in which some tensor's first axis is not the batch (a flatten or
reshape across samples, a reduction over the batch) runs as one pass: its samples are not
independent along the first axis.
"""

from __future__ import annotations

import math

from subp_fx.codegen.lowering.graph_view import GraphView
from subp_fx.codegen.runtime.manifest import SUB_BATCH_FUNCTION

# The most bytes (at 4 a value) that a sub-batch's largest activation tensor may take: ResNet-50's
# 56x56x256 maps are 3.2 MB a sample, so 2 samples at a time, the fastest above.
MAX_SUB_BATCH_ACTIVATION_BYTES = 8 * 2**20


def batch_divisors(batch: int) -> list[int]:
    """The sub-batch sizes a batch of ``batch`` samples can be cut into, smallest first."""
    return [size for size in range(1, batch + 1) if batch % size == 0]


def _tensor_shapes(view: GraphView) -> list[tuple[int, ...]]:
    """The shapes of every tensor node of the graph (parameters and buffers left out)."""
    shapes = [view.shape(node) for node in view.nodes if node.op != "get_attr"]
    return [shape for shape in shapes if shape]


def samples_are_independent(view: GraphView) -> bool:
    """Whether every tensor of the graph (input, intermediate, output) has the batch as its first
    axis: the condition for cutting the batch anywhere along it."""
    batch = view.input_shape[0]
    parts = [part for node in view.nodes for part in (view.part_shapes(node) or ()) if part]
    return all(shape[0] == batch for shape in _tensor_shapes(view) + parts)


def sub_batch_size(view: GraphView) -> int:
    """The largest divisor of the batch B whose largest activation tensor takes at most
    :data:`MAX_SUB_BATCH_ACTIVATION_BYTES` (at least 1); B when the samples are not independent
    (:func:`samples_are_independent`) or B already fits."""
    batch = view.input_shape[0]
    if batch == 1 or not samples_are_independent(view):
        return batch
    per_sample = max(4 * math.prod(shape[1:]) for shape in _tensor_shapes(view))
    fitting = [size for size in batch_divisors(batch) if size * per_sample <= MAX_SUB_BATCH_ACTIVATION_BYTES]
    return max(fitting, default=1)


__all__ = [
    "MAX_SUB_BATCH_ACTIVATION_BYTES",
    "SUB_BATCH_FUNCTION",
    "batch_divisors",
    "samples_are_independent",
    "sub_batch_size",
]
