"""Which convs a compile runs by Winograd (fp32 3x3 stride-1 convs with enough output tiles and kept
channels, sparse or dense, any N), what the kernel table says of them, and the compiled model
against eager."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from subp_fx.codegen.kernels import winograd  # noqa: E402
from subp_fx.codegen.pipeline import compile  # noqa: E402
from subp_fx.passes import impose_random_masks  # noqa: E402
from subp_fx.passes.strip_masks import strip_masks  # noqa: E402

RELATIVE_TOLERANCE = 1e-4
WINOGRAD = f"winograd F({winograd.DEFAULT_OUTPUT_TILE}x{winograd.DEFAULT_OUTPUT_TILE},3x3)"


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)  # dense (stem), 16x16, K = 3: direct
        self.body = nn.Conv2d(32, 64, 3, padding=1)  # sparse, 16x16
        self.body2 = nn.Conv2d(64, 64, 3, padding=1)  # sparse, with a residual
        self.down = nn.Conv2d(64, 64, 3, stride=2, padding=1)  # stride 2: direct
        self.small = nn.Conv2d(64, 64, 3, padding=1)  # 8x8: 4 tiles, direct
        self.fc = nn.Linear(64, 5)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(self.body(x))
        x = F.relu(self.body2(x) + x)
        x = F.relu(self.down(x))
        x = F.relu(self.small(x))
        return self.fc(x.mean((2, 3)))


def _model(N: int) -> nn.Module:
    torch.manual_seed(0)
    return impose_random_masks(Net(), prune_rate=0.5, N=N, seed=1).eval()


@pytest.mark.parametrize("N", [16, 32])
@pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense-twin"])
def test_3x3_stride_1_convs_with_16_tiles_run_by_winograd_and_match_eager(N, dense):
    gm = _model(N)
    gm = strip_masks(gm).eval() if dense else gm
    compiled = compile(gm, (1, 3, 16, 16), threads=2)
    entries = {entry.layer: entry for entry in compiled.kernel_table}
    assert {name for name, entry in entries.items() if entry.algorithm == WINOGRAD} == {"body", "body2"}
    for name in ("stem", "down", "small", "fc"):
        assert entries[name].algorithm == "direct" and entries[name].executed_macs is None
    body = entries["body"]
    assert body.kind == ("dense" if dense else "sparse") and body.tile.startswith("winograd F(4x4,3x3)")
    assert body.executed_macs == winograd.gemm_macs(
        winograd.kernel_spec(_body_spec(body.kept_per_row, N)), winograd.DEFAULT_OUTPUT_TILE
    )
    assert body.work_macs < body.macs == 16 * 16 * 64 * body.kept_per_row * 9
    assert "winograd4" in body.kernel and "N16" in body.kernel  # N=32 runs as rows of 16
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = gm(x).numpy()
    np.testing.assert_allclose(compiled(x), expected, rtol=0, atol=RELATIVE_TOLERANCE * np.abs(expected).max())


def _body_spec(kept: int, N: int):
    from subp_fx.codegen.kernels.spec import BlockSparseConvSpec

    return BlockSparseConvSpec(1, 16, 16, 32, 64, N, kept, 3, 1, 1, bias=True, activation="relu")


def test_winograd_off_runs_every_conv_directly_and_both_builds_agree():
    gm = _model(16)
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    direct = compile(gm, (1, 3, 16, 16), threads=2, winograd=False)
    assert {entry.algorithm for entry in direct.kernel_table} == {"direct"}
    by_winograd = compile(gm, (1, 3, 16, 16), threads=2)
    with torch.no_grad():
        expected = gm(x).numpy()
    scale = np.abs(expected).max()
    np.testing.assert_allclose(direct(x), expected, rtol=0, atol=RELATIVE_TOLERANCE * scale)
    np.testing.assert_allclose(by_winograd(x), direct(x), rtol=0, atol=RELATIVE_TOLERANCE * scale)
    # the manifest keeps each layer's algorithm
    table = by_winograd.manifest.to_json()["kernels"]
    assert [row["algorithm"] for row in table if row["layer"] == "body"] == [WINOGRAD]


def test_int8_convs_keep_the_int8_kernel():
    """The Winograd kernel is fp32: an int8 build's int8 convs keep their kernel (its fp32 layers
    may still run by Winograd)."""
    gm = _model(16)
    calibration = [torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))]
    compiled = compile(gm, (1, 3, 16, 16), threads=2, precision="int8", calibration=calibration)
    int8 = [entry for entry in compiled.kernel_table if entry.precision.startswith("int8")]
    assert int8 and all(entry.algorithm == "direct" for entry in int8)
