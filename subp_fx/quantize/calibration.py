"""``calibrate``: run an inference graph on sample inputs and record every tensor's value range.

The ranges (per fx node: the min and max over all calibration images) are what
``ActivationQuant.from_range`` turns into uint8 parameters; ``plan_int8`` picks the tensors that
need them. Min/max rather than a percentile: the int8 kernels saturate, and on the demo model
min/max calibration already keeps top-1 within the issue's bound (see README.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx as fx

from subp_fx.errors import CalibrationError
from subp_fx.quantize.params import ActivationQuant

# Node kinds whose outputs are activations (get_attr nodes are constants, output is no tensor).
_RECORDED_OPS = ("placeholder", "call_module", "call_function", "call_method")


@dataclass(frozen=True)
class ActivationRanges:
    """What calibration observed: ``ranges[node name] = (min, max)`` over every image, for every
    floating tensor the graph computed (its input placeholder included); ``shapes[node name]``
    is that tensor's shape in the last run (batch axis included); ``images`` how many images
    were run, in ``batches`` batches."""

    ranges: dict[str, tuple[float, float]]
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    batches: int = 0
    images: int = 0

    def __contains__(self, name: object) -> bool:
        return name in self.ranges

    def __getitem__(self, name: str) -> tuple[float, float]:
        if name not in self.ranges:
            raise KeyError(
                f"no calibrated range for node {name!r}; calibration recorded {len(self.ranges)} nodes "
                f"(floating tensor outputs only), e.g. {', '.join(list(self.ranges)[:5])}"
            )
        return self.ranges[name]

    def activation_quant(self, name: str) -> ActivationQuant:
        """The uint8 parameters of node ``name``'s output (``KeyError`` when it was not recorded)."""
        return ActivationQuant.from_range(*self[name])


class _RangeRecorder(fx.Interpreter):
    """Runs the graph, folding each floating tensor output's min / max into ``ranges``."""

    def __init__(self, gm: fx.GraphModule, ranges: dict[str, tuple[float, float]], shapes: dict):
        super().__init__(gm)
        self.ranges = ranges
        self.shapes = shapes

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if n.op in _RECORDED_OPS and isinstance(result, torch.Tensor) and result.is_floating_point():
            self._record(n, result)
        return result

    def _record(self, n: fx.Node, value: torch.Tensor) -> None:
        self.shapes[n.name] = tuple(value.shape)
        if value.numel() == 0:
            return
        low, high = (float(bound) for bound in torch.aminmax(value.detach()))
        if not (math.isfinite(low) and math.isfinite(high)):
            raise CalibrationError(
                f"node {n.name!r} ({n.op} {_target_name(n)}) computed non-finite values (range [{low}, {high}]) "
                "on the calibration data; int8 ranges need finite activations. Check the model's weights and "
                "that the calibration images are normalised as in training."
            )
        if n.name in self.ranges:
            old_low, old_high = self.ranges[n.name]
            low, high = min(low, old_low), max(high, old_high)
        self.ranges[n.name] = (low, high)


def _target_name(n: fx.Node) -> str:
    return n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))


def _compiled_shape(example_shape: Sequence[int] | None) -> tuple[int | None, tuple[int, ...] | None]:
    """(compiled batch or None, (C, H, W) or None) from ``example_shape`` (C, H, W) or (B, C, H, W)."""
    if example_shape is None:
        return None, None
    shape = tuple(example_shape)
    valid = len(shape) in (3, 4) and all(isinstance(s, (int, np.integer)) and s > 0 for s in shape)
    if not valid:
        raise CalibrationError(
            f"example_shape is {example_shape!r}; give the compiled input's (C, H, W) or (B, C, H, W) "
            "as positive integers"
        )
    shape = tuple(int(s) for s in shape)
    return (shape[0], shape[1:]) if len(shape) == 4 else (None, shape)


