"""The GPU benchmarks and the GPU check script run on a CPU with tiny settings (plumbing only)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_training_benchmark_runs_on_cpu(tmp_path):
    out = tmp_path / "gpu_training.json"
    argv = ["--device", "cpu", "--model", "resnet18", "--batch", "2", "--image-size", "32", "--steps", "2"]
    argv += ["--warmup", "1", "--rounds", "1", "--mask-repeats", "1", "--json", str(out)]
    result = _load("gpu_training").main(argv)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["dense"]["subp_convs"] == 0 and result["subp"]["subp_convs"] > 0
    assert result["subp"]["steps_timed"] == 2 and result["subp"]["images_per_s"] > 0
    assert result["settings"]["amp"] is None  # autocast is CUDA only
    assert result["mask_update"]["final"]["seconds_median"] > 0


def test_data_loading_benchmark_runs(tmp_path):
    argv = ["--workers", "0", "1", "--images", "48", "--batch", "8", "--batches", "3", "--skip", "1"]
    result = _load("data_loading").main(
        argv + ["--json", str(tmp_path / "d.json"), "--markdown", str(tmp_path / "d.md")]
    )
    assert [row["workers"] for row in result["loaders"]] == [0, 1]
    assert all(row["images_per_s"] > 0 for row in result["loaders"])
    assert "| workers | images/s |" in (tmp_path / "d.md").read_text()


@pytest.mark.slow
def test_gpu_checks_script_plumbing_on_cpu(tmp_path):
    env = {**os.environ, "GPU_CHECKS_QUICK": "1", "PYTHON": str(Path(os.sys.executable))}
    completed = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_checks.sh"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert completed.returncode == 0, completed.stdout[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    # no GPU here: every cuda test is deselected or skipped, the rest must succeed
    assert summary["exit_status"]["option_tests"] == 0
    assert summary["exit_status"]["bench_fp16"] == 0 and summary["exit_status"]["data_loading"] == 0
    assert summary["exit_status"]["cuda_tests"] in (0, 5)  # 5: pytest collected no test to run
    assert {"gpu_training", "gpu_training_bf16", "data_loading"} <= set(summary)
