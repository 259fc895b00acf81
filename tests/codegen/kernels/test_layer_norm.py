"""kernels.layer_norm: LayerNorm over the last axis against torch, on odd shapes."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from subp_fx.codegen.kernels.layer_norm import layer_norm_primfunc  # noqa: E402
from subp_fx.codegen.target import parse_target  # noqa: E402


def _build(rows, channels, eps, weight, bias, lanes=8, target="llvm"):
    function = layer_norm_primfunc(rows, channels, eps, weight, bias, lanes).with_attr("global_symbol", "k")
    return tvm.compile(tvm.IRModule({"k": function}), target=parse_target(target)).jit()


@pytest.mark.parametrize(
    ("rows", "channels", "weight", "bias"),
    [(7, 24, True, True), (5, 13, False, True), (3, 5, True, False), (1, 96, False, False), (6, 1, True, True)],
)
def test_layer_norm_matches_torch(rows, channels, weight, bias):
    rng = np.random.default_rng(rows * 100 + channels)
    # A large mean against a small spread: the two-pass variance keeps its precision there.
    x = (rng.standard_normal((rows, channels)) * 0.5 + 20.0).astype(np.float32)
    w = rng.standard_normal(channels).astype(np.float32)
    b = rng.standard_normal(channels).astype(np.float32)
    eps = 1e-6
    module = _build(rows, channels, eps, weight, bias)
    arguments = [tvm.runtime.tensor(x)]
    arguments += [tvm.runtime.tensor(w)] if weight else []
    arguments += [tvm.runtime.tensor(b)] if bias else []
    out = tvm.runtime.empty((rows, channels), "float32")
    module["k"](*arguments, out)
    expected = F.layer_norm(
        torch.from_numpy(x).double(),
        (channels,),
        torch.from_numpy(w).double() if weight else None,
        torch.from_numpy(b).double() if bias else None,
        eps,
    ).numpy()
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=2e-5)


def test_layer_norm_sums_and_writes_in_vectors():
    # Compiled (not run) for AVX2, whatever this machine has: 8-lane sums and writes.
    asm = _build(4, 96, 1e-6, True, True, target="llvm -mcpu=znver3").inspect_source("asm")
    assert "vaddps\t%ymm" in asm or "vaddps %ymm" in asm
    assert "vmovups\t%ymm" in asm or "vmovups %ymm" in asm
