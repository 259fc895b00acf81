"""kernels.batch_split: copying a sub-batch's rows out of a batch and stacking sub-batch results,
against numpy, on odd sizes; both parallel and vectorised; bad row ranges refused."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from subp_fx.codegen.kernels.batch_split import batch_rows_primfunc, stack_rows_primfunc  # noqa: E402
from subp_fx.codegen.target import parse_target  # noqa: E402

TARGET = parse_target("llvm -mcpu=native")
LANES = 8


def _run(function, inputs: list[np.ndarray], out_shape: tuple[int, ...], dtype: str = "float32") -> np.ndarray:
    executable = tvm.compile(tvm.IRModule({"main": function.with_attr("global_symbol", "main")}), target=TARGET)
    out = tvm.runtime.empty(out_shape, dtype)
    executable.jit()["main"](*[tvm.runtime.tensor(array) for array in inputs], out)
    return out.numpy()


@pytest.mark.parametrize(("samples", "elements", "start", "count"), [(4, 24, 2, 2), (6, 13, 0, 3), (5, 40, 4, 1)])
def test_batch_rows_copies_exactly_the_rows(samples, elements, start, count):
    data = np.random.default_rng(0).standard_normal((samples, elements)).astype(np.float32)
    function = batch_rows_primfunc(samples, elements, start, count, LANES)
    assert "T.parallel(" in function.script()
    np.testing.assert_array_equal(_run(function, [data], (count, elements)), data[start : start + count])


@pytest.mark.parametrize(("parts", "count", "elements"), [(4, 2, 10), (3, 1, 16), (1, 3, 7)])
def test_stack_rows_puts_the_parts_back_in_order(parts, count, elements):
    rng = np.random.default_rng(1)
    pieces = [rng.standard_normal((count, elements)).astype(np.float32) for _ in range(parts)]
    function = stack_rows_primfunc(parts, count, elements, LANES)
    np.testing.assert_array_equal(_run(function, pieces, (parts * count, elements)), np.concatenate(pieces))


def test_stack_rows_keeps_another_dtype():
    pieces = [np.full((2, 5), value, dtype=np.uint8) for value in (3, 200)]
    stacked = _run(stack_rows_primfunc(2, 2, 5, LANES, "uint8"), pieces, (4, 5), "uint8")
    np.testing.assert_array_equal(stacked, np.concatenate(pieces))


@pytest.mark.parametrize(("start", "count"), [(3, 2), (-1, 1), (0, 0)])
def test_rows_outside_the_batch_are_refused(start, count):
    with pytest.raises(ValueError, match="are not within a batch of 4"):
        batch_rows_primfunc(4, 8, start, count, LANES)
