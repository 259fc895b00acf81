"""bf16 builds (``compile(..., precision="bf16")``, ``lowering/bf16.py``) against the eager bf16
reference of the same inference graph (``quantize.bf16_reference``): the numbers, which layers
the kernel table puts in bf16, the manifest, the pair packing of 1xN masks, and the refusals.
Models run only on a CPU with avx512_bf16; the packing and refusals everywhere."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

import torch.nn as nn  # noqa: E402

from subp_fx.codegen.errors import TargetError  # noqa: E402
from subp_fx.codegen.kernels.isa import bf16_path  # noqa: E402
from subp_fx.codegen.lowering.bf16 import pack_pairs, pack_wide_words  # noqa: E402
from subp_fx.codegen.lowering.lower import bf16_plan  # noqa: E402
from subp_fx.codegen.pipeline import compile, inference_graph  # noqa: E402
from subp_fx.codegen.runtime.compiled import load_compiled  # noqa: E402
from subp_fx.codegen.target import parse_target  # noqa: E402
from subp_fx.errors import ConfigError  # noqa: E402
from subp_fx.passes import impose_random_masks  # noqa: E402
from subp_fx.quantize import bf16_reference  # noqa: E402
from tests.toy_models import ToyNet, randomise_batchnorms, seeded, toy_input  # noqa: E402

HOST_HAS_BF16 = bf16_path(parse_target("llvm -mcpu=native")) is not None
needs_bf16_host = pytest.mark.skipif(not HOST_HAS_BF16, reason="this CPU has no avx512_bf16 to run a bf16 build")
BATCH_SHAPE = (2, 3, 16, 16)
# Compiled vs reference, as a fraction of the largest |logit|: both round the same float32 values
# to bf16 and sum exact products in float32, so they differ by summation order, and where that
# moves an activation across a bf16 rounding boundary, by one bf16 step of that one value.
# Measured (Zen 4, seeds 99 and 7): 1.3-1.7e-7 (G=4 masks), 0.8-1.5e-7 (G=1), with and without
# tensors stored bf16; the fp32 model differs by 4.5-4.7e-4.
TOLERANCE = 1e-5


class Bf16Build:
    """A model compiled in bf16, its inference graph, and the eager bf16 reference."""

    def __init__(self, model: nn.Module, shape: tuple[int, ...] = BATCH_SHAPE):
        model = model.eval()
        self.shape = shape
        self.compiled = compile(model, shape, target="llvm -mcpu=native", threads=1, precision="bf16")
        self.graph = inference_graph(model, shape).gm
        self.plan = bf16_plan(self.graph, shape)
        self.reference = bf16_reference(self.graph, self.plan.layers, self.plan.stored)

    def outputs(self, seed: int = 99):
        x = toy_input(seed, self.shape)
        with torch.no_grad():
            return self.compiled(x), self.reference(x).numpy(), self.graph(x).numpy()

    def precisions(self) -> dict[str, str]:
        return {entry.layer: entry.precision for entry in self.compiled.kernel_table}


def _toy(group: int) -> nn.Module:
    return impose_random_masks(randomise_batchnorms(seeded(ToyNet), 0), prune_rate=0.5, N=16, seed=0, G=group)


@pytest.fixture(scope="module")
def toy() -> Bf16Build:
    if not HOST_HAS_BF16:
        pytest.skip("this CPU has no avx512_bf16 to run a bf16 build")
    return Bf16Build(_toy(4))


def _assert_matches_reference(build: Bf16Build) -> None:
    for seed in (99, 7):
        got, expected, fp32 = build.outputs(seed)
        scale = np.abs(expected).max()
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE * scale)
        # and it is bf16: the fp32 graph differs by far more
        assert np.abs(got - fp32).max() > 10 * TOLERANCE * scale


def test_toy_net_equals_the_bf16_reference(toy):
    _assert_matches_reference(toy)


@needs_bf16_host
def test_masks_not_pruned_in_pairs_equal_the_reference_too():
    _assert_matches_reference(Bf16Build(_toy(1)))


def test_the_kernel_table_puts_exactly_the_1xn_kernel_convs_with_whole_zmm_blocks_in_bf16(toy):
    assert toy.precisions() == {
        "stem": "bf16/avx512-bf16->bf16",  # RGB read as 4 channels, the 4th zero; read only by dw
        "dw": "fp32 (bf16 in, bf16 out)",  # depthwise: float32 sums on its own kernel, bf16 storage
        "pw": "bf16/avx512-bf16",
        "grouped": "fp32",  # 8 outputs a group: N=8, not a whole zmm
        "block.conv1": "bf16/avx512-bf16->bf16",  # read only by conv2: stored bf16
        "block.conv2": "bf16/avx512-bf16",  # read by odd, an fp32 conv
        "block.downsample": "bf16/avx512-bf16->bf16",  # conv2's residual, widened in its epilogue
        "odd": "fp32",  # C_out=24: 16 does not divide it
        "head": "fp32",
    }
    table = {entry.layer: entry for entry in toy.compiled.kernel_table}
    assert table["stem"].in_channels == 3 and "_4to16_" in table["stem"].kernel  # the layer's C_in; the kernel reads 4
    assert table["block.conv2"].epilogue == "bias+residual+relu"


def test_the_plan_names_the_bf16_layers_and_the_tensors_stored_bf16(toy):
    bf16_layers = {entry.layer for entry in toy.compiled.kernel_table if entry.precision.startswith("bf16")}
    assert toy.plan.layers == bf16_layers
    # the stem's relu (dw's input), dw's relu (pw's input), block.conv1's relu (conv2's input) and the
    # shortcut (conv2's residual): every reader a bf16 conv or a depthwise conv
    stored = {node.name: node for node in toy.graph.graph.nodes if node.name in toy.plan.stored}
    assert {str(node.target) for node in stored.values() if node.op == "call_module"} == {"block.downsample"}
    assert len(stored) == 4


def test_the_manifest_round_trips_the_precision(toy, tmp_path):
    assert toy.compiled.manifest.precision == "bf16" and toy.compiled.manifest.calibration is None
    loaded = load_compiled(toy.compiled.export(tmp_path / "artefact"), threads=1)
    assert loaded.manifest.precision == "bf16" and loaded.kernel_table == toy.compiled.kernel_table
    x = toy_input(5, BATCH_SHAPE)
    np.testing.assert_array_equal(loaded(x), toy.compiled(x))


def test_a_target_without_avx512_bf16_is_refused_before_any_work():
    with pytest.raises(TargetError, match="needs a CPU with avx512_bf16.*znver3"):
        compile(_toy(4), BATCH_SHAPE, target="llvm -mcpu=znver3", precision="bf16")


def test_calibration_is_refused_for_bf16():
    with pytest.raises(ConfigError, match="a bf16 build calibrates nothing"):
        compile(_toy(4), BATCH_SHAPE, target="llvm -mcpu=znver4", precision="bf16", calibration=[])


def test_pairs_of_a_mask_pruned_in_pairs_are_its_channels():
    rng = np.random.default_rng(0)
    indices = np.array([[2, 3, 8, 9], [0, 1, 4, 5]])
    values = rng.standard_normal((2, 4, 3, 3, 16)).astype(np.float32)
    packed, starts = pack_pairs(values, indices)
    assert packed.shape == (2, 2, 3, 3, 16, 2)
    np.testing.assert_array_equal(starts, [[2, 8], [0, 4]])
    np.testing.assert_array_equal(packed[0, 1, :, :, :, 1], values[0, 3])


def test_a_channel_kept_without_its_partner_gets_a_zero_weight_and_short_rows_repeat_a_pair():
    rng = np.random.default_rng(1)
    indices = np.array([[1, 2, 3, 6], [0, 1, 4, 5]])  # row 0 touches pairs 0, 1, 3; row 1 pairs 0, 2
    values = rng.standard_normal((2, 4, 1, 1, 16)).astype(np.float32)
    packed, starts = pack_pairs(values, indices)
    np.testing.assert_array_equal(starts, [[0, 2, 6], [0, 4, 4]])
    # the same products: dense weights rebuilt from either form are equal
    for r in range(2):
        dense = np.zeros((8, 16), np.float32)
        dense[indices[r]] = values[r, :, 0, 0]
        rebuilt = np.zeros((8, 16), np.float32)
        for slot, start in enumerate(starts[r]):
            rebuilt[start : start + 2] += packed[r, slot, 0, 0].T
        np.testing.assert_array_equal(rebuilt, dense)
    assert not packed[1, 2].any()  # the repeated pair multiplies by zero


def test_wide_words_pack_each_group_of_4_as_lane_pairs_of_two_vectors():
    rng = np.random.default_rng(2)
    indices = np.array([[4, 5, 6, 7, 12, 13, 14, 15], [0, 1, 2, 3, 8, 9, 10, 11]])
    values = rng.standard_normal((2, 8, 1, 1, 16)).astype(np.float32)
    wide = pack_wide_words(*pack_pairs(values, indices))
    assert wide is not None
    packed, starts = wide
    assert packed.shape == (2, 2, 1, 1, 2, 16, 2)
    np.testing.assert_array_equal(starts, [[4, 12], [0, 8]])
    # vector 1, lane 2 * 3 + 1: output channel 8 + 3, the group's second pair (channels 14, 15 of row 0)
    np.testing.assert_array_equal(packed[0, 1, 0, 0, 1, 7], values[0, 6:8, 0, 0, 11])


def test_pairs_that_are_not_whole_groups_of_4_stay_32_bit_words():
    values = np.ones((1, 4, 1, 1, 16), np.float32)
    assert pack_wide_words(*pack_pairs(values, np.array([[2, 3, 4, 5]]))) is None  # pairs 1 and 2: no group
    assert pack_wide_words(*pack_pairs(values[:, :2], np.array([[0, 1]]))) is None  # one pair


def test_1x1_convs_of_masks_in_groups_of_4_read_64_bit_words(toy):
    kernels = {entry.layer: entry.kernel for entry in toy.compiled.kernel_table}
    assert "_w64" in kernels["pw"] and "_w64" in kernels["block.downsample"]
    assert "_w64" not in kernels["block.conv1"]  # 3x3: each broadcast already serves up to 3 taps
