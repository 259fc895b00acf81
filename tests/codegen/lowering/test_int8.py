"""int8 builds (``compile(..., precision="int8")``, ``lowering/int8.py``) against the eager
fake-quant reference of the same inference graph (``quantize.fake_quant_reference``): the numbers,
which convs and linears the kernel table puts in int8, where activations are stored as uint8, the
manifest, and the AVX2 fallback (haswell target)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from subp_fx.codegen.kernels.isa import int8_path  # noqa: E402
from subp_fx.codegen.lowering.lower import lower_graph  # noqa: E402
from subp_fx.codegen.pipeline import compile, inference_graph  # noqa: E402
from subp_fx.codegen.runtime.compiled import load_compiled  # noqa: E402
from subp_fx.codegen.runtime.kernel_table import (  # noqa: E402
    INT8_DEPTHWISE_PRECISION,
    format_kernel_table,
    slow_int8_paths,
)
from subp_fx.errors import CalibrationError, ConfigError  # noqa: E402
from subp_fx.passes import impose_random_masks  # noqa: E402
from subp_fx.quantize import calibrate, fake_quant_reference, plan_int8  # noqa: E402
from tests.toy_models import ToyNet, randomise_batchnorms, seeded, toy_input  # noqa: E402

# Compiled vs reference, as a fraction of the largest |logit|. The int8 convs accumulate exactly
# in int32 and both sides round the same float32 values, so they agree to float32 rounding:
# measured 8.5e-8 (ToyNet, AVX-512 VNNI and AVX2), 2.0e-7 (SharedReaders). One uint8 rounding
# that came out differently anywhere in the network moves the logits by ~1e-3 of their maximum
# (one quantisation step of a 255-step range), far above this bound.
TOLERANCE = 1e-5
BATCH_SHAPE = (2, 3, 16, 16)  # batch 2: the kernels' batch loop, not only a single image
CALIBRATION_SEEDS = range(3)
HASWELL = "llvm -mcpu=haswell"  # AVX2 without VNNI: the vpmaddwd fallback


class SharedReaders(nn.Module):
    """conv1's output ``y`` feeds two int8 convs (conv2, and the depthwise dw) but also a spatial
    mean: it is quantised once and its fp32 reader gets the dequantised copy (the path
    ``lowering.int8.after_lowered`` takes when not every reader reads uint8). dw's output is
    conv2's fp32 residual. Input (B, 8, H, W): the input itself is quantised for conv1."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(8, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        y = F.relu(self.conv1(x))
        z = self.conv2(y) + self.dw(y)
        return self.fc(F.relu(z).mean((2, 3)) + y.mean((2, 3)))


SHARED_SHAPE = (2, 8, 8, 8)


def _dw_pw(channels: int, out_channels: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.Conv2d(channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]


class TinyMobileNetV1(nn.Module):
    """MobileNetV1's pattern: an RGB stem (fp32), then depthwise 3x3 (stride 1 and 2) and
    pointwise 1x1 pairs with BN and ReLU, average pooling and a linear head. In int8 every
    tensor between the stem and the pooling is written uint8 by the kernel that produces it."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.features = nn.Sequential(*_dw_pw(16, 32, 1), *_dw_pw(32, 48, 2), *_dw_pw(48, 64, 1))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(self.stem(x)), 1), 1))


MOBILENET_SHAPE = (2, 3, 20, 20)


class PooledStem(nn.Module):
    """A ResNet's start: an RGB stem conv, BN, ReLU, a 3x3/2 max pool (padded), then a conv. The
    plan quantises the stem's output with the pool's output parameters (``Int8Plan.pooled``), so
    the stem stores bytes and the pool runs on them."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        y = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        return self.fc(F.relu(self.conv2(y)).mean((2, 3)))


POOLED_SHAPE = (2, 3, 22, 22)  # 11x11 after the stem: the pool's border windows hold padding


def _calibration(shape):
    return [toy_input(seed, (4, *shape[1:])) for seed in CALIBRATION_SEEDS]


class Int8Build:
    """A model compiled in int8, its inference graph's plan, and the fake-quant reference."""

    def __init__(self, model: nn.Module, shape: tuple[int, ...], target: str = "llvm -mcpu=native"):
        model = model.eval()
        batches = _calibration(shape)
        self.shape = shape
        self.compiled = compile(
            model,
            shape,
            target=target,
            threads=1,
            precision="int8",
            calibration=batches,
            calibration_info={"source": "toy"},
        )
        self.graph = inference_graph(model, shape).gm
        self.ranges = calibrate(self.graph, batches, example_shape=shape)
        self.plan = plan_int8(self.graph, self.ranges)
        self.reference = fake_quant_reference(self.graph, self.plan)

    def outputs(self, seed: int = 99):
        """(compiled, fake-quant reference, fp32 graph) outputs on a seeded input."""
        x = toy_input(seed, self.shape)
        with torch.no_grad():
            return self.compiled(x), self.reference(x).numpy(), self.graph(x).numpy()

    def precisions(self) -> dict[str, str]:
        return {entry.layer: entry.precision for entry in self.compiled.kernel_table}


def _assert_matches_reference(build: Int8Build) -> None:
    got, expected, fp32 = build.outputs()
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE * scale)
    # and it is int8: the fp32 graph differs by far more (measured 2.3e-3 of max |logit|)
    assert np.abs(got - fp32).max() > 100 * TOLERANCE * scale


