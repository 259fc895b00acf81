"""One process of a DDP check (run by tests/train/test_cuda.py in a subprocess, so a hung or crashed
collective cannot take the test session with it).

    python tests/train/ddp_worker.py BACKEND DEVICE RECIPE.yaml RESULT.json

Joins a one-process group over BACKEND (nccl on CUDA, gloo on CPU), wraps the recipe's prepared
model in DistributedDataParallel and takes a few AMP training steps the way the trainer does
(autocast, scaled backward, unscale, pruned-weight decay, step), runs the mask update and the
trainer's collectives (buffer broadcast, all-reduce, all-gather) through the group, then trains the
recipe with the Trainer inside that same group. Writes what it saw to RESULT.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from subp_fx.passes import subp_modules, update_masks  # noqa: E402
from subp_fx.recipes.schema import load_recipe  # noqa: E402
from subp_fx.train.distributed import all_reduce_sum, broadcast_buffers, gather_objects  # noqa: E402
from subp_fx.train.trainer import (  # noqa: E402
    amp_settings,
    build_data,
    build_prepared_model,
    optimizer_step,
    state_digest,
    to_memory_format,
    train,
)


def main(backend: str, device_name: str, recipe_path: str, result_path: str) -> None:
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    device = torch.device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(0)
    dist.init_process_group(backend=backend, rank=0, world_size=1)
    recipe = load_recipe(recipe_path)
    bundle = build_data(recipe)
    gm = build_prepared_model(recipe, bundle).to(device)
    if recipe.train.channels_last:
        gm = gm.to(memory_format=torch.channels_last)
    model = DistributedDataParallel(gm, device_ids=[0] if device.type == "cuda" else None)
    amp, dtype, scaled = amp_settings(recipe, device)
    scaler = torch.amp.GradScaler(device.type, enabled=scaled)
    optimizer = torch.optim.SGD(gm.parameters(), lr=0.05, momentum=0.9)
    update_masks(gm, 1, seed=recipe.train.seed)
    generator = torch.Generator().manual_seed(0)
    size = bundle.image_size
    losses = []
    for _ in range(3):
        images = torch.randn(8, bundle.in_channels, size, size, generator=generator).to(device)
        targets = torch.randint(0, bundle.num_classes, (8,), generator=generator).to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            loss = torch.nn.functional.cross_entropy(
                model(to_memory_format(images, recipe.train.channels_last)), targets
            )
        optimizer_step(loss, gm, optimizer, scaler)
        losses.append(float(loss))
    broadcast_buffers(gm)
    summed = all_reduce_sum([1.0, 2.0], device)
    gathered = gather_objects(state_digest(gm))
    result = {
        "backend": dist.get_backend(),
        "world_size": dist.get_world_size(),
        "losses": losses,
        "all_reduce": summed,
        "gathered": len(gathered),
        "weights_on": str(next(gm.parameters()).device),
        "masks_on": sorted({str(module.block_mask.device) for _, module in subp_modules(gm)}),
        "channels_last": all(
            module.weight.is_contiguous(memory_format=torch.channels_last) for _, module in subp_modules(gm)
        ),
    }
    # The whole trainer inside the same group: its collectives go through BACKEND (the model is not
    # DDP-wrapped in a one-process world). It destroys the group when done.
    trained = train(recipe)
    result["trainer_masks_final"] = trained.masks_final
    result["trainer_loss"] = trained.final["train"]["loss"]
    Path(result_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:5])
