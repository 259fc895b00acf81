"""Whole-model lowering: compiled output equals PyTorch eager, kernels are scheduled, layout is
NHWC end to end, epilogues are fused, and unsupported ops are listed in one error."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tvm import relax  # noqa: E402

from subp_fx.codegen.lowering.lower import lower, lower_graph  # noqa: E402
from subp_fx.errors import ConversionError, UnsupportedOpError  # noqa: E402
from subp_fx.models import build_model  # noqa: E402
from subp_fx.passes import convert, fold_batchnorm, fold_static_shapes, impose_random_masks  # noqa: E402
from tests.toy_models import ToyNet, randomise_batchnorms, seeded  # noqa: E402

TARGET = "llvm -mcpu=native"
# Max abs error allowed, relative to the largest logit.
RELATIVE_TOLERANCE = 1e-4


def converted(model: nn.Module, prune_rate: float = 0.5, N: int = 16):
    """Random uniform masks, BN folded, SUBP convs converted: what the lowering takes."""
    torch.manual_seed(0)
    return convert(fold_batchnorm(impose_random_masks(randomise_batchnorms(model), prune_rate, N)))


class OpZoo(nn.Module):
    """The ops the paper models do not exercise, on a (B, 3, 20, 20) input: a conv whose C_out
    (10) no N divides, max pool with ceil_mode, a dilated strided depthwise conv, hardswish,
    'same' padding, channel concat, a batch norm that cannot be folded, average pool without
    the padding in its divisor, an unfused add, relu6, a 2x2 adaptive pool flattened through
    view(size(0), -1), eval-mode dropout, linear + relu, and a linear with 7 outputs."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 10, 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(10)
        self.pool = nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)
        self.expand = nn.Conv2d(10, 32, 1)
        self.depthwise = nn.Conv2d(32, 32, 3, stride=2, padding=2, dilation=2, groups=32)
        self.hardswish = nn.Hardswish()
        self.branch_a = nn.Conv2d(32, 16, 1)
        self.branch_b = nn.Conv2d(32, 24, 3, padding="same")
        self.joined_bn = nn.BatchNorm2d(40)
        self.smooth = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.adaptive = nn.AdaptiveAvgPool2d(2)
        self.dropout = nn.Dropout(0.3)
        self.fc1 = nn.Linear(160, 20)
        self.fc2 = nn.Linear(20, 7)

    def forward(self, x):
        x = self.pool(F.relu(self.stem_bn(self.stem(x))))
        y = self.hardswish(self.depthwise(self.expand(x)))
        joined = torch.cat([self.branch_a(y), torch.relu(self.branch_b(y))], dim=1)
        joined = self.joined_bn(joined)
        joined = F.relu6(joined + self.smooth(joined))
        pooled = self.dropout(self.adaptive(joined))
        flat = pooled.view(pooled.size(0), -1)
        return self.fc2(F.relu(self.fc1(flat)))


# name -> (builder, input (C, H, W), N of the random masks)
MODELS = {
    "resnet18": (lambda: build_model("resnet18"), (3, 64, 64), 16),
    "resnet34": (lambda: build_model("resnet34"), (3, 64, 64), 16),
    "resnet50": (lambda: build_model("resnet50"), (3, 64, 64), 16),
    "mobilenet_v1": (lambda: build_model("mobilenet_v1"), (3, 64, 64), 16),
    "torchvision.mobilenet_v2": (lambda: build_model("torchvision.mobilenet_v2"), (3, 64, 64), 16),
    "torchvision.resnet50": (lambda: build_model("torchvision.resnet50"), (3, 64, 64), 16),
    "small_cnn": (lambda: build_model("small_cnn", num_classes=10, in_channels=1), (1, 28, 28), 16),
    "op_zoo": (lambda: seeded(OpZoo), (3, 20, 20), 8),
}


@pytest.fixture(scope="module")
def built():
    """(model name, batch) -> (converted GraphModule, lowered model, VM); each built once."""
    cache = {}

    def get(name: str, batch: int):
        if (name, batch) not in cache:
            build, image, N = MODELS[name]
            gm = fold_static_shapes(converted(build(), N=N), (batch, *image))
            lowered = lower_graph(gm, (batch, *image), TARGET)
            vm = relax.VirtualMachine(tvm.compile(lowered.module, target=lowered.target), tvm.cpu())
            cache[name, batch] = (gm, lowered, vm)
        return cache[name, batch]

    return get