def _toy_g4() -> nn.Module:
    """ToyNet (stem, depthwise, 1x1, grouped, a residual block, a dense 24-channel conv, linear)
    with random uniform masks in aligned input groups of 4, batch norms randomised."""
    return impose_random_masks(randomise_batchnorms(seeded(ToyNet), 0), prune_rate=0.5, N=16, seed=0, G=4)


@pytest.fixture(scope="module")
def toy() -> Int8Build:
    return Int8Build(_toy_g4(), BATCH_SHAPE)


@pytest.fixture(scope="module")
def mobilenet() -> Int8Build:
    model = impose_random_masks(randomise_batchnorms(seeded(TinyMobileNetV1), 0), prune_rate=0.5, N=16, seed=0, G=4)
    return Int8Build(model, MOBILENET_SHAPE)


@pytest.fixture(scope="module")
def shared() -> Int8Build:
    return Int8Build(seeded(SharedReaders), SHARED_SHAPE)


def test_toy_net_equals_the_fake_quant_reference(toy):
    _assert_matches_reference(toy)


def test_the_kernel_table_names_the_int8_path_for_exactly_the_planned_layers(toy):
    path = int8_path(toy.compiled.target).name
    precisions = toy.precisions()
    # the RGB stem too: its input is quantised into 4 channels, the 4th with zero weights
    assert set(toy.plan.convs) == {"stem", "dw", "pw", "block.conv1", "block.conv2", "block.downsample", "odd"}
    assert set(toy.plan.linears) == {"head"}
    stem = next(entry for entry in toy.compiled.kernel_table if entry.layer == "stem")
    assert (stem.in_channels, stem.kept_per_row) == (4, 4)
    lowered = lower_graph(toy.graph, BATCH_SHAPE, toy.compiled.target, activation_ranges=toy.ranges)
    names = {global_var.name_hint for global_var in lowered.module.functions}
    # the image quantised straight from NCHW (no float32 NHWC copy of it)
    assert f"quantize_image_{BATCH_SHAPE[0]}x3x16x16_to_nhwc4" in names
    assert "input_to_nhwc" not in names
    in_int8 = {layer for layer, precision in precisions.items() if precision != "fp32"}
    assert in_int8 == set(toy.plan.convs) | {"head"}
    assert all(precisions[layer].split("->")[0] == f"int8/{path}" for layer in in_int8 - {"dw"})
    assert precisions["dw"].split("->")[0] == INT8_DEPTHWISE_PRECISION
    # the grouped conv alone stays fp32, with the reason
    assert {layer for layer, precision in precisions.items() if precision == "fp32"} == {"grouped"}
    assert set(toy.plan.fp32_convs) == {"grouped"}
    assert "precision: int8 (calibrated on 12 images in 3 batch(es) from toy)" in toy.compiled.report()


