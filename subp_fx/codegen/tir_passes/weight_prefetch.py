"""Prefetching the next block-row's weights while a kernel reduces over the current one's.

Why: in a model run the weights of the deep layers arrive from DRAM (ResNet-50's kept weights,
48 MB at 66/128, do not stay in a 32 MB L3 from one image to the next), and a block-row's
weights are read as a stream the hardware prefetchers do not run far enough ahead of: one
64-byte line every 7 FMAs for a 1 x 7 tile, about 2 ns at Zen 4's clock, against some 100 ns
from DRAM. Timed alone with a fresh copy of the weights each call (Zen 4, 2 threads, 66/128
kept; in place -> prefetching one block-row ahead): 1x1 2048->512 at 7x7 293 -> 242 us (warm
228 either way), 1x1 512->2048 with a residual 306 -> 240 us, 3x3 512->512 at 7x7 561 -> 533 us,
1x1 1024->256 at 14x14 ("pixels" mode) 273 -> 241 us; at 23% kept, 2048->512 139 -> 111 us
(warm 104). ``prefetcht1`` (into the L2) did better than ``prefetcht0`` (265 us for the first
layer: the lines arrive a whole block-row early and would crowd the L1) and as well as
``prefetcht2``.

The pattern (after TVM's TIR lowering: blocks gone, buffers flat, vectors as ramps): a loop
annotated :data:`PREFETCH_AHEAD` (the kernel's schedule puts it on its reduction loop over kept
channels, with the distance, in elements, from a block-row's weights to the next one's). The
rewrite: after the loop body's last statement, one ``llvm.prefetch`` (read, locality 2, data)
per distinct cache line of that buffer which the body's top-level stores and bindings load (the
fp32 kernel loads weights in its stores, the int8 / bf16 nest binds them first), at the same
address plus the distance. The prefetch of the last block-row's successor points past the
buffer: x86's and AArch64's prefetch instructions never fault. The annotation is removed.
"""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.sym.analyzer import Analyzer

from subp_fx.codegen.tir_passes.rewrite import rewrite_outermost

# On a loop: {"buffer": name of the weights buffer, "distance": elements from a weight read to
# the one prefetched (a block-row's weights to the next one's), "line": elements per cache line}.
PREFETCH_AHEAD = "subp_fx.prefetch_ahead"
# float32 elements in a 64-byte cache line
FLOATS_PER_LINE = 16
# llvm.prefetch(address, rw, locality, cache type): a read, kept in the L2 (module docstring), data.
_READ, _LOCALITY_L2, _DATA = 0, 2, 1


def prefetch_plan(buffer: str, distance: int, line: int = FLOATS_PER_LINE) -> dict:
    """The :data:`PREFETCH_AHEAD` annotation's value: prefetch ``buffer`` ``distance`` elements
    ahead of each vector load of it, once per ``line`` elements."""
    return {"buffer": buffer, "distance": int(distance), "line": int(line)}


def _is_buffer(name: str, buffer_name: str) -> bool:
    """Whether ``name`` is the buffer ``buffer_name`` or the flat view lowering made of it
    (``values`` -> ``values_1``)."""
    return name == buffer_name or (name.startswith(buffer_name + "_") and name[len(buffer_name) + 1 :].isdigit())


def _loads(expr, buffer_name: str, found: list) -> None:
    """Append to ``found`` every vector load of ``buffer_name`` in ``expr`` (as (buffer, ramp base))."""
    if isinstance(expr, tvm.ir.expr.TensorLoad):
        index = expr.indices[0] if len(expr.indices) == 1 else None
        if _is_buffer(expr.source.name, buffer_name) and isinstance(index, tirx.Ramp):
            found.append((expr.source, index.base))
        for index in expr.indices:
            _loads(index, buffer_name, found)
        return
    for field in ("a", "b", "value", "base", "condition", "true_value", "false_value"):
        child = getattr(expr, field, None)
        if isinstance(child, tvm.ir.expr.Expr):
            _loads(child, buffer_name, found)
    for child in getattr(expr, "args", None) or getattr(expr, "vectors", None) or ():
        if isinstance(child, tvm.ir.expr.Expr):
            _loads(child, buffer_name, found)


def _distinct_lines(bases: list, line: int, bindings: list) -> list:
    """The bases that start a new cache line. With the body's ``bindings`` (its ``Bind``
    statements: lowering's common-subexpression variables) known, a base a constant distance from
    the first one falls on the line of that distance // ``line``; bases the analyser cannot
    compare with the first are kept unless one equal to them was."""
    analyzer = Analyzer()
    for binding in bindings:
        analyzer.bind(binding.var, binding.value)
    kept: list = []
    lines_seen: set[int] = set()
    for base in bases:
        offset = analyzer.simplify(base - bases[0])
        if isinstance(offset, tirx.IntImm):
            if int(offset) // line in lines_seen:
                continue
            lines_seen.add(int(offset) // line)
        elif any(analyzer.can_prove_equal(base, other) for other in kept):
            continue
        kept.append(base)
    return kept


def prefetch_next_block_row(loop: tirx.For) -> tirx.For:
    """The rewrite of one annotated loop (module docstring)."""
    plan = loop.annotations[PREFETCH_AHEAD]
    buffer_name, distance, line = str(plan["buffer"]), int(plan["distance"]), int(plan["line"])
    body = list(loop.body.seq) if isinstance(loop.body, tirx.SeqStmt) else [loop.body]
    found: list = []
    for statement in body:
        if isinstance(statement, (tirx.BufferStore, tirx.Bind)):  # a store's value, or a bound one
            _loads(statement.value, buffer_name, found)
    annotations = {key: value for key, value in loop.annotations.items() if key != PREFETCH_AHEAD}
    prefetches = []
    if found:
        buffer = found[0][0]
        bindings = [statement for statement in body if isinstance(statement, tirx.Bind)]
        for base in _distinct_lines([base for _, base in found], line, bindings):
            address = tirx.call_intrin("handle", "tirx.address_of", tirx.BufferLoad(buffer, [base + distance]))
            call = tirx.call_llvm_intrin(
                "void",
                "llvm.prefetch.p0",
                address,
                tirx.const(_READ, "int32"),
                tirx.const(_LOCALITY_L2, "int32"),
                tirx.const(_DATA, "int32"),
            )
            prefetches.append(tirx.Evaluate(call))
    # After the body: a base may be a variable bound inside it.
    new_body = tirx.SeqStmt(body + prefetches) if prefetches else loop.body
    return tirx.For(
        loop.loop_var, loop.min, loop.extent, loop.kind, new_body, loop.thread_binding, annotations, loop.step
    )


def _is_annotated(stmt) -> bool:
    return isinstance(stmt, tirx.For) and PREFETCH_AHEAD in stmt.annotations


def weight_prefetch() -> tvm.transform.Pass:
    """The PrimFunc pass: every :data:`PREFETCH_AHEAD` loop of every function. Run it after TVM's
    TIR lowering (buffers flat, vector loads as ramps)."""

    @tvm.tirx.transform.prim_func_pass(opt_level=0, name="subp_fx.WeightPrefetch")
    def _pass(func, _mod, _ctx):
        body = rewrite_outermost(func.body, _is_annotated, prefetch_next_block_row)
        return func if body.same_as(func.body) else func.with_body(body)

    return _pass


__all__ = ["FLOATS_PER_LINE", "PREFETCH_AHEAD", "prefetch_next_block_row", "prefetch_plan", "weight_prefetch"]
