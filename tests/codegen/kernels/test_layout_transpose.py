"""kernels.layout.transpose_primfunc: any axis permutation, as numpy.transpose."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from subp_fx.codegen.kernels.layout import transpose_primfunc  # noqa: E402
from subp_fx.codegen.target import parse_target  # noqa: E402


@pytest.mark.parametrize(
    ("shape", "axes"),
    [
        ((2, 3, 5, 7), (0, 3, 1, 2)),
        ((2, 5, 3, 7), (0, 2, 1, 3)),
        ((3, 5, 7), (2, 0, 1)),
        ((5, 3), (1, 0)),
        ((7,), (0,)),
    ],
)
def test_transpose_matches_numpy(shape, axes):
    function = transpose_primfunc(shape, axes, 8).with_attr("global_symbol", "k")
    module = tvm.compile(tvm.IRModule({"k": function}), target=parse_target("llvm")).jit()
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    expected = np.transpose(x, axes)
    out = tvm.runtime.empty(expected.shape, "float32")
    module["k"](tvm.runtime.tensor(x), out)
    np.testing.assert_array_equal(out.numpy(), expected)


def test_transpose_refuses_axes_that_are_not_a_permutation():
    with pytest.raises(ValueError, match=r"axes \(0, 0, 1\) is not a permutation of the 3 axes"):
        transpose_primfunc((2, 3, 4), (0, 0, 1), 8)