def test_uint8_storage_where_every_reader_reads_uint8(toy):
    precisions = toy.precisions()
    # the stem's output feeds only dw; dw's only pw; block.conv1's only block.conv2; the block's
    # output (conv2's epilogue: + the downsample, ReLU) only `odd`; the downsample's output is
    # only conv2's residual (the plan quantises it for that): all are written as uint8 by their kernels
    stored = {layer for layer, precision in precisions.items() if precision.endswith("->u8")}
    assert stored == {"stem", "dw", "block.conv1", "block.conv2", "block.downsample"}
    conv2 = next(entry for entry in toy.compiled.kernel_table if entry.layer == "block.conv2")
    assert "residual_uint8" in conv2.kernel
    # pw and odd feed fp32 convs / the pooling
    assert not precisions["pw"].endswith("->u8") and not precisions["odd"].endswith("->u8")


def test_a_dense_conv_whose_c_out_is_not_a_multiple_of_16_runs_int8_padded_and_sliced(toy):
    odd = next(entry for entry in toy.compiled.kernel_table if entry.layer == "odd")
    assert odd.kind == "dense" and odd.out_channels == 24 and odd.precision.startswith("int8/")
    assert "64to32" in odd.kernel  # 24 output channels computed as 32, the 8 zero ones sliced off
    assert not odd.precision.endswith("->u8")  # never stored uint8 when sliced after the call


def test_an_int8_linear_runs_on_the_int8_conv_kernel_padded_and_sliced(toy):
    head = next(entry for entry in toy.compiled.kernel_table if entry.layer == "head")
    assert (head.op, head.kind, head.in_channels, head.out_channels) == ("linear", "dense", 24, 10)
    assert head.dense_reason == "fully connected layer: SUBP prunes convs only"
    # the batch of 2 is a 1x2 image; 10 features computed as 16 (one block-row of 6 groups of 4)
    assert "1x2_24to16_G6N16" in head.kernel and head.out_hw == (1, 2)
    assert head.macs == 2 * 24 * 10 and not head.precision.endswith("->u8")


