"""The in-model profile: every kernel call of a real run, matched to its layer, summing to the
model's latency."""

from __future__ import annotations

import json

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

from subp_fx.codegen.api import compile  # noqa: E402
from subp_fx.codegen.runtime.limits import COMPUTE, EFFICIENT_SHARE, MEMORY  # noqa: E402
from subp_fx.codegen.runtime.profile import format_profile, profile_model  # noqa: E402
from subp_fx.passes import impose_random_masks, prepare  # noqa: E402
from tests.toy_models import ToyNet, randomise_batchnorms, seeded, toy_input  # noqa: E402


@pytest.fixture(scope="module")
def compiled():
    model = randomise_batchnorms(seeded(ToyNet)).eval()
    sparse = impose_random_masks(prepare(model, {"N": 16}), prune_rate=0.5, N=16, seed=0).eval()
    return compile(sparse, toy_input())


def test_every_layer_appears_once_with_its_kernel(compiled):
    profile = profile_model(compiled, runs=3, warmup=1)
    layers = [call.layer for call in profile.calls if call.layer is not None]
    # execution order: a fused conv runs where its group ends (conv2 + residual after downsample)
    assert sorted(layers) == sorted(entry.layer for entry in compiled.kernel_table)
    assert layers.index("block.downsample") < layers.index("block.conv2")
    for call in profile.calls:
        if call.layer is not None:
            entry = next(entry for entry in compiled.kernel_table if entry.layer == call.layer)
            assert call.kernel == entry.kernel and call.macs == entry.work_macs and call.kind == entry.kind
        else:  # layout changes, pooling and the like keep their kernel's name
            assert call.kind == "other" and not call.kernel.startswith("vm.builtin.")
    assert [call.index for call in profile.calls] == list(range(len(profile.calls)))
    assert "input_to_nhwc" in {call.kernel for call in profile.calls}


def test_times_are_positive_and_sum_to_about_the_model_latency(compiled):
    profile = profile_model(compiled, runs=5, warmup=2)
    assert all(call.median_us > 0 for call in profile.calls)
    assert profile.latency_us > 0 and profile.instrumented_us > 0
    # Loose: the suite runs on shared, loaded machines; benchmarks check the 5% the issue asks.
    assert 0.3 < profile.coverage < 3.0
    record = json.loads(json.dumps(profile.to_json()))
    assert record["coverage"] == pytest.approx(profile.coverage)
    assert len(record["calls"]) == len(profile.calls)
    text = format_profile(profile)
    assert "model" in text and compiled.kernel_table[0].layer in text
    # header, the 2 calls, the totals, the machine's limits, the calls below their limits
    assert len(format_profile(profile, top=2).splitlines()) == 1 + 2 + 3


def test_every_call_is_held_against_its_limit(compiled):
    profile = profile_model(compiled, runs=3, warmup=1)
    shape = compiled.input_shape
    input_bytes = 4 * shape[0] * shape[1] * shape[2] * shape[3]
    layout = next(call for call in profile.calls if call.kernel == "input_to_nhwc")
    assert layout.nbytes == 2 * input_bytes  # read NCHW, written NHWC, both float32
    assert layout.bound == MEMORY and layout.macs is None
    for call in profile.calls:
        assert call.nbytes > 0 and call.limit_us > 0 and call.bound in (COMPUTE, MEMORY)
        expected = profile.limits.limit_us(call.macs, call.precision, call.nbytes)
        assert (call.limit_us, call.bound) == expected
        assert call.share_of_limit == pytest.approx(call.limit_us / call.median_us)
    slow = profile.below_limit()
    assert all(call.share_of_limit < EFFICIENT_SHARE for call in slow)
    assert [call.limit_us - call.median_us for call in slow] == sorted(call.limit_us - call.median_us for call in slow)
    assert profile.limits_us == pytest.approx(sum(call.limit_us for call in profile.calls))
    record = json.loads(json.dumps(profile.to_json()))
    assert record["limits"]["threads"] == compiled.threads
    assert record["calls"][0]["share_of_limit"] == pytest.approx(profile.calls[0].share_of_limit)
    assert "of limit" in format_profile(profile) and "below 85% of their limit" in format_profile(profile)


def test_limits_can_be_left_out(compiled):
    profile = profile_model(compiled, runs=2, warmup=0, limits=False)
    assert profile.limits is None and profile.limits_us is None and profile.below_limit() == []
    assert all(call.limit_us is None and call.share_of_limit is None for call in profile.calls)
    text = format_profile(profile)
    assert "of limit" not in text and len(format_profile(profile, top=2).splitlines()) == 1 + 2 + 1


def test_the_profiled_run_computes_the_model(compiled):
    # profiling must not disturb the model: the same input gives the same output afterwards
    x = toy_input().numpy()
    before = compiled(x)
    profile_model(compiled, x, runs=2, warmup=0)
    np.testing.assert_array_equal(compiled(x), before)
