"""A batch compiled in sub-batches: the same outputs as eager and as the one-pass build (fp32 and
int8), the kernel table's calls and MACs, the profile matching every sub-batch's calls to its
layers, the size chosen by the largest activation, and models that mix samples refused."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

import torch.nn as nn  # noqa: E402

from subp_fx.codegen.lowering import sub_batches  # noqa: E402
from subp_fx.codegen.lowering.graph_view import GraphView  # noqa: E402
from subp_fx.codegen.lowering.lower import lower_graph  # noqa: E402
from subp_fx.codegen.pipeline import compile, inference_graph  # noqa: E402
from subp_fx.codegen.runtime.compiled import load_compiled  # noqa: E402
from subp_fx.codegen.runtime.profile import profile_model  # noqa: E402
from subp_fx.errors import ConfigError  # noqa: E402
from subp_fx.passes import impose_random_masks  # noqa: E402
from tests.toy_models import ToyNet, seeded, toy_input  # noqa: E402

SHAPE = (4, 3, 16, 16)
RELATIVE_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def toy() -> nn.Module:
    torch.manual_seed(0)
    return impose_random_masks(seeded(ToyNet), 0.5, 16).eval()


@pytest.fixture(scope="module")
def builds(toy):
    return {size: compile(toy, SHAPE, threads=1, sub_batch=size) for size in (1, 2, 4)}


def test_every_sub_batch_size_matches_eager_and_the_one_pass_build(toy, builds):
    x = toy_input(7, SHAPE)
    with torch.no_grad():
        expected = toy(x).numpy()
    one_pass = builds[4](x)
    assert np.abs(one_pass - expected).max() <= RELATIVE_TOLERANCE * np.abs(expected).max()
    for size in (1, 2):
        assert builds[size].input_shape == SHAPE
        np.testing.assert_allclose(builds[size](x), one_pass, rtol=0, atol=1e-6 * np.abs(expected).max())


def test_the_kernel_table_counts_a_call_per_sub_batch_and_the_whole_batchs_macs(builds):
    tables = {size: builds[size].kernel_table for size in builds}
    for size, table in tables.items():
        assert {entry.calls for entry in table} == {SHAPE[0] // size}
    assert [entry.macs for entry in tables[1]] == [entry.macs for entry in tables[4]]
    assert [entry.macs for entry in tables[2]] == [entry.macs for entry in tables[4]]


def test_the_profile_matches_each_sub_batchs_calls_to_its_layers(builds):
    compiled = builds[2]
    profile = profile_model(compiled, runs=2, warmup=1, limits=False)
    kernels = [call for call in profile.calls if call.layer is not None]
    layers = [entry.layer for entry in compiled.kernel_table]
    assert sorted(call.layer for call in kernels) == sorted(layers * 2)
    assert sum(call.macs for call in kernels) == sum(entry.work_macs for entry in compiled.kernel_table)
    names = [call.kernel for call in profile.calls]
    assert "sub_batch" not in names
    assert sum(name.startswith("batch_rows_") for name in names) == 2 and names[-1].startswith("stack_2x2_rows")


def test_an_int8_batch_in_sub_batches_computes_what_the_one_pass_build_does(toy):
    calibration = [toy_input(seed, (4, *SHAPE[1:])) for seed in (1, 2)]
    int8 = {
        size: compile(toy, SHAPE, threads=1, precision="int8", calibration=calibration, sub_batch=size)
        for size in (2, 4)
    }
    x = toy_input(3, SHAPE)
    np.testing.assert_array_equal(int8[2](x), int8[4](x))


def _view(model: nn.Module, shape) -> GraphView:
    return GraphView(inference_graph(model, shape).gm, shape)


def test_the_sub_batch_is_the_largest_divisor_within_the_activation_budget(toy, monkeypatch):
    view = _view(toy, (8, 3, 16, 16))
    largest = 4 * 16 * 16 * 32  # bytes a sample of ToyNet's largest map (32 channels at 16x16)
    for budget, expected in ((largest * 100, 8), (largest * 3, 2), (largest * 4, 4), (largest // 2, 1)):
        monkeypatch.setattr(sub_batches, "MAX_SUB_BATCH_ACTIVATION_BYTES", budget)
        assert sub_batches.sub_batch_size(view) == expected
    assert sub_batches.sub_batch_size(_view(toy, (1, 3, 16, 16))) == 1


class MixesSamples(nn.Module):
    """A head that flattens the whole batch into one row: its samples are not independent (the
    lowering refuses that reshape anyway; the sub-batch checks do not rely on it)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Linear(4 * 16, 5)

    def forward(self, x):
        pooled = torch.relu(self.conv(x)).mean((2, 3))
        return self.fc(pooled.reshape(1, -1))


def test_a_model_that_mixes_samples_runs_as_one_batch(toy, monkeypatch):
    view = _view(MixesSamples().eval(), SHAPE)
    assert not sub_batches.samples_are_independent(view)
    assert sub_batches.sub_batch_size(view) == SHAPE[0]
    assert sub_batches.samples_are_independent(_view(toy, SHAPE))
    # were such a model lowerable, asking for sub-batches would be refused
    monkeypatch.setattr("subp_fx.codegen.lowering.lower.samples_are_independent", lambda view: False)
    with pytest.raises(ConfigError, match="mixes samples"):
        lower_graph(inference_graph(toy, SHAPE).gm, SHAPE, sub_batch=2)


@pytest.mark.parametrize("size", [3, 0, 8, True])
def test_a_sub_batch_that_does_not_divide_the_batch_is_refused(toy, size):
    with pytest.raises(ConfigError, match=r"sub_batch must divide the batch 4 \(valid: 1, 2, 4\)"):
        lower_graph(inference_graph(toy, SHAPE).gm, SHAPE, sub_batch=size)


def test_the_report_and_the_exported_artefact_keep_the_sub_batches(builds, tmp_path):
    assert "batch 4 runs in 2 sub-batches of 2" in builds[2].manifest.report()
    assert "sub-batches" not in builds[4].manifest.report()
    builds[2].export(tmp_path / "compiled")
    loaded = load_compiled(tmp_path / "compiled")
    assert loaded.manifest.sub_batches == 2 and {entry.calls for entry in loaded.kernel_table} == {2}
    x = toy_input(5, SHAPE)
    np.testing.assert_array_equal(loaded(x), builds[2](x))
