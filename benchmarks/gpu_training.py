"""Training throughput on a GPU: ResNet-50 SUBP (66/128, 1x16) vs the same model dense, same recipe.

Both models come from ``recipes/resnet50-2.0g-n16.yaml`` (dense: ``sparsity.prune_rate=0``) with
AMP, channels_last and batch 256 per step; the data is synthetic 224 px images already on the
device, so data loading is not measured (``benchmarks/data_loading.py`` measures that). One step
is what ``Trainer._train_epoch`` does per batch: autocast forward and loss, the finiteness check,
zero_grad, scaled backward, unscale, pruned-weight decay, optimiser step, scaler update, LR step.
Every step is timed between two device synchronisations; the two models alternate in rounds so
clock and thermal drift hit both alike. Also times one mask update of the SUBP model (all 52
SUBP convs: BPAR scores on the device, selection on the CPU) at a regrowth epoch and at the final
epoch. Goal: a SUBP step within 5% of a dense step.

    python benchmarks/gpu_training.py --json OUT/gpu_training.json            # on a GPU (about 1 min on an H200)
    python benchmarks/gpu_training.py --device cpu --batch 4 --image-size 64 --steps 2 --warmup 1 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model_name  # noqa: E402

from subp_fx.passes import prepare, subp_modules, update_masks  # noqa: E402
from subp_fx.recipes.model import recipe_model  # noqa: E402
from subp_fx.recipes.schema import load_recipe  # noqa: E402
from subp_fx.train import trainer as trainer_module  # noqa: E402
from subp_fx.train.distributed import DistContext  # noqa: E402
from subp_fx.train.optim import build_optimizer, build_scheduler  # noqa: E402
from subp_fx.train.trainer import amp_settings, optimizer_step, to_memory_format  # noqa: E402

GOAL = 1.05  # SUBP step time / dense step time


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "resnet50-2.0g-n16.yaml"))
    parser.add_argument("--model", default=None, help="override model.name (e.g. resnet18 for a quick CPU look)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--amp-dtype", choices=["float16", "bfloat16"], default="float16")
    parser.add_argument("--no-amp", action="store_true")
    parser.add_argument("--no-channels-last", action="store_true")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps per model before the first round")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per model per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mask-repeats", type=int, default=3)
    parser.add_argument("--json", default=None, help="write the results here")
    return parser.parse_args(argv)


def _recipe(args: argparse.Namespace, prune_rate: float | None):
    overrides = [
        "data.kind=synthetic",
        "data.root=null",
        f"data.image_size={args.image_size}",
        f"train.device={args.device}",
        f"train.batch_size={args.batch}",
        f"train.amp={not args.no_amp}",
        f"train.amp_dtype={args.amp_dtype}",
        f"train.channels_last={not args.no_channels_last}",
    ]
    if args.model:
        overrides.append(f"model.name={args.model}")
    if prune_rate is not None:
        overrides.append(f"sparsity.prune_rate={prune_rate}")
    return load_recipe(args.recipe, overrides)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Contender:
    """One model with the trainer's optimiser, scheduler, scaler and loss, and one fixed batch."""

    def __init__(self, name: str, recipe, device: torch.device, images: torch.Tensor, targets: torch.Tensor):
        self.name = name
        self.recipe = recipe
        self.device = device
        model = recipe_model(recipe, 1000, 3, load_pretrained=False)
        # dense: the plain model (no SUBP convs, no masks), as a dense run of the recipe trains it
        self.gm = (prepare(model, recipe.sparsity) if recipe.sparsity.prune_rate > 0 else model).to(device)
        if recipe.train.channels_last:
            self.gm = self.gm.to(memory_format=torch.channels_last)
        self.subp_convs = len(subp_modules(self.gm))
        if self.subp_convs:  # steady state: every mask uniform at the target rate
            update_masks(self.gm, recipe.sparsity.decay_end, seed=recipe.train.seed)
        self.optimizer = build_optimizer(self.gm, recipe.optim)
        self.scheduler = build_scheduler(self.optimizer, recipe.optim, 10_000, recipe.train.epochs)
        self.amp, self.amp_dtype, scaled = amp_settings(recipe, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=scaled)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=recipe.optim.label_smoothing)
        self.images = to_memory_format(images, recipe.train.channels_last)
        self.targets = targets
        self.times: list[float] = []

    def step(self) -> float:
        """One training step as Trainer._train_epoch takes it; returns the loss."""
        self.gm.train()
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            logits = self.gm(self.images)
            loss = self.criterion(logits, self.targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{self.name}: loss is {loss.item()}")
        optimizer_step(loss, self.gm, self.optimizer, self.scaler, self.scheduler)
        return float(loss.detach())

    def timed_steps(self, count: int) -> None:
        for _ in range(count):
            _sync(self.device)
            started = time.perf_counter()
            self.step()
            _sync(self.device)
            self.times.append(time.perf_counter() - started)

    def summary(self, batch: int) -> dict:
        times = sorted(self.times)
        median = statistics.median(times)
        return {
            "subp_convs": self.subp_convs,
            "steps_timed": len(times),
            "step_ms_median": median * 1e3,
            "step_ms_p10": times[int(0.1 * (len(times) - 1))] * 1e3,
            "step_ms_p90": times[int(0.9 * (len(times) - 1))] * 1e3,
            "images_per_s": batch / median,
        }


def time_mask_updates(contender: Contender, repeats: int) -> dict:
    """Seconds one ``update_masks`` of the whole model takes, at a regrowth epoch and at the final one."""
    sparsity = contender.recipe.sparsity
    epochs = {"regrowth": (sparsity.decay_start + sparsity.decay_end) // 2, "final": sparsity.decay_end}
    result = {}
    for label, epoch in epochs.items():
        seconds = []
        for _ in range(repeats):
            _sync(contender.device)
            started = time.perf_counter()
            update_masks(contender.gm, epoch, seed=contender.recipe.train.seed)
            _sync(contender.device)
            seconds.append(time.perf_counter() - started)
        result[label] = {"epoch": epoch, "seconds_median": statistics.median(seconds), "seconds": seconds}
    return result


def describe_device(device: torch.device) -> dict:
    info = {"device": str(device), "torch": torch.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            name=props.name,
            memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    else:
        info.update(name=cpu_model_name(), threads=torch.get_num_threads())
    return info


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    subp_recipe = _recipe(args, None)
    dense_recipe = _recipe(args, 0.0)  # same recipe, prune_rate 0: the plain model
    configure = getattr(trainer_module, "_configure_cuda_backends", None)
    if configure is not None:  # cudnn.benchmark and TF32 as the trainer sets them
        configure(subp_recipe, DistContext(rank=0, world_size=1, local_rank=device.index or 0, device=device))
    torch.manual_seed(0)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    targets = torch.randint(0, 1000, (args.batch,), device=device)
    contenders = [
        Contender("dense", dense_recipe, device, images, targets),
        Contender("subp", subp_recipe, device, images, targets),
    ]
    for contender in contenders:
        for _ in range(args.warmup):
            contender.step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.rounds):
        for contender in contenders:
            contender.timed_steps(args.steps)
    dense, subp = (contender.summary(args.batch) for contender in contenders)
    ratio = subp["step_ms_median"] / dense["step_ms_median"]
    masks = time_mask_updates(contenders[1], args.mask_repeats)
    result = {
        "benchmark": "gpu_training",
        "machine": describe_device(device),
        "settings": {
            "recipe": Path(args.recipe).name,
            "model": subp_recipe.model.name,
            "prune_rate": subp_recipe.sparsity.prune_rate,
            "N": subp_recipe.sparsity.N,
            "batch": args.batch,
            "image_size": args.image_size,
            "amp": str(contenders[1].amp_dtype).removeprefix("torch.") if contenders[1].amp else None,  # CUDA only
            "channels_last": not args.no_channels_last,
            "warmup": args.warmup,
            "steps_per_round": args.steps,
            "rounds": args.rounds,
        },
        "dense": dense,
        "subp": subp,
        "subp_over_dense_step_time": ratio,
        "goal": f"SUBP step <= {GOAL:.2f} x dense step",
        "goal_met": ratio <= GOAL,
        "mask_update": masks,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }
    print(format_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


def format_table(result: dict) -> str:
    settings, machine = result["settings"], result["machine"]
    lines = [
        f"{machine.get('name')} ({machine['device']}), torch {machine['torch']}; {settings['model']} "
        f"batch {settings['batch']} x {settings['image_size']} px, AMP {settings['amp']}, "
        f"channels_last {settings['channels_last']}",
        "",
        "| model | SUBP convs | step ms (median) | p10..p90 ms | images/s |",
        "|---|---|---|---|---|",
    ]
    for name in ("dense", "subp"):
        row = result[name]
        lines.append(
            f"| {name} | {row['subp_convs']} | {row['step_ms_median']:.2f} | "
            f"{row['step_ms_p10']:.2f}..{row['step_ms_p90']:.2f} | {row['images_per_s']:.1f} |"
        )
    masks = result["mask_update"]
    lines += [
        "",
        f"SUBP / dense step time: {result['subp_over_dense_step_time']:.3f} "
        f"({'meets' if result['goal_met'] else 'MISSES'} the goal: {result['goal']})",
        f"one mask update of all SUBP convs: {masks['regrowth']['seconds_median']:.3f} s at a regrowth epoch "
        f"({masks['regrowth']['epoch']}), {masks['final']['seconds_median']:.3f} s at the final epoch",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