class MlpHead(nn.Module):
    """A classifier of two int8 linears with a fused ReLU between them (fc1's output, ReLU'd in
    its epilogue, is quantised for fc2), a bias-free one whose 50 outputs pad to 64, and an fp32
    one (in_features 50 is no multiple of 4). Input (B, 8, H, W)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 32, 3, padding=1)
        self.fc1 = nn.Linear(32, 40)
        self.fc2 = nn.Linear(40, 50, bias=False)
        self.fc3 = nn.Linear(50, 3)

    def forward(self, x):
        features = F.relu(self.conv(x)).mean((2, 3))
        return self.fc3(self.fc2(F.relu(self.fc1(features))))


def test_a_head_of_int8_linears_equals_the_fake_quant_reference():
    build = Int8Build(seeded(MlpHead), SHARED_SHAPE)
    assert build.plan.linears == {"fc1": "mean", "fc2": "relu_1"}
    assert "in_features=50 is not a multiple of 4" in build.plan.fp32_linears["fc3"]
    _assert_matches_reference(build)
    table = {entry.layer: entry for entry in build.compiled.kernel_table}
    assert {layer: entry.precision.split("/")[0] for layer, entry in table.items()} == {
        "conv": "int8",
        "fc1": "int8",
        "fc2": "int8",
        "fc3": "fp32",
    }
    assert table["fc1"].epilogue == "bias+relu" and table["fc2"].epilogue == "bias"  # bias: the folded zero point
    assert "40to64_G10N32" in table["fc2"].kernel


def test_the_manifest_round_trips_precision_and_calibration(toy, tmp_path):
    manifest = toy.compiled.manifest
    assert manifest.precision == "int8"
    assert manifest.calibration == {"source": "toy", "calibrated_batches": 3, "calibrated_images": 12}
    loaded = load_compiled(toy.compiled.export(tmp_path / "artefact"), threads=1)
    assert loaded.manifest.precision == "int8" and loaded.manifest.calibration == manifest.calibration
    assert loaded.kernel_table == toy.compiled.kernel_table
    x = toy_input(5, BATCH_SHAPE)
    np.testing.assert_array_equal(loaded(x), toy.compiled(x))


def test_a_planned_tensor_with_fp32_readers_gives_them_the_dequantised_copy(shared):
    _assert_matches_reference(shared)
    assert set(shared.plan.convs) == {"conv1", "conv2", "dw"}
    # dw's output is only conv2's residual (the plan quantises it for that): stored uint8, read
    # as bytes by conv2's kernel; nothing else is stored uint8 (y has an fp32 reader)
    assert shared.plan.residuals == {"dw": ("add",)}
    assert shared.precisions()["dw"] == INT8_DEPTHWISE_PRECISION + "->u8"
    assert [layer for layer, precision in shared.precisions().items() if precision.endswith("->u8")] == ["dw"]
    lowered = lower_graph(shared.graph, SHARED_SHAPE, shared.compiled.target, activation_ranges=shared.ranges)
    names = sorted(global_var.name_hint for global_var in lowered.module.functions)
    # the input (for conv1, straight from NCHW), y (for conv2 and dw) and the head's (2, 16)
    # features are quantised; y alone is dequantised, for the mean
    assert [name for name in names if name.startswith("quantize_")] == [
        "quantize_2x16",
        "quantize_2x8x8x16",
        "quantize_image_2x8x8x8_to_nhwc8",
    ]
    assert [name for name in names if name.startswith("dequantize_")] == ["dequantize_2x8x8x16"]


def test_a_mobilenet_v1_stays_uint8_from_the_image_to_the_pooling(mobilenet):
    _assert_matches_reference(mobilenet)
    precisions = mobilenet.precisions()
    depthwise = {"features.0", "features.6", "features.12"}
    pointwise = {"features.3", "features.9", "features.15"}
    assert set(mobilenet.plan.convs) == {"stem.0"} | depthwise | pointwise
    # every conv's output is written uint8, but the last (read by the pooling)
    assert {layer for layer, precision in precisions.items() if precision.endswith("->u8")} == (
        {"stem.0"} | depthwise | pointwise
    ) - {"features.15"}
    target, ranges = mobilenet.compiled.target, mobilenet.ranges
    lowered = lower_graph(mobilenet.graph, MOBILENET_SHAPE, target, activation_ranges=ranges)
    names = sorted(global_var.name_hint for global_var in lowered.module.functions)
    # the RGB image (into 4 channels, for the int8 stem), and the pooled features for the classifier
    assert [name for name in names if name.startswith("quantize_")] == [
        "quantize_2x64",
        "quantize_image_2x3x20x20_to_nhwc4",
    ]
    assert set(mobilenet.plan.linears) == {"fc"}
    assert not [name for name in names if name.startswith("dequantize_")]


def test_a_max_pooled_stem_stores_bytes_and_the_pool_runs_on_them():
    build = Int8Build(randomise_batchnorms(seeded(PooledStem), 0), POOLED_SHAPE)
    _assert_matches_reference(build)
    assert build.plan.pooled == {"relu": "maxpool"}
    assert build.plan.activations["relu"] == build.plan.activations["maxpool"]
    assert build.precisions()["conv1"].endswith("->u8")
    lowered = lower_graph(build.graph, POOLED_SHAPE, build.compiled.target, activation_ranges=build.ranges)
    names = sorted(global_var.name_hint for global_var in lowered.module.functions)
    assert [name for name in names if name.startswith("max_pool")] == ["max_pool3x3s2_2x11x11x16_u8"]
    # the image (for the stem) and the pooled features (for fc): nothing quantised after the pool
    assert [name for name in names if name.startswith("quantize_")] == [
        "quantize_2x16",
        "quantize_image_2x3x22x22_to_nhwc4",
    ]


class PaddedProjection(nn.Module):
    """MobileNetV2's inverted residual with 24 channels: the 1x1 projection's C_out (24) is not a
    multiple of 16, so its int8 kernel computes 32 channels and slices; it must not fuse the skip
    connection (24 channels) as its residual. The add runs after the slice."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 24, 3, padding=1)
        self.expand = nn.Conv2d(24, 48, 1)
        self.project = nn.Conv2d(48, 24, 1)
        self.head = nn.Conv2d(24, 16, 1)

    def forward(self, x):
        y = F.relu(self.stem(x))
        return self.head(y + self.project(F.relu(self.expand(y)))).mean((2, 3))


