"""Two CPU processes under torchrun (gloo): masks and weights stay bit-identical across ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import small_recipe, write_recipe


def test_two_gloo_ranks_agree_bit_for_bit(tmp_path):
    recipe = small_recipe(
        tmp_path / "out",
        train={"epochs": 3, "batch_size": 8, "threads": 1, "max_steps_per_epoch": 3},
        data={"synthetic_train_size": 64, "synthetic_val_size": 31},
    )
    path = write_recipe(tmp_path / "ddp.yaml", recipe)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "subp_fx.cli", "prune", str(path)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["world_size"] == 2
    digests = summary["rank_state_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert summary["masks_final_and_uniform"] is True
    # every validation image counted exactly once across the two shards (31 is odd on purpose)
    assert summary["final_val"]["samples"] == 31
    assert "all 2 ranks hold bit-identical weights and masks" in (tmp_path / "out" / "train.log").read_text()
