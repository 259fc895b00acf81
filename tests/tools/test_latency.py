"""The benchmark harness's bookkeeping (not timing: speed is measured by benchmarks/, not tests)."""

import pytest
import torch

from subp_fx.tools.latency import TORCH_BASELINES, TORCH_REDUCED_BASELINES, _stats, measure_interleaved


def test_interleaving_warmup_blocks_and_counts():
    calls = []
    contenders = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    stats = measure_interleaved(contenders, batch=4, warmup=2, iters=3, block=2, settle_s=0)
    assert calls[:6] == ["a", "a", "b", "b", "c", "c"]
    # round 1: each contender 1 untimed + 2 timed runs; round 2: 1 untimed + the 1 run left
    runs = calls[6:]
    blocks = [runs[start : start + 3] for start in range(0, 9, 3)] + [runs[start : start + 2] for start in (9, 11, 13)]
    assert all(len(set(block)) == 1 for block in blocks)
    assert sorted(block[0] for block in blocks[:3]) == sorted(block[0] for block in blocks[3:]) == ["a", "b", "c"]
    assert {s.iters for s in stats.values()} == {3} and stats["a"].batch == 4
    assert len(stats["a"].samples_ms) == 3 and stats["a"].median_ms == sorted(stats["a"].samples_ms)[1]


def test_each_round_is_shuffled_afresh():
    """A rotation puts every contender after the same predecessor each round; shuffling does not."""
    calls = []
    contenders = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c", "d")}
    measure_interleaved(contenders, batch=1, warmup=0, iters=12, block=1, settle_s=0)
    order = [name for index, name in enumerate(calls) if index % 2 == 0]  # the untimed run of each block
    rounds = [tuple(order[start : start + 4]) for start in range(0, len(order), 4)]
    assert all(sorted(round_) == ["a", "b", "c", "d"] for round_ in rounds) and len(rounds) == 12
    predecessors_of_a = {round_[round_.index("a") - 1] for round_ in rounds if round_.index("a") > 0}
    assert len(set(rounds)) > 3 and len(predecessors_of_a) > 1


def test_statistics():
    stats = _stats("x", 8, [4.0, 1.0, 2.0, 3.0, 100.0])
    assert stats.median_ms == 3.0 and stats.min_ms == 1.0 and stats.mean_ms == pytest.approx(22.0)
    assert stats.throughput_per_s == pytest.approx(8000 / 3.0)
    assert stats.p99_ms > stats.p90_ms > stats.median_ms
    assert stats.samples_ms == (4.0, 1.0, 2.0, 3.0, 100.0) and stats.as_dict()["samples_ms"][-1] == 100.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="iters"):
        measure_interleaved({"a": lambda: None}, batch=1, iters=0)
    with pytest.raises(ValueError, match="block"):
        measure_interleaved({"a": lambda: None}, batch=1, block=0)


def test_torch_baselines_agree_with_eager():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.Flatten())
    model.eval()
    example = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        expected = model(example)
    for name in ("pytorch_eager_dense", "pytorch_torchscript_dense"):
        torch.testing.assert_close(TORCH_BASELINES[name](model, example)(), expected, rtol=1e-5, atol=1e-5)


def test_the_bf16_torch_baseline_computes_in_bf16():
    model = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3), torch.nn.ReLU(), torch.nn.Flatten())
    model.eval()
    example = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        expected = model(example)
    precision, build = TORCH_REDUCED_BASELINES["pytorch_compile_bf16"]
    got = build(model, example)()
    assert precision == "bf16" and got.dtype == torch.float32
    difference = float((got - expected).abs().max() / expected.abs().max())
    assert 1e-5 < difference < 3e-2  # bf16's 8-bit mantissa: not fp32, and not wrong
