"""int8 builds (``compile(..., precision="int8")``, ``lowering/int8.py``) against the eager
fake-quant reference of the same inference graph (``quantize.fake_quant_reference``): the numbers,
which convs the kernel table puts in int8, where activations are stored as uint8, the manifest,
and the AVX2 fallback (haswell target)."""

from __future__ import annotations

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
    """conv1's output ``y`` feeds an int8 conv (conv2) but also a depthwise conv (fp32) and a
    spatial mean: it is quantised once and its fp32 readers get the dequantised copy (the path
    ``lowering.int8.after_lowered`` takes when not every reader reads uint8). Input (B, 8, H, W):
    the input itself is quantised for conv1."""

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
def shared() -> Int8Build:
    return Int8Build(seeded(SharedReaders), SHARED_SHAPE)


def test_toy_net_equals_the_fake_quant_reference(toy):
    _assert_matches_reference(toy)


def test_the_kernel_table_names_the_int8_path_for_exactly_the_planned_convs(toy):
    path = int8_path(toy.compiled.target).name
    precisions = toy.precisions()
    # the RGB stem too: its input is quantised into 4 channels, the 4th with zero weights
    assert set(toy.plan.convs) == {"stem", "pw", "block.conv1", "block.conv2", "block.downsample", "odd"}
    stem = next(entry for entry in toy.compiled.kernel_table if entry.layer == "stem")
    assert (stem.in_channels, stem.kept_per_row) == (4, 4)
    lowered = lower_graph(toy.graph, BATCH_SHAPE, toy.compiled.target, activation_ranges=toy.ranges)
    names = {global_var.name_hint for global_var in lowered.module.functions}
    assert f"quantize_{BATCH_SHAPE[0]}x16x16x3_to4" in names
    in_int8 = {layer for layer, precision in precisions.items() if precision != "fp32"}
    assert in_int8 == set(toy.plan.convs)
    assert all(precisions[layer].split("->")[0] == f"int8/{path}" for layer in in_int8)
    # the depthwise and grouped convs and the linear head stay fp32, with the reason
    assert {layer for layer, precision in precisions.items() if precision == "fp32"} == {"dw", "grouped", "head"}
    assert set(toy.plan.fp32_convs) >= {"dw", "grouped"}
    assert "precision: int8 (calibrated on 12 images in 3 batch(es) from toy)" in toy.compiled.report()


def test_uint8_storage_where_every_reader_reads_uint8(toy):
    precisions = toy.precisions()
    # block.conv1's output feeds only block.conv2; the block's output (conv2's epilogue: + the
    # downsample, ReLU) feeds only `odd`: both are written as uint8 by their kernels
    stored = {layer for layer, precision in precisions.items() if precision.endswith("->u8")}
    assert stored == {"block.conv1", "block.conv2"}
    # pw and odd feed fp32 convs / the pooling; the downsample is conv2's residual (fp32)
    assert not precisions["pw"].endswith("->u8") and not precisions["block.downsample"].endswith("->u8")


def test_a_dense_conv_whose_c_out_is_not_a_multiple_of_16_runs_int8_padded_and_sliced(toy):
    odd = next(entry for entry in toy.compiled.kernel_table if entry.layer == "odd")
    assert odd.kind == "dense" and odd.out_channels == 24 and odd.precision.startswith("int8/")
    assert "64to32" in odd.kernel  # 24 output channels computed as 32, the 8 zero ones sliced off
    assert not odd.precision.endswith("->u8")  # never stored uint8 when sliced after the call


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
    assert set(shared.plan.convs) == {"conv1", "conv2"} and shared.precisions()["dw"] == "fp32"
    assert not any(precision.endswith("->u8") for precision in shared.precisions().values())
    lowered = lower_graph(shared.graph, SHARED_SHAPE, shared.compiled.target, activation_ranges=shared.ranges)
    names = sorted(global_var.name_hint for global_var in lowered.module.functions)
    # the input (for conv1) and y (for conv2) are quantised; y alone is dequantised for dw and the mean
    assert [name for name in names if name.startswith("quantize_")] == ["quantize_2x8x8x16", "quantize_2x8x8x8"]
    assert [name for name in names if name.startswith("dequantize_")] == ["dequantize_2x8x8x16"]


def test_haswell_builds_the_avx2_fallback_and_matches():
    build = Int8Build(seeded(SharedReaders), SHARED_SHAPE, target=HASWELL)
    assert {build.precisions()[layer] for layer in build.plan.convs} == {"int8/avx2-pmaddwd"}
    _assert_matches_reference(build)


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
