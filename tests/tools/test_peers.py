"""ONNX Runtime and OpenVINO as contenders: same weights, same input, precision stated."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn as nn

from subp_fx.errors import DataError
from subp_fx.tools import peers
from subp_fx.tools.benchmark import PRECISION_TOLERANCES, check_agreement
from subp_fx.tools.peers import PeerEngine, PeerRun, peer_contenders


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    ).eval()


def test_every_installed_peer_computes_what_eager_computes(tmp_path):
    model, example = _small_cnn(), torch.randn(2, 3, 12, 12)
    built = peer_contenders(model, example, threads=1, workdir=tmp_path)
    with torch.inference_mode():
        expected = model(example).numpy()
    for engine in ("onnxruntime", "openvino"):
        if importlib.util.find_spec(engine) is None:
            assert any(engine in why for why in built.skipped.values())
    assert (tmp_path / "model.onnx").is_file() or not built.runs
    for name, run in built.runs.items():
        got = np.asarray(run.run())
        assert got.shape == expected.shape, name
        tolerance = PRECISION_TOLERANCES[run.precision] * np.abs(expected).max()
        assert np.abs(got - expected).max() <= tolerance, name
        assert run.engine.split()[0] in name


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
def test_openvino_default_is_a_separate_column_only_when_it_is_not_fp32(tmp_path, monkeypatch):
    model, example = _small_cnn(), torch.randn(1, 3, 8, 8)
    built = peer_contenders(model, example, 1, tmp_path, engines=["openvino_fp32", "openvino_default"])
    assert built.runs["openvino_fp32"].precision == "fp32"
    default_names = [name for name in built.runs if name.startswith("openvino_default")]
    if default_names:  # a CPU where OpenVINO picks bf16 by itself
        assert default_names == [f"openvino_default_{built.runs[default_names[0]].precision}"]
        assert built.runs[default_names[0]].precision != "fp32"
    else:
        assert "fp32" in built.skipped["openvino_default"]
    # as on a CPU with avx512_bf16: the column is labelled with the precision OpenVINO resolved to
    bf16 = PeerRun(lambda: np.zeros((1, 5), np.float32), "bf16", "openvino test")
    monkeypatch.setitem(peers.PEER_ENGINES, "openvino_default", PeerEngine(("openvino",), lambda *args: bf16))
    built = peer_contenders(model, example, 1, tmp_path, engines=["openvino_default"])
    assert list(built.runs) == ["openvino_default_bf16"] and built.runs["openvino_default_bf16"] is bf16


def test_a_missing_engine_is_skipped_with_a_note_not_an_error(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    built = peer_contenders(_small_cnn(), torch.randn(1, 3, 8, 8), 1, tmp_path)
    assert "openvino is not installed" in built.skipped["openvino_fp32"]
    assert "subp-fx[peers]" in built.skipped["openvino_default"]
    assert not any(name.startswith("openvino") for name in built.runs)


def test_unknown_engines_are_named(tmp_path):
    with pytest.raises(ValueError, match="tensorrt.*valid"):
        peer_contenders(_small_cnn(), torch.randn(1, 3, 8, 8), 1, tmp_path, engines=["tensorrt"])


def test_reduced_precision_contenders_are_checked_against_their_own_tolerance():
    reference = np.array([10.0, -4.0, 2.0])
    off_two_percent = reference + 0.2
    result = check_agreement(
        {"bf16_engine": off_two_percent, "fp32_engine": off_two_percent},
        reference,
        tolerances={"bf16_engine": PRECISION_TOLERANCES["bf16"]},
    )
    bf16 = result["contenders"]["bf16_engine"]
    assert bf16 == {"max_abs_diff": pytest.approx(0.2), "agrees": True, "tolerance": 0.05}
    assert not result["contenders"]["fp32_engine"]["agrees"] and not result["all_agree"]


needs_int8_engines = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("openvino") is None,
    reason="onnxruntime and openvino are needed for the int8 peers",
)


class _TwoConvResidual(nn.Module):
    """Conv, ReLU, conv, residual add, ReLU, average pool, fc: every layer kind the int8 engines fuse."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        y = torch.relu(self.conv1(x))
        z = torch.relu(self.conv2(y) + y)
        return self.fc(nn.functional.adaptive_avg_pool2d(z, 1).flatten(1))


