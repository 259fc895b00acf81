"""Compiling models symbolic_trace cannot trace (concrete capture), models in other libraries'
styles (timm's norm-act layers, ConvNeXt / MixNet / GhostNet blocks), and the pad /
nearest-upsample ops such models use, each against PyTorch eager (max abs error <= 1e-4 x max
|logit|)."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from subp_fx.codegen.pipeline import compile  # noqa: E402
from subp_fx.errors import UnsupportedOpError  # noqa: E402
from subp_fx.passes import impose_random_masks  # noqa: E402
from tests.codegen.lowering.test_more_ops import RELATIVE_TOLERANCE, _check  # noqa: E402
from tests.toy_models import OtherLibrariesNet, TimmNormActNet, TimmStyleNet, randomise_batchnorms  # noqa: E402


@pytest.mark.parametrize("batch", [1, 2])
def test_untraceable_timm_style_model_compiles_sparse_and_matches_eager(batch):
    torch.manual_seed(0)
    model = randomise_batchnorms(TimmStyleNet())
    sparse = impose_random_masks(model, 0.5, 16).eval()
    assert type(sparse) is TimmStyleNet  # prepared by module_swap: fx cannot trace it
    shape = (batch, 3, 30, 30)
    compiled = compile(sparse, shape, threads=1)
    passes = compiled.manifest.graph_passes
    assert passes.capture == "concrete_trace" and "symbolic_trace failed" in passes.capture_reason
    assert passes.folded_pads == 2 and passes.converted_convs == 4  # conv and fuse: symmetric "same" pads
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = sparse(x).numpy()
    got = compiled(x)
    np.testing.assert_allclose(got, expected, rtol=0, atol=RELATIVE_TOLERANCE * np.abs(expected).max())


def _compiled_with_random_statistics(model: nn.Module, sparse: bool, shape: tuple[int, ...]):
    """(model, compiled): ``model`` with random batch-norm statistics, SUBP at 50% N=16 if
    ``sparse``, compiled for ``shape``; the compiled output checked against eager."""
    torch.manual_seed(0)
    model = randomise_batchnorms(model)
    if sparse:
        model = impose_random_masks(model, 0.5, 16).eval()
    compiled = compile(model, shape, threads=1)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x).numpy()
    got = compiled(x)
    np.testing.assert_allclose(got, expected, rtol=0, atol=RELATIVE_TOLERANCE * np.abs(expected).max())
    return model, compiled


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("sparse", [False, True])
def test_timm_style_norm_act_and_same_conv_layers_compile_folded_and_match_eager(sparse):
    torch.manual_seed(0)
    _, compiled = _compiled_with_random_statistics(TimmNormActNet(), sparse, (2, 3, 16, 16))
    passes = compiled.manifest.graph_passes
    # 4 BatchNormAct2d, 3 Conv2dSame, 1 padding='same' conv, 1 Linear; every batch norm folded, the
    # depthwise conv's symmetric "same" pad folded (the stride-2 ones pad one side: the pad kernel).
    assert passes.modularized_calls == 9 and passes.functional_left == {}
    assert passes.folded_batchnorms == 4 and passes.unfolded_batchnorms == {} and passes.folded_pads == 1
    assert passes.converted_convs == (2 if sparse else 0)  # pw and the SE's expand (the others N=16 cannot block)


@pytest.mark.parametrize("sparse", [False, True])
def test_convnext_mixnet_and_ghostnet_style_blocks_fold_and_match_eager(sparse):
    torch.manual_seed(0)
    _, compiled = _compiled_with_random_statistics(OtherLibrariesNet(), sparse, (2, 3, 16, 16))
    passes = compiled.manifest.graph_passes
    assert passes.folded_constants == 1  # gamma.reshape(1, -1, 1, 1)
    assert passes.dropped_identities == 2  # the block's dropout and its identity shortcut
    assert passes.folded_layer_scales == 1  # into fc2, seen through the dropout
    assert passes.folded_batchnorms == 3 and passes.unfolded_batchnorms == {}  # the concat's, GhostConv's two
    assert passes.converted_convs == (5 if sparse else 0)  # the two mixed convs, widen, fc1, fc2


class _PadsAndUpsamples(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, stride=2)
        self.zero = nn.ZeroPad2d((0, 1, 2, 0))
        self.up = nn.UpsamplingNearest2d(scale_factor=2)
        self.out = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.conv(F.pad(x, [0, 1, 0, 1])))  # asymmetric "same": the pad kernel
        y = F.pad(x, [1, 2, 1, 0], value=0.25)  # a non-zero constant
        y = self.up(self.zero(y))
        x = F.interpolate(x, scale_factor=3, mode="nearest")
        pooled = torch.cat([self.out(x).mean((2, 3)), y.mean((2, 3))], dim=1)
        return self.fc(pooled)


@pytest.mark.parametrize("batch", [1, 2])
def test_pad_and_nearest_upsample_match_eager(batch):
    torch.manual_seed(0)
    _check(_PadsAndUpsamples(), (batch, 3, 9, 10))


def test_bilinear_resize_and_reflect_pad_are_refused_naming_the_op():
    class Other(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)

        def forward(self, x):
            x = F.interpolate(self.conv(F.pad(x, [1, 1, 1, 1], mode="reflect")), scale_factor=2, mode="bilinear")
            return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    with pytest.raises(UnsupportedOpError) as info:
        compile(Other().eval(), (1, 3, 8, 8), threads=1)
    message = str(info.value)
    assert "pads in mode 'reflect'" in message and "interpolates in mode 'bilinear'" in message