def test_a_conv_whose_int8_kernel_pads_c_out_takes_no_residual():
    build = Int8Build(seeded(PaddedProjection), (2, 3, 8, 8))
    _assert_matches_reference(build)
    project = next(entry for entry in build.compiled.kernel_table if entry.layer == "project")
    assert project.precision.startswith("int8/") and "residual" not in project.epilogue and "48to32" in project.kernel


class PooledForTwoKinds(nn.Module):
    """Inception's block entry: a max pool (of an int8 stem, so run on bytes) read by an int8
    conv and by an average pool, which reads float32: the pool's uint8 output needs a
    dequantised copy (it had none, and the average pool was given bytes)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.branch = nn.Conv2d(16, 16, 1)
        self.pooled_branch = nn.Conv2d(16, 16, 1)

    def forward(self, x):
        y = self.maxpool(F.relu(self.stem(x)))
        z = self.branch(y) + self.pooled_branch(F.avg_pool2d(y, 3, stride=1, padding=1))
        return z.mean((2, 3))


def test_a_max_pool_on_bytes_with_a_float32_reader_gives_it_the_dequantised_copy():
    build = Int8Build(seeded(PooledForTwoKinds), (2, 3, 12, 12))
    assert build.plan.pooled == {"relu": "maxpool"}
    _assert_matches_reference(build)


class ChannelsNotInGroups(nn.Module):
    """ShuffleNetV2's branch: 58 channels (not a multiple of 4) through a 1x1 conv, a depthwise
    conv and a 1x1 conv. The depthwise conv reads them unpadded (it had been given the 60 an
    int8 conv reads) and stores float32 (its 58 are padded to 60 for the next conv's groups of
    4 by the quantise kernel); y feeds a depthwise conv and two convs, so it is quantised both
    ways. The image feeds a depthwise conv, so it is quantised by the float32 path."""

    def __init__(self):
        super().__init__()
        self.image_dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.expand = nn.Conv2d(4, 58, 1)
        self.dw = nn.Conv2d(58, 58, 3, padding=1, groups=58)
        self.project = nn.Conv2d(58, 32, 1)
        self.side = nn.Conv2d(58, 32, 1)

    def forward(self, x):
        y = F.relu(self.expand(x + self.image_dw(x)))
        return (self.project(F.relu(self.dw(y))) + self.side(y)).mean((2, 3))


def test_a_depthwise_conv_reads_and_writes_channels_that_are_not_whole_groups():
    build = Int8Build(seeded(ChannelsNotInGroups), (2, 4, 8, 8))
    assert {"dw", "expand", "project", "side"} <= set(build.plan.convs)
    assert not build.precisions()["dw"].endswith("->u8")
    _assert_matches_reference(build)


class GroupedConvs(nn.Module):
    """ResNeXt / RegNetX-style grouped 3x3 convs: 16 channels per group (N=16), 32 per group
    (N=32), both run block-diagonally on the int8 kernel; 8 per group (RegNetY-400MF) stays fp32.
    A residual add after the N=32 one."""

    def __init__(self):
        super().__init__()
        self.expand = nn.Conv2d(8, 64, 1)
        self.by16 = nn.Conv2d(64, 64, 3, padding=1, groups=4)
        self.by32 = nn.Conv2d(64, 64, 3, stride=2, padding=1, groups=2)
        self.by8 = nn.Conv2d(64, 64, 3, padding=1, groups=8)
        self.project = nn.Conv2d(64, 16, 1)

    def forward(self, x):
        y = F.relu(self.expand(x))
        y = F.relu(self.by16(y))
        y = F.relu(self.by32(y))
        y = F.relu(self.by8(y) + y)
        return self.project(y).mean((2, 3))


def test_grouped_convs_whose_groups_hold_whole_blocks_run_int8():
    build = Int8Build(seeded(GroupedConvs), (2, 8, 10, 10))
    _assert_matches_reference(build)
    precisions = build.precisions()
    assert {layer for layer in ("by16", "by32", "by8") if precisions[layer].startswith("int8/")} == {"by16", "by32"}
    assert "8 output channels per group" in build.plan.fp32_convs["by8"]
    kernels = {entry.layer: entry.kernel for entry in build.compiled.kernel_table}
    assert "N16" in kernels["by16"] and "N32" in kernels["by32"]


class WideBottlenecks(nn.Module):
    """1x1 convs as in ResNet-50's bottlenecks, for masks in input groups of 16: squeeze
    (256->64, 128 kept: 32 groups of 4, the grouped int8 kernel) and mix (256->256 with a uint8
    residual, the same), between a 64->256 expansion (32 kept: 8 groups, the general kernel)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, padding=1)
        self.expand = nn.Conv2d(64, 256, 1)
        self.squeeze = nn.Conv2d(256, 64, 1)
        self.mix = nn.Conv2d(256, 256, 1)
        self.fc = nn.Linear(64, 5)

    def forward(self, x):
        y = F.relu(self.expand(F.relu(self.stem(x))))
        y = F.relu(self.mix(y) + y)
        return self.fc(F.relu(self.squeeze(y)).mean((2, 3)))


