"""Copies that cut a batch into sub-batches and put the sub-batches' results back together.

A model compiled in sub-batches (``lowering.sub_batches``) runs its layers on ``count`` samples
at a time: its entry function copies rows ``[start, start + count)`` of the input out
(:func:`batch_rows_primfunc`), calls the sub-batch function on them, and stacks the results
(:func:`stack_rows_primfunc`). Both see tensors as (samples, elements per sample): the caller
reshapes to and from that view (a Relax reshape of a contiguous tensor is free).

Schedule: parallel over (sample, element chunk), the elements in vectors that divide the row.
"""

from __future__ import annotations

from tvm import s_tir, te, tirx

from subp_fx.codegen.kernels.loops import DTYPE, vectorize_split


def _scheduled(arguments: list[te.Tensor], elements: int, lanes: int) -> tirx.PrimFunc:
    sch = s_tir.Schedule(te.create_prim_func(arguments))
    sample, element = sch.get_loops(sch.get_sblock(arguments[-1].op.name))
    outer = vectorize_split(sch, element, elements, lanes)
    sch.parallel(sch.fuse(sample, outer))
    return sch.mod["main"]


def batch_rows_primfunc(samples: int, elements: int, start: int, count: int, lanes: int) -> tirx.PrimFunc:
    """(samples, elements) -> its rows [start, start + count)."""
    if not 0 <= start < start + count <= samples:
        raise ValueError(f"rows [{start}, {start + count}) are not within a batch of {samples}")
    data = te.placeholder((samples, elements), DTYPE, name="data")
    rows = te.compute((count, elements), lambda b, e: data[b + start, e], name="rows")
    return _scheduled([data, rows], elements, lanes)


def stack_rows_primfunc(parts: int, count: int, elements: int, lanes: int, dtype: str = DTYPE) -> tirx.PrimFunc:
    """``parts`` tensors of (count, elements) -> (parts * count, elements), in argument order."""
    if parts < 1 or count < 1:
        raise ValueError(f"need parts >= 1 and count >= 1, got parts={parts}, count={count}")
    inputs = [te.placeholder((count, elements), dtype, name=f"part{index}") for index in range(parts)]

    def pick(b, e):
        value = inputs[-1][b - (parts - 1) * count, e]
        for index in range(parts - 2, -1, -1):
            # if_then_else, not Select: only the chosen part may be read (Select reads both)
            value = tirx.if_then_else(b < (index + 1) * count, inputs[index][b - index * count, e], value)
        return value

    stacked = te.compute((parts * count, elements), pick, name="stacked")
    return _scheduled([*inputs, stacked], elements, lanes)


__all__ = ["batch_rows_primfunc", "stack_rows_primfunc"]