def _int8_case(tmp_path, calibration_scale: float):
    """The int8 peers of a seeded tiny model, calibrated on 8 batches of normal data times
    ``calibration_scale``; returns them with eager's logits on 8 normal inputs."""
    torch.manual_seed(0)
    model, example = _TwoConvResidual().eval(), torch.randn(8, 3, 16, 16)
    generator = torch.Generator().manual_seed(100)
    calibration = (torch.randn(2, 3, 16, 16, generator=generator) * calibration_scale for _ in range(8))
    built = peer_contenders(
        model, example, 1, tmp_path, engines=["onnxruntime_int8", "openvino_int8"], calibration=calibration
    )
    with torch.inference_mode():
        return built, model(example).numpy()


def _relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(got - expected) / np.linalg.norm(expected))


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    return _int8_case(tmp_path_factory.mktemp("int8"), calibration_scale=1.0)


@needs_int8_engines
def test_int8_peers_run_int8_and_agree_with_the_fp32_model(calibrated):
    built, expected = calibrated
    assert set(built.runs) == {"onnxruntime_int8", "openvino_int8"} and not built.skipped
    assert built.quantize_s > 0
    for name, run in built.runs.items():
        got = np.asarray(run.run())
        assert got.shape == expected.shape, name
        assert run.precision == "int8" and run.engine.split()[0] in name
        # measured 0.8% (both engines give the same numbers); calibration 10x off gives 3-60%
        assert _relative_error(got, expected) < 0.02, name
        assert (got.argmax(1) == expected.argmax(1)).sum() >= 7, name


@needs_int8_engines
@pytest.mark.parametrize("scale", [0.1, 10.0])
def test_the_agreement_bound_fails_when_calibration_ranges_are_wrong(tmp_path, scale):
    built, expected = _int8_case(tmp_path, calibration_scale=scale)
    assert _relative_error(np.asarray(built.runs["onnxruntime_int8"].run()), expected) > 0.02


@needs_int8_engines
def test_int8_precision_is_read_from_the_graph_the_engine_runs(tmp_path):
    """Given the unquantised model, the int8 builders see float convolutions and say fp32."""
    model, example = _small_cnn(), torch.randn(1, 3, 8, 8)
    onnx_path = peers.export_onnx(model, example, tmp_path / "model.onnx")
    for name in ("onnxruntime_int8", "openvino_int8"):
        assert peers.PEER_ENGINES[name].build(onnx_path, example.numpy(), 1).precision == "fp32", name


def test_int8_peers_without_calibration_are_skipped_with_a_note(tmp_path):
    built = peer_contenders(_small_cnn(), torch.randn(1, 3, 8, 8), 1, tmp_path)
    for name in ("onnxruntime_int8", "openvino_int8"):
        assert name not in built.runs
        assert "calibration" in built.skipped[name] or "not installed" in built.skipped[name]
    assert not (tmp_path / "model.int8.onnx").exists() and built.quantize_s is None


def test_int8_in_openvino_needs_onnxruntime_to_quantise(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    built = peer_contenders(
        _small_cnn(), torch.randn(1, 3, 8, 8), 1, tmp_path, engines=["openvino_int8"], calibration=[np.zeros(1)]
    )
    assert built.skipped["openvino_int8"].startswith("onnxruntime") and not built.runs


@needs_int8_engines
def test_bad_calibration_batches_are_refused_before_anything_is_built(tmp_path):
    with pytest.raises(DataError, match=r"calibration batch 0 has shape \(2, 1, 8, 8\).*\(any N, 3, 8, 8\)"):
        peer_contenders(
            _small_cnn(), torch.randn(1, 3, 8, 8), 1, tmp_path, ["onnxruntime_int8"], [torch.zeros(2, 1, 8, 8)]
        )
    assert not (tmp_path / "model.int8.onnx").exists()
