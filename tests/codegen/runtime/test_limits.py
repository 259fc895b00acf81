"""The machine limits a profile holds each call against: the roofline arithmetic, and the probes
that measure its rates."""

from __future__ import annotations

import pytest

tvm = pytest.importorskip("tvm")

from subp_fx.codegen.defaults import DEFAULT_TARGET  # noqa: E402
from subp_fx.codegen.kernels.isa import vector_isa  # noqa: E402
from subp_fx.codegen.runtime.kernel_table import INT8_DEPTHWISE_PRECISION  # noqa: E402
from subp_fx.codegen.runtime.limits import COMPUTE, MEMORY, MachineLimits, measure_limits  # noqa: E402
from subp_fx.codegen.target import parse_target  # noqa: E402
from subp_fx.codegen.threads import get_num_threads  # noqa: E402

KIB = 1024


def _limits(**changes) -> MachineLimits:
    values = dict(
        target="llvm",
        threads=2,
        vector_isa="avx512",
        int8_path="avx512-vnni",
        fp32_macs_per_us=100_000.0,  # 100 GMAC/s
        int8_macs_per_us=400_000.0,
        bandwidth=((32 * KIB, 20_000.0), (512 * KIB, 100_000.0), (8 * 1024 * KIB, 40_000.0)),
    )
    return MachineLimits(**(values | changes))


def test_a_working_set_streams_at_the_rate_of_the_smallest_measured_size_holding_it():
    limits = _limits()
    assert limits.bytes_per_us(1) == 20_000.0
    assert limits.bytes_per_us(32 * KIB) == 20_000.0
    assert limits.bytes_per_us(32 * KIB + 1) == 100_000.0
    assert limits.bytes_per_us(512 * KIB) == 100_000.0
    assert limits.bytes_per_us(10**9) == 40_000.0  # past the largest: the largest's rate


def test_the_arithmetic_a_layer_does_picks_its_rate():
    limits = _limits()
    assert limits.macs_per_us("fp32") == 100_000.0
    assert limits.macs_per_us("int8/avx512-vnni->u8") == 400_000.0
    assert limits.macs_per_us("int8/avx2-pmaddwd") == 400_000.0
    # the int8 depthwise kernel sums exact integers in float32 FMAs
    assert limits.macs_per_us(INT8_DEPTHWISE_PRECISION + "->u8") == 100_000.0


def test_the_longer_of_the_compute_and_memory_times_is_the_limit():
    limits = _limits()
    # 1 M MACs in fp32 = 10 us; 100 KiB at 100 GB/s = about 1 us: compute bound
    assert limits.limit_us(1_000_000, "fp32", 100 * KIB) == (pytest.approx(10.0), COMPUTE)
    # the same in int8: 2.5 us, still above the memory time
    assert limits.limit_us(1_000_000, "int8/avx512-vnni", 100 * KIB) == (pytest.approx(2.5), COMPUTE)
    # 4 MiB of bytes at 40 GB/s = 105 us: memory bound
    assert limits.limit_us(1_000_000, "fp32", 4 * 1024 * KIB) == (pytest.approx(4 * 1024 * KIB / 40_000.0), MEMORY)
    # no multiply-adds (a layout change): memory only
    assert limits.limit_us(None, "-", 16 * KIB) == (pytest.approx(16 * KIB / 20_000.0), MEMORY)


@pytest.mark.parametrize("target_text", [DEFAULT_TARGET, "llvm -mcpu=haswell"])
def test_measured_rates_are_positive_and_ordered_by_size(target_text):
    if "haswell" in target_text and vector_isa(parse_target(DEFAULT_TARGET)).name not in ("avx2", "avx512"):
        pytest.skip("the haswell (AVX2) code needs an AVX2 host to run")
    target = parse_target(target_text)
    limits = measure_limits(target, get_num_threads())
    assert limits.threads == get_num_threads()
    assert limits.fp32_macs_per_us > 0 and limits.int8_macs_per_us > 0
    sizes = [size for size, _ in limits.bandwidth]
    assert sizes == sorted(sizes) and all(rate > 0 for _, rate in limits.bandwidth)
    if "haswell" in target_text:
        assert (limits.vector_isa, limits.int8_path) == ("avx2", "avx2-pmaddwd")
    assert measure_limits(target, get_num_threads()) is limits  # measured once per process
    assert "fp32" in limits.describe() and limits.to_json()["bandwidth"][0][0] == sizes[0]


def test_the_best_of_two_measurements_keeps_each_faster_rate():
    slow = _limits(
        fp32_macs_per_us=50_000.0, bandwidth=((32 * KIB, 30_000.0), (512 * KIB, 50_000.0), (8192 * KIB, 1.0))
    )
    best = _limits().best_of(slow)
    assert best.fp32_macs_per_us == 100_000.0 and best.int8_macs_per_us == 400_000.0
    assert best.bandwidth == ((32 * KIB, 30_000.0), (512 * KIB, 100_000.0), (8192 * KIB, 40_000.0))
    assert slow.best_of(_limits()) == best
    with pytest.raises(ValueError, match="same target"):
        _limits().best_of(_limits(threads=1))


def test_measuring_again_never_lowers_a_rate():
    target = parse_target(DEFAULT_TARGET)
    first = measure_limits(target, get_num_threads())
    again = measure_limits(target, get_num_threads(), again=True)
    assert again.fp32_macs_per_us >= first.fp32_macs_per_us and again.int8_macs_per_us >= first.int8_macs_per_us
    assert all(new >= old for (_, new), (_, old) in zip(again.bandwidth, first.bandwidth))
    assert measure_limits(target, get_num_threads()) is again
