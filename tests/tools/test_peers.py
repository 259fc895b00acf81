"""ONNX Runtime and OpenVINO as contenders: same weights, same input, precision stated."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn as nn

from subp_fx.tools import peers
from subp_fx.tools.benchmark import PRECISION_TOLERANCES, check_agreement
from subp_fx.tools.peers import PeerRun, peer_contenders


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
    monkeypatch.setitem(peers.PEER_ENGINES, "openvino_default", ("openvino", lambda *args: bf16))
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
