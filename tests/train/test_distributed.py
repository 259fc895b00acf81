"""Two CPU processes under torchrun (gloo): masks and weights stay bit-identical across ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import small_recipe, write_recipe


def test_two_gloo_ranks_agree_bit_for_bit(tmp_path):
    """A prune-rate ramp over several epochs, so blocks are regrown by importance sampling on each
    rank: the ranks' masks must agree right after each update, before rank 0's are broadcast
    (``rank_mask_digests`` is gathered at that point), and the weights at the end. 66 training
    samples at batch 8 on 2 ranks: 33 per rank, the last partial batch of 1 kept on both."""
    recipe = small_recipe(
        tmp_path / "out",
        train={"epochs": 5, "batch_size": 8, "threads": 1},
        data={"synthetic_train_size": 66, "synthetic_val_size": 31},
        sparsity={"decay_start": 0, "decay_end": 3},
    )
    path = write_recipe(tmp_path / "ddp.yaml", recipe)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "subp_fx.cli",
            "prune",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["world_size"] == 2
    digests = summary["rank_state_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert summary["masks_final_and_uniform"] is True
    # every validation image counted exactly once across the two shards (31 is odd on purpose)
    assert summary["final_val"]["samples"] == 31
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        mask_digests = record["rank_mask_digests"]
        assert len(mask_digests) == 2 and mask_digests[0] == mask_digests[1], f"epoch {record['epoch']}"
        assert record["train"]["samples"] == 66
    revived = sum(layer["revived"] for record in records for layer in record["layers"].values())
    assert revived > 0, "the ramp regrew no block, so the ranks' regrowth sampling was never compared"
    log = (tmp_path / "out" / "train.log").read_text()
    assert "all 2 ranks hold bit-identical weights and masks" in log
    assert "ranks computed different masks" not in log
