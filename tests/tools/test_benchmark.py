"""`bench` checks that every contender computes the same thing before it times any of them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("tvm")

from subp_fx.cli import main  # noqa: E402
from subp_fx.codegen.defaults import DEFAULT_TARGET  # noqa: E402
from subp_fx.errors import SubpError  # noqa: E402
from subp_fx.tools import latency  # noqa: E402
from subp_fx.tools.artifact import PYTORCH_MODEL_FILE, compile_to_directory, load_compile_source  # noqa: E402
from subp_fx.tools.benchmark import (  # noqa: E402
    AGREEMENT_TOLERANCE,
    BENCH_FIELDS,
    DENSE_NAME,
    SPARSE_NAME,
    DisagreementError,
    bench_compiled,
    check_agreement,
    format_bench,
)
from tests.conftest import small_recipe, write_recipe  # noqa: E402

QUICK = {"warmup": 0, "iters": 1, "torch_compile": False}


@pytest.fixture(scope="module")
def artefact(tmp_path_factory):
    """A SmallCNN (random weights, random uniform masks at 0.5) compiled with its dense twin."""
    root = tmp_path_factory.mktemp("bench")
    recipe = write_recipe(root / "r.yaml", small_recipe(root / "run"))
    compile_to_directory(load_compile_source(str(recipe)), root / "compiled", target=DEFAULT_TARGET, threads=1)
    return root / "compiled"


@pytest.fixture
def tampered(artefact, tmp_path):
    """A copy of the artefact whose PyTorch model no longer has the compiled weights (as after
    copying in a pytorch_model.pt from another compile)."""
    copy = tmp_path / "tampered"
    shutil.copytree(artefact, copy)
    model = torch.load(copy / PYTORCH_MODEL_FILE, weights_only=False)
    conv = next(module for module in model.modules() if isinstance(module, torch.nn.Conv2d))
    with torch.no_grad():
        conv.weight.mul_(1.5)
    torch.save(model, copy / PYTORCH_MODEL_FILE)
    return copy


def _no_timing(*args, **kwargs):
    raise AssertionError("a contender was timed")


def test_every_contender_is_checked_against_eager_and_the_check_is_recorded(artefact):
    result = bench_compiled(artefact, **QUICK)
    agreement = result["agreement"]
    assert agreement["reference"] == "pytorch_eager_dense" and agreement["tolerance"] == AGREEMENT_TOLERANCE
    assert set(agreement["contenders"]) == set(result["results"]) >= {SPARSE_NAME, DENSE_NAME}
    assert agreement["all_agree"] and agreement["max_abs_reference"] > 0
    for name, entry in agreement["contenders"].items():
        assert entry["agrees"] and entry["max_abs_diff"] <= 1e-4 * agreement["max_abs_reference"], name
    assert 0 <= agreement["sparse_vs_dense_max_abs_diff"] <= 1e-4 * agreement["max_abs_reference"]
    json.dumps(result, allow_nan=False)  # strict JSON: no NaN / Infinity anywhere
    table = format_bench(result)
    assert "max abs diff vs eager" in table and "MISMATCH" not in table
    assert "every contender agrees with PyTorch eager" in table
    assert "agreement" in BENCH_FIELDS and "--allow-mismatch" in BENCH_FIELDS["agreement"]
    assert set(result["precision"]) == set(result["results"]) and result["precision"][SPARSE_NAME] == "fp32"
    for name in ("onnxruntime_fp32", "openvino_fp32"):  # timed where installed, else said why not
        assert name in result["results"] or name in result["peers_skipped"]
    defaults = [name for name in result["results"] if name.startswith("openvino_default_")]
    assert "openvino_default" in result["peers_skipped"] or defaults


def test_no_peers_times_only_our_builds_and_pytorch(artefact):
    result = bench_compiled(artefact, peers=False, **QUICK)
    assert not any(name.startswith(("onnxruntime", "openvino")) for name in result["results"])
    assert result["peers_skipped"] == {}


def test_a_contender_that_disagrees_is_refused_before_anything_is_timed(artefact, monkeypatch):
    def off_by_one_percent(model, example):
        return lambda: model(example) * 1.01

    monkeypatch.setitem(latency.TORCH_BASELINES, "pytorch_off_by_one_percent", off_by_one_percent)
    monkeypatch.setattr(latency, "measure_interleaved", _no_timing)
    with pytest.raises(DisagreementError) as raised:
        bench_compiled(artefact, **QUICK)
    message = str(raised.value)
    assert isinstance(raised.value, SubpError)
    assert "pytorch_off_by_one_percent (max |difference|" in message and "--allow-mismatch" in message
    for agreeing in (SPARSE_NAME, DENSE_NAME, "pytorch_torchscript_dense"):
        assert f"{agreeing} (" not in message


def test_an_artefact_whose_builds_disagree_with_its_pytorch_model_is_refused_by_the_cli(tampered, capsys):
    status = main(["bench", str(tampered), "--iters", "1", "--warmup", "0", "--no-torch-compile"])
    err = capsys.readouterr().err
    flowed = " ".join(err.split())
    assert status == 2 and err.startswith("subp-fx: error:") and "Traceback" not in err
    assert "not benchmarking" in flowed and "subp_sparse (max |difference|" in flowed
    assert "subp_dense (max |difference|" in flowed and "Recompile the artefact" in flowed


def test_allow_mismatch_times_anyway_and_flags_the_disagreeing_contenders(tampered, tmp_path, capsys):
    out = tmp_path / "b.json"
    argv = ["bench", str(tampered), "--iters", "1", "--warmup", "0", "--no-torch-compile", "--allow-mismatch"]
    status = main([*argv, "--json", str(out)])
    printed = capsys.readouterr().out
    assert status == 0
    agreement = json.loads(out.read_text())["agreement"]
    assert not agreement["all_agree"]
    flags = {name: entry["agrees"] for name, entry in agreement["contenders"].items()}
    # the peers (ONNX Runtime, OpenVINO) run the PyTorch model's weights: they agree with eager
    assert flags == {name: name not in (SPARSE_NAME, DENSE_NAME) for name in flags}
    assert {SPARSE_NAME, DENSE_NAME, "pytorch_eager_dense", "pytorch_torchscript_dense"} <= set(flags)
    assert agreement["sparse_vs_dense_max_abs_diff"] <= 1e-4 * agreement["max_abs_reference"]
    assert "MISMATCH: subp_sparse, subp_dense disagree" in printed
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in printed.splitlines() if line.startswith("| ")]
    assert [row[0] for row in rows if row[-1].endswith("MISMATCH")] == [SPARSE_NAME, DENSE_NAME]


def test_check_agreement_edge_cases():
    reference = np.array([[1.0, -4.0]], dtype=np.float32)
    result = check_agreement(
        {
            "close": reference + 3e-3,  # 3e-3 <= 1e-3 * 4
            "far": reference + 5e-3,
            "other_shape": reference.T,
            "not_finite": np.array([[np.nan, -4.0]]),
            "tensor": torch.from_numpy(reference),
        },
        torch.from_numpy(reference),
    )
    entries = result["contenders"]
    assert entries["close"]["agrees"] and entries["tensor"] == {"max_abs_diff": 0.0, "agrees": True}
    assert not entries["far"]["agrees"] and entries["far"]["max_abs_diff"] == pytest.approx(5e-3, rel=1e-3)
    assert entries["other_shape"] == {"max_abs_diff": None, "agrees": False}
    assert entries["not_finite"] == {"max_abs_diff": None, "agrees": False}
    assert not result["all_agree"] and result["sparse_vs_dense_max_abs_diff"] is None
    # an all-zero reference is compared with the tolerance as an absolute bound
    zero = np.zeros((1, 2), dtype=np.float32)
    assert check_agreement({"a": zero + 5e-4}, zero)["all_agree"]
    assert not check_agreement({"a": zero + 5e-3}, zero)["all_agree"]
