"""The convert pass: SUBP convs become compact BlockSparseConv2d, computing what the masked model does."""

from __future__ import annotations

import io

import pytest
import torch
import torch.fx as fx
import torch.nn as nn

from subp_fx.algorithm.block_sparse import BlockSparseConv2d
from subp_fx.algorithm.modules import SUBPConv2d
from subp_fx.errors import ConversionError
from subp_fx.models import build_model
from subp_fx.passes import ConvertedConv, convert, fold_batchnorm, impose_random_masks, subp_modules
from subp_fx.passes.convert import CONVERTED_META_KEY
from tests.toy_models import TOY_DEFAULT_SPARSE, ToyNet, seeded, toy_input

# The toy's sparse convs in execution order, at prune rate 0.5 (K = C_in - int(0.5 * C_in)).
TOY_CONVERTED = [
    ConvertedConv(
        "pw",
        N=16,
        K=8,
        in_channels=16,
        out_channels=32,
        kernel_size=(1, 1),
        stride=(1, 1),
        padding=(0, 0),
        dilation=(1, 1),
    ),
    ConvertedConv(
        "block.conv1",
        N=16,
        K=16,
        in_channels=32,
        out_channels=64,
        kernel_size=(3, 3),
        stride=(2, 2),
        padding=(1, 1),
        dilation=(1, 1),
    ),
    ConvertedConv(
        "block.conv2",
        N=16,
        K=32,
        in_channels=64,
        out_channels=64,
        kernel_size=(3, 3),
        stride=(1, 1),
        padding=(1, 1),
        dilation=(1, 1),
    ),
    ConvertedConv(
        "block.downsample",
        N=16,
        K=16,
        in_channels=32,
        out_channels=64,
        kernel_size=(1, 1),
        stride=(2, 2),
        padding=(0, 0),
        dilation=(1, 1),
    ),
]


def _signature(gm: fx.GraphModule) -> list[tuple[str, str]]:
    return [(node.op, str(node.target)) for node in gm.graph.nodes]


def _masked_toy(seed: int = 0) -> fx.GraphModule:
    return impose_random_masks(seeded(ToyNet), 0.5, 16, seed=seed).eval()


def test_toy_net_converted_with_graph_unchanged():
    masked = _masked_toy()
    gm = convert(masked)
    assert _signature(gm) == _signature(masked)
    assert not subp_modules(gm)
    for name in TOY_DEFAULT_SPARSE:
        compact, original = gm.get_submodule(name), masked.get_submodule(name)
        assert type(compact) is BlockSparseConv2d
        assert compact.K == original.in_channels // 2
        assert (compact.values.numel(), compact.indices.numel()) == (
            original.weight.numel() // 2,
            original.block_mask.numel() // 2,
        )
    assert type(gm.get_submodule("odd")) is nn.Conv2d and type(gm.get_submodule("bn")) is nn.BatchNorm2d
    assert gm.meta[CONVERTED_META_KEY] == TOY_CONVERTED
    for batch in (1, 3):
        x = toy_input(batch, (batch, 3, 16, 16))
        with torch.no_grad():
            torch.testing.assert_close(gm(x), masked(x), rtol=0, atol=1e-6)


def test_input_untouched():
    masked = _masked_toy()
    gm = convert(masked)
    assert {name for name, _ in subp_modules(masked)} == TOY_DEFAULT_SPARSE
    assert gm.get_submodule("pw").values.data_ptr() != masked.get_submodule("pw").weight.data_ptr()


def test_modes_follow_the_subp_convs():
    masked = impose_random_masks(seeded(ToyNet), 0.5, 16, seed=0).train()
    assert all(module.training for _, module in subp_modules(masked))
    assert all(
        gm_module.training for gm_module in convert(masked).modules() if isinstance(gm_module, BlockSparseConv2d)
    )