def _run(vm, x: torch.Tensor) -> np.ndarray:
    return vm["main"](tvm.runtime.tensor(x.numpy())).numpy()


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("name", list(MODELS))
def test_compiled_output_equals_eager(built, name, batch):
    gm, lowered, vm = built(name, batch)
    x = torch.randn(batch, *MODELS[name][1], generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        expected = gm(x).numpy()
    actual = _run(vm, x)
    assert actual.shape == expected.shape == lowered.output_shape
    assert np.abs(actual - expected).max() <= RELATIVE_TOLERANCE * np.abs(expected).max()


def _called_kernels(module: tvm.IRModule) -> list[str]:
    """Names of the PrimFuncs main calls, in call order; fails on any Relax op other than
    call_tir and reshape (those would be legalised to unscheduled TIR)."""
    names = []
    for binding in module["main"].body.blocks[0].bindings:
        value = binding.value
        if isinstance(value, relax.Tuple) or isinstance(value, relax.Var):
            continue
        assert value.op.name in ("relax.call_tir", "relax.reshape"), f"main calls {value.op.name}"
        if value.op.name == "relax.call_tir":
            names.append(value.args[0].name_hint)
    return names


@pytest.mark.parametrize(
    "name, image",
    [
        ("resnet18", (3, 64, 64)),
        ("torchvision.mobilenet_v2", (3, 64, 64)),
        ("op_zoo", (3, 20, 20)),
        # layer4 is 1x1 here: one-pixel tiles once lost their parallel loop (regression)
        pytest.param("resnet18", (3, 32, 32), id="resnet18-32px"),
    ],
)
def test_every_kernel_is_scheduled_parallel_and_vectorised(name, image):
    build, _, N = MODELS[name]
    module = lower(fold_static_shapes(converted(build(), N=N), (1, *image)), (1, *image), TARGET)
    called = _called_kernels(module)
    assert called
    for kernel in set(called):
        script = module[kernel].script()
        assert "T.parallel(" in script, f"{kernel} has no parallel loop"
        assert "T.vectorized(" in script, f"{kernel} has no vectorised loop"


def test_activations_stay_nhwc_between_layers():
    build, image, N = MODELS["resnet50"]
    called = _called_kernels(lower(converted(build(), N=N), (1, *image), TARGET))
    layout_kernels = [kernel for kernel in called if "nhwc" in kernel or "nchw" in kernel]
    assert layout_kernels == ["input_to_nhwc"] and called[0] == "input_to_nhwc"


def test_resnet_blocks_fuse_residual_add_and_relu_into_the_conv():
    build, image, N = MODELS["resnet18"]
    lowered = lower_graph(converted(build(), N=N), (1, *image), TARGET)
    called = _called_kernels(lowered.module)
    assert not [kernel for kernel in called if kernel.startswith(("add_", "relu_"))]
    epilogues = {entry.layer: entry.epilogue for entry in lowered.kernel_table}
    blocks = [f"layer{stage}.{block}" for stage in range(1, 5) for block in range(2)]
    assert all(epilogues[f"{block}.conv2"] == "bias+residual+relu" for block in blocks)
    assert all(epilogues[f"{block}.conv1"] == "bias+relu" for block in blocks)
    assert epilogues["conv1"] == "bias+relu" and epilogues["layer2.0.downsample.0"] == "bias"


def test_mobilenet_v2_projection_fuses_the_residual_without_activation():
    build, image, N = MODELS["torchvision.mobilenet_v2"]
    lowered = lower_graph(converted(build(), N=N), (1, *image), TARGET)
    called = _called_kernels(lowered.module)
    assert not [kernel for kernel in called if kernel.startswith(("add_", "relu6_"))]
    by_layer = {entry.layer: entry for entry in lowered.kernel_table}
    # Blocks 3, 5, 6, ... have stride 1 and equal channels: x + conv(x).
    assert by_layer["features.3.conv.2"].epilogue == "bias+residual"
    assert by_layer["features.2.conv.2"].epilogue == "bias"
    assert by_layer["features.2.conv.1.0"].kind == "depthwise"
    assert by_layer["features.2.conv.1.0"].epilogue == "bias+relu6"


def test_kernel_table_records_every_layer():
    build, image, N = MODELS["resnet18"]
    gm = converted(build(), N=N)
    lowered = lower_graph(gm, (1, *image), TARGET)
    convs_and_linears = [
        node.target
        for node in gm.graph.nodes
        if node.op == "call_module"
        and type(gm.get_submodule(node.target)).__name__ in ("BlockSparseConv2d", "Conv2d", "Linear")
    ]
    table = lowered.kernel_table
    assert [entry.layer for entry in table] == convs_and_linears
    stem, first_sparse, fc = table[0], table[1], table[-1]
    assert (stem.kind, stem.kept_per_row, stem.in_channels) == ("dense", 3, 3) and "stem" in stem.dense_reason
    assert (first_sparse.kind, first_sparse.kept_per_row, first_sparse.in_channels) == ("sparse", 32, 64)
    assert first_sparse.dense_reason is None and first_sparse.block_size == 16
    assert first_sparse.macs == 16 * 16 * 64 * 32 * 9  # 16x16 output at 64x64 input, K=32
    assert (fc.kind, fc.op, fc.macs) == ("dense", "linear", 512 * 1000)
    functions = {function.name_hint for function in lowered.module.get_global_vars()}
    assert all(entry.tile and entry.kernel in functions for entry in table)


@pytest.mark.parametrize("target, block_size", [("llvm -mcpu=skylake-avx512", 32), ("llvm -mcpu=znver3", 16)])
def test_dense_convs_take_the_block_size_with_the_cheapest_tile(target, block_size):
    """A dense conv's N is free: AVX-512 tiles of 7 pixels x 32 channels need fewer loads per FMA
    than 14 x 16; on AVX2 the two tie and N=16 stays."""
    build, image, N = MODELS["resnet18"]
    table = lower_graph(converted(build(), N=N), (1, *image), target).kernel_table
    dense_convs = [entry for entry in table if entry.kind == "dense" and entry.op == "conv2d"]
    assert dense_convs and {entry.block_size for entry in dense_convs} == {block_size}
    assert all(entry.block_size == N for entry in table if entry.kind == "sparse")


def test_op_zoo_kernel_table_names_padding_and_depthwise():
    build, image, N = MODELS["op_zoo"]
    gm = fold_static_shapes(converted(build(), N=N), (1, *image))
    by_layer = {entry.layer: entry for entry in lower_graph(gm, (1, *image), TARGET).kernel_table}
    assert by_layer["stem"].block_size == 16 and "C_out=10 padded to 16" in by_layer["stem"].dense_reason
    assert by_layer["depthwise"].kind == "depthwise" and by_layer["depthwise"].out_hw == (6, 6)
    assert by_layer["branch_b"].kind == "sparse" and by_layer["branch_b"].kept_per_row == 16
    assert by_layer["fc1"].epilogue == "bias+relu" and by_layer["fc2"].out_channels == 7


class Unsupported(nn.Module):
    """An ELU, a dilated dense conv and a matrix product: none has a lowering yet."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dilated = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.elu = nn.ELU()

    def forward(self, x):
        x = F.relu(self.conv(x))
        x = self.elu(self.dilated(x))
        return torch.flatten(x @ x, 1)


def test_every_unsupported_op_is_listed_in_one_error():
    with pytest.raises(UnsupportedOpError) as caught:
        lower(Unsupported().eval(), (1, 3, 8, 8), TARGET)
    message = str(caught.value)
    assert "3 node(s)" in message
    assert "'dilated'" in message and "dilation=(2, 2)" in message
    assert "'elu'" in message and "torch.nn.modules.activation.ELU" in message
    assert "'matmul'" in message and "call_function matmul" in message
    assert "Supported are" in message and "nn.MaxPool2d" in message and "F.relu6" in message


def test_toy_net_with_a_grouped_conv_runs_it_on_the_block_sparse_kernel_and_matches_eager():
    gm = converted(seeded(ToyNet))
    lowered = lower_graph(gm, (2, 3, 16, 16), TARGET)
    grouped = next(entry for entry in lowered.kernel_table if entry.layer == "grouped")
    # groups=4 over 32 channels: each output channel reads 8 inputs, as K=8 of the 1xN kernel.
    assert (grouped.kind, grouped.kept_per_row, grouped.in_channels) == ("grouped", 8, 32)
    assert "grouped conv (groups=4)" in grouped.dense_reason
    vm = relax.VirtualMachine(tvm.compile(lowered.module, target=lowered.target), tvm.cpu())
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = gm(x).numpy()
    got = vm["main"](tvm.runtime.tensor(x.numpy())).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_unconverted_subp_conv_is_refused_with_the_fix():
    masked = impose_random_masks(build_model("small_cnn", in_channels=1).eval(), 0.5, 16)
    with pytest.raises(ConversionError, match="run subp_fx.convert first"):
        lower(fold_batchnorm(masked), (1, 1, 28, 28), TARGET)


def test_foldable_batch_norm_is_refused_with_the_fix():
    model = convert(build_model("small_cnn", in_channels=1).eval())
    with pytest.raises(ConversionError, match=r"batch norm\(s\) 'stem\.1'.*run subp_fx.fold_batchnorm first"):
        lower(model, (1, 1, 28, 28), TARGET)