def _images_of(item: Any, index: int) -> torch.Tensor:
    """Batch ``index`` as a float32 tensor: a tensor or array, or the first element of an
    (images, labels) pair."""
    if isinstance(item, (tuple, list)):
        if len(item) != 2:
            raise CalibrationError(
                f"calibration batch {index} is a {type(item).__name__} of {len(item)} items; give NCHW image "
                "tensors, or (images, labels) pairs"
            )
        item = item[0]
    if isinstance(item, np.ndarray):
        item = torch.from_numpy(item)
    if not isinstance(item, torch.Tensor):
        raise CalibrationError(
            f"calibration batch {index} is a {type(item).__name__}; give NCHW float tensors (or numpy arrays), "
            "or (images, labels) pairs"
        )
    if not item.is_floating_point():
        raise CalibrationError(
            f"calibration batch {index} has dtype {item.dtype}; give float images normalised as the model "
            "expects (as its training data loader produced them)"
        )
    return item.detach().to(torch.float32)


def _check_images(images: torch.Tensor, index: int, chw: tuple[int, ...] | None, batch: int | None) -> None:
    if images.dim() != 4:
        raise CalibrationError(
            f"calibration batch {index} has shape {tuple(images.shape)} ({images.dim()}-d); calibration "
            "batches must be 4-d NCHW (images, channels, height, width)"
        )
    if images.shape[0] == 0:
        raise CalibrationError(f"calibration batch {index} holds no images (shape {tuple(images.shape)})")
    if chw is not None and tuple(images.shape[1:]) != chw:
        raise CalibrationError(
            f"calibration batch {index} has images of (C, H, W) = {tuple(images.shape[1:])}, but the model is "
            f"compiled for (C, H, W) = {chw}; give calibration images of that channel count and size"
        )
    if not bool(torch.isfinite(images).all()):
        raise CalibrationError(f"calibration batch {index} holds non-finite values (NaN or inf); give finite images")


def _single_placeholder(gm: fx.GraphModule) -> None:
    inputs = [node.name for node in gm.graph.nodes if node.op == "placeholder"]
    if len(inputs) != 1:
        raise CalibrationError(
            f"the graph takes {len(inputs)} inputs ({', '.join(inputs) or 'none'}); calibration feeds one "
            "NCHW image batch, so the graph must have exactly one placeholder"
        )


@torch.no_grad()
def calibrate(
    gm: fx.GraphModule, batches: Iterable[Any], example_shape: Sequence[int] | None = None
) -> ActivationRanges:
    """Run ``gm`` (in eval mode, without autograd) on every batch of ``batches`` and record the
    (min, max) of every floating tensor it computes, keyed by fx node name.

    ``batches``: any iterable of NCHW float tensors / numpy arrays, or of (images, labels) pairs
    (the images are used). ``example_shape``: the compiled input's (C, H, W), or (B, C, H, W): then
    every batch is also run in slices of B images, because an inference graph whose shape
    arithmetic was folded for batch B (``fold_static_shapes``) only runs at that batch size; a
    last, short slice is filled up with its own images again, which leaves every range as it is.

    Refuses (``CalibrationError`` naming the batch and what is valid): an empty iterable, a batch
    that is not a 4-d float tensor, images whose (C, H, W) differ from ``example_shape``,
    non-finite inputs, or a node that computes non-finite
    values. ``gm``'s modules are run in eval mode and their modes restored afterwards.
    """
    _single_placeholder(gm)
    batch, chw = _compiled_shape(example_shape)
    ranges: dict[str, tuple[float, float]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    modes = {module: module.training for module in gm.modules()}
    count = images_run = 0
    try:
        gm.eval()
        for index, item in enumerate(batches):
            images = _images_of(item, index)
            _check_images(images, index, chw, batch)
            for chunk in images.split(batch or images.shape[0]):
                if batch is not None and chunk.shape[0] < batch:
                    # The graph runs at batch B only: fill the short chunk with its own images again
                    # (a repeated image cannot move a min or a max).
                    chunk = chunk[torch.arange(batch) % chunk.shape[0]]
                _RangeRecorder(gm, ranges, shapes).run(chunk)
            count, images_run = count + 1, images_run + images.shape[0]
    finally:
        for module, training in modes.items():
            module.training = training
    if count == 0:
        raise CalibrationError(
            "the calibration data is empty (no batch was given); give at least one NCHW batch of images "
            "like those the model will see"
        )
    return ActivationRanges(ranges, shapes, batches=count, images=images_run)