def test_non_uniform_masks_refused_naming_every_layer():
    masked = _masked_toy()
    with torch.no_grad():
        masked.get_submodule("block.conv1").block_mask[1, :] = 1  # row 1 keeps all 32, the others 16
        masked.get_submodule("pw").block_mask[0, :] = 0
        masked.get_submodule("pw").block_mask[0, :5] = 1  # row 0 keeps 5, row 1 keeps 8
    with pytest.raises(ConversionError) as info:
        convert(masked)
    message = str(info.value)
    assert message.startswith("2 SUBP conv(s) cannot be made block-sparse")
    assert "layer 'pw'" in message and "[5, 8]" in message
    assert "layer 'block.conv1'" in message and "[16, 32, 16, 16]" in message
    assert "block.conv2" not in message
    assert type(masked.get_submodule("block.conv2")) is SUBPConv2d  # nothing was converted


def test_model_without_subp_convs_is_unchanged():
    model = seeded(ToyNet).eval()
    gm = convert(model)
    assert gm.meta[CONVERTED_META_KEY] == []
    assert not any(isinstance(module, BlockSparseConv2d) for module in gm.modules())
    x = toy_input(1)
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))


def test_converted_graph_module_saves_and_loads():
    gm = fold_batchnorm(convert(_masked_toy()))
    buffer = io.BytesIO()
    torch.save(gm, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=False)
    assert type(restored.get_submodule("block.conv1")) is BlockSparseConv2d
    x = toy_input(5)
    with torch.no_grad():
        assert torch.equal(restored(x), gm(x))


def test_converted_state_dict_loads_into_the_converted_structure():
    gm = fold_batchnorm(convert(_masked_toy()))
    fresh = fold_batchnorm(convert(_masked_toy(seed=1)))  # other masks: other indices and values
    x = toy_input(5)
    with torch.no_grad():
        assert not torch.equal(fresh(x), gm(x))
        fresh.load_state_dict(gm.state_dict())
        assert torch.equal(fresh(x), gm(x))


def _randomise_batchnorm(model: nn.Module, seed: int) -> nn.Module:
    """Random BN statistics and affine parameters, so folding has real work to do."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                features = module.num_features
                module.running_mean.copy_(torch.randn(features, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(features, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(features, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(features, generator=generator) * 0.1)
    return model


MODELS = {
    "torchvision resnet18": lambda: build_model("torchvision.resnet18"),
    "torchvision resnet50": lambda: build_model("torchvision.resnet50"),
    "torchvision mobilenet_v2": lambda: build_model("torchvision.mobilenet_v2"),
    "subp_fx resnet18": lambda: build_model("resnet18"),
    "subp_fx mobilenet_v1": lambda: build_model("mobilenet_v1"),
}


@pytest.mark.parametrize("builder", MODELS.values(), ids=MODELS.keys())
def test_pipeline_on_real_models_equals_eager_masked_model(builder):
    torch.manual_seed(0)
    model = _randomise_batchnorm(builder(), seed=1).eval()
    masked = impose_random_masks(model, 0.5, 16, seed=0).eval()
    compiled_form = convert(fold_batchnorm(masked))

    sparse = subp_modules(masked)
    assert sparse
    converted = compiled_form.meta[CONVERTED_META_KEY]
    assert [layer.name for layer in converted] == [
        node.target
        for node in masked.graph.nodes
        if node.op == "call_module" and isinstance(masked.get_submodule(node.target), SUBPConv2d)
    ]
    for layer in converted:
        assert layer.K == layer.in_channels - int(0.5 * layer.in_channels) and layer.N == 16
    assert not any(isinstance(module, (nn.BatchNorm2d, SUBPConv2d)) for module in compiled_form.modules())
    assert len([n for n in compiled_form.graph.nodes if n.op == "call_module"]) < len(
        [n for n in masked.graph.nodes if n.op == "call_module"]
    )

    for batch in (1, 3):
        x = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected, actual = masked(x), compiled_form(x)
        scale = expected.abs().max().item()
        assert scale > 1e-3, "degenerate reference output"
        assert (actual - expected).abs().max().item() <= 1e-5 * scale
