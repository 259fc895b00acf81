"""Fully connected layer: out = act(x @ weight.T + bias), with the weight prepacked for vectors.

Layout: the (O, I) weight is packed as ``(O_pad / V, I, V)``: for each block of V output
features, the I rows of V contiguous floats the reduction walks in order (V = two vector
registers, or one when O is small). O is padded to a multiple of V with zero features, and the
kernel writes the padded (B, O_pad) output (the lowering slices the extras off).

Schedule: parallel over (batch tile, output block); inside, the reduction over I accumulates a
register tile of (batch tile <= 4) x V in vector registers, then bias and activation are applied
on the registers before the single store. At batch 1 this is a weight-streaming GEMV: every
weight is read once, sequentially, split across the threads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tvm import s_tir, te, tirx

from subp_fx.codegen import activations
from subp_fx.codegen.kernels.loops import (
    ACCUMULATOR_SCOPE,
    DTYPE,
    lane_chunk,
    unroll_then_vectorize_below,
)

MAX_BATCH_TILE = 4


@dataclass(frozen=True)
class LinearSpec:
    """Static shape of one linear layer; ``block`` is V, the output features per vector block."""

    batch: int
    in_features: int
    out_features: int
    block: int
    bias: bool = True
    activation: str = "none"

    @property
    def padded_out_features(self) -> int:
        return math.ceil(self.out_features / self.block) * self.block

    @property
    def weight_shape(self) -> tuple[int, int, int]:
        return (self.padded_out_features // self.block, self.in_features, self.block)

    @property
    def out_shape(self) -> tuple[int, int]:
        return (self.batch, self.padded_out_features)

    @property
    def batch_tile(self) -> int:
        return lane_chunk(self.batch, MAX_BATCH_TILE)


def linear_block(out_features: int, lanes: int) -> int:
    """V: two vector registers of outputs per block, one when there are few outputs."""
    return 2 * lanes if out_features > 2 * lanes else lanes


def pack_linear_weight(weight: np.ndarray, block: int) -> np.ndarray:
    """(O, I) -> (O_pad / V, I, V), zero rows for the padded outputs."""
    out_features, in_features = weight.shape
    padded = math.ceil(out_features / block) * block
    full = np.zeros((padded, in_features), dtype=np.float32)
    full[:out_features] = weight
    return np.ascontiguousarray(full.reshape(padded // block, block, in_features).transpose(0, 2, 1))


def pad_bias(bias: np.ndarray, spec: LinearSpec) -> np.ndarray:
    padded = np.zeros(spec.padded_out_features, dtype=np.float32)
    padded[: spec.out_features] = bias
    return padded


def linear_primfunc(spec: LinearSpec, lanes: int) -> tirx.PrimFunc:
    """The scheduled kernel; buffer arguments (x (B, I), weight (O_pad/V, I, V)[, bias (O_pad,)], out (B, O_pad))."""
    V = spec.block
    x = te.placeholder((spec.batch, spec.in_features), DTYPE, name="x")
    weight = te.placeholder(spec.weight_shape, DTYPE, name="weight")
    i = te.reduce_axis((0, spec.in_features), name="i")
    product = te.compute(
        spec.out_shape, lambda b, o: te.sum(x[b, i] * weight[o // V, i, o % V], axis=i), name="product"
    )
    arguments = [x, weight]
    bias = None
    if spec.bias:
        bias = te.placeholder((spec.padded_out_features,), DTYPE, name="bias")
        arguments.append(bias)
    activate = activations.expression(spec.activation)
    out = te.compute(
        spec.out_shape,
        lambda b, o: activate(product[b, o] + bias[o] if bias is not None else product[b, o]),
        name="out",
    )
    sch = s_tir.Schedule(te.create_prim_func([*arguments, out]))
    block = sch.get_sblock("product")
    b, o, reduction = sch.get_loops(block)
    batch_tile, batch_in_tile = sch.split(b, [None, spec.batch_tile])
    out_block, lane = sch.split(o, [None, V])
    sch.reorder(batch_tile, out_block, reduction, batch_in_tile, lane)
    task = sch.fuse(batch_tile, out_block)
    sch.parallel(task)
    out_stage = sch.get_sblock("out")
    sch.reverse_compute_at(out_stage, task)
    sch.set_scope(block, 0, ACCUMULATOR_SCOPE)
    sch.unroll(batch_in_tile)
    sch.vectorize(lane)
    init = sch.decompose_reduction(block, reduction)
    unroll_then_vectorize_below(sch, init, 1)
    unroll_then_vectorize_below(sch, out_stage, 1)
    return sch.mod["main"]