@pytest.mark.parametrize("cpu", ["native", "haswell"])
def test_g16_masks_put_long_1x1_reductions_on_the_grouped_int8_kernel(cpu):
    model = impose_random_masks(seeded(WideBottlenecks), prune_rate=0.5, N=16, seed=0, G=16)
    build = Int8Build(model, (2, 3, 6, 5), target=f"llvm -mcpu={cpu}")
    _assert_matches_reference(build)
    tiles = {entry.layer: entry.tile for entry in build.compiled.kernel_table}
    vnni = int8_path(build.compiled.target).name == "avx512-vnni"
    assert {layer for layer, tile in tiles.items() if "grouped-16" in tile} == ({"squeeze", "mix"} if vnni else set())


def test_haswell_builds_the_avx2_fallback_and_matches():
    build = Int8Build(seeded(SharedReaders), SHARED_SHAPE, target=HASWELL)
    assert {build.precisions()[layer] for layer in set(build.plan.convs) - {"dw"}} == {"int8/avx2-pmaddwd"}
    _assert_matches_reference(build)
    # which is no faster than fp32 (isa.Int8Path.faster_than_fp32): the compile report says so
    assert slow_int8_paths(build.compiled.kernel_table) == ["avx2-pmaddwd"]
    assert "note: the int8 layers run on avx2-pmaddwd" in format_kernel_table(build.compiled.kernel_table)


def test_the_report_notes_an_int8_path_slower_than_fp32(toy):
    """AVX-512 without VNNI (avx512-pmaddwd) is slower than fp32 on its CPUs: the compile report
    says so under the table; VNNI builds get no note."""
    table = toy.compiled.kernel_table
    as_path = lambda name: [  # noqa: E731
        dataclasses.replace(entry, precision=entry.precision.replace(int8_path(toy.compiled.target).name, name))
        for entry in table
    ]
    assert slow_int8_paths(as_path("avx512-pmaddwd")) == ["avx512-pmaddwd"]
    assert "note: the int8 layers run on avx512-pmaddwd" in format_kernel_table(as_path("avx512-pmaddwd"))
    for name in ("avx512-vnni", "avx-vnni"):
        assert slow_int8_paths(as_path(name)) == [] and "note:" not in format_kernel_table(as_path(name))


def test_the_python_api_refuses_calibration_it_cannot_use():
    model = seeded(SharedReaders).eval()
    with pytest.raises(CalibrationError, match=r"\(C, H, W\) = \(3, 8, 8\).*compiled for \(C, H, W\) = \(8, 8, 8\)"):
        compile(model, SHARED_SHAPE, precision="int8", calibration=[torch.zeros(4, 3, 8, 8)])
    with pytest.raises(CalibrationError, match=r"\(C, H, W\) = \(8, 16, 16\)"):
        compile(model, SHARED_SHAPE, precision="int8", calibration=[torch.zeros(4, 8, 16, 16)])
    with pytest.raises(CalibrationError, match="the calibration data is empty"):
        compile(model, SHARED_SHAPE, precision="int8", calibration=[])
    with pytest.raises(ConfigError, match="needs calibration"):
        compile(model, SHARED_SHAPE, precision="int8")
    with pytest.raises(ConfigError, match="calibration is for precision='int8'"):
        compile(model, SHARED_SHAPE, calibration=_calibration(SHARED_SHAPE))
