"""The SUBP trainer: runs a recipe from scratch (or from a checkpoint) to uniform 1xN masks.

Order of work per epoch, as in the paper's reference: update every mask for the epoch, then
train (forward with masked weights, backward, unscale, decay pruned weights, step), then
evaluate (fp32, no autocast, with the training loss's label smoothing, as the authors do), log,
checkpoint. All input is validated before the output folder is touched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from subp_fx.algorithm.modules import MaskUpdate
from subp_fx.data import DataBundle, build_datasets, build_loaders
from subp_fx.errors import ConfigError
from subp_fx.models.state_dict_file import extract_state_dict, load_state_dict
from subp_fx.passes import masks_are_final, prepare, subp_modules
from subp_fx.passes.update import decay_pruned_weights, update_masks
from subp_fx.recipes.model import recipe_model
from subp_fx.recipes.schema import Recipe, validate_recipe
from subp_fx.tools.flops import count_flops
from subp_fx.train.checkpoint import TrainingCheckpoint, read_checkpoint, read_training_checkpoint
from subp_fx.train.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    broadcast_tensors,
    gather_objects,
    init_distributed,
    shutdown_distributed,
)
from subp_fx.train.metrics import RunningSums, append_jsonl, layer_records, sparsity_table
from subp_fx.train.optim import build_optimizer, build_scheduler

LOG = logging.getLogger("subp_fx.train")

LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"
SUMMARY_FILE = "summary.json"


@dataclass
class TrainResult:
    output_dir: Path
    epochs_run: int
    final: dict
    best_top1: float
    masks_final: bool
    mask_problems: dict[str, str]
    seconds: float


def build_data(recipe: Recipe) -> DataBundle:
    return build_datasets(recipe.data, recipe.data.image_size, None)


def build_prepared_model(recipe: Recipe, bundle: DataBundle, load_pretrained: bool = True) -> torch.fx.GraphModule:
    """The recipe's model prepared for SUBP; ``load_pretrained=False`` when a checkpoint's weights
    are about to replace the recipe's pretrained file (which then need not exist any more)."""
    model = recipe_model(recipe, bundle.num_classes, bundle.in_channels, load_pretrained=load_pretrained)
    return prepare(model, recipe.sparsity)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _configure_threads(recipe: Recipe, ctx: DistContext) -> None:
    if ctx.device.type == "cpu":
        threads = recipe.train.threads or max(1, (os.cpu_count() or 1) // ctx.world_size)
        torch.set_num_threads(threads)


def _configure_cuda_backends(recipe: Recipe, ctx: DistContext) -> None:
    """cuDNN autotuning and TF32 on CUDA, as the authors train (``train.cudnn_benchmark`` /
    ``train.tf32``); nothing on CPU."""
    if ctx.device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = recipe.train.cudnn_benchmark
    precision = "tf32" if recipe.train.tf32 else "ieee"
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # torch >= 2.9: the per-backend API
        torch.backends.cuda.matmul.fp32_precision = precision
        torch.backends.cudnn.conv.fp32_precision = precision
    else:
        torch.backends.cuda.matmul.allow_tf32 = recipe.train.tf32
        torch.backends.cudnn.allow_tf32 = recipe.train.tf32


def _sync_batchnorm(gm: torch.fx.GraphModule, recipe: Recipe, ctx: DistContext) -> torch.fx.GraphModule:
    """``train.sync_batchnorm``: batch norms computing their statistics over every process's batch.
    Only meaningful with more than one process, and torch supports it on CUDA only."""
    if not recipe.train.sync_batchnorm or not ctx.enabled:
        return gm
    if ctx.device.type != "cuda":
        raise ConfigError(
            "train.sync_batchnorm needs CUDA devices: torch's SyncBatchNorm does not run on CPU (gloo) processes. "
            "Set train.sync_batchnorm to false, or train on GPUs."
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(gm)


def mask_digests(model: nn.Module) -> dict[str, str]:
    """SHA-256 of every SUBP conv's block mask, by layer name."""
    digests = {}
    for name, module in subp_modules(model):
        digest = hashlib.sha256(module.block_mask.detach().cpu().contiguous().numpy().tobytes())
        digests[name] = digest.hexdigest()
    return digests


def _setup_logging(output_dir: Path, is_main: bool) -> None:
    LOG.setLevel(logging.INFO if is_main else logging.WARNING)
    LOG.handlers.clear()
    LOG.propagate = False
    formatter = logging.Formatter("[%(asctime)s] %(message)s", "%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler()
    console.setFormatter(formatter)
    LOG.addHandler(console)
    if is_main:
        file_handler = logging.FileHandler(output_dir / LOG_FILE)
        file_handler.setFormatter(formatter)
        LOG.addHandler(file_handler)


def _check_output_dir(output_dir: Path, resume: bool, force: bool) -> None:
    if resume or force:
        return
    existing = [name for name in (LAST_CHECKPOINT, BEST_CHECKPOINT, METRICS_FILE) if (output_dir / name).exists()]
    if existing:
        raise ConfigError(
            f"output dir {str(output_dir)!r} already holds a run ({', '.join(existing)}). "
            "Continue it with --resume, choose another folder with --set output.dir=PATH, "
            "or start over in place with --force."
        )


def state_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer (masks included), in name order: equal digests on
    two ranks mean bit-identical models."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _show_progress(ctx: DistContext) -> bool:
    # Bars on an interactive terminal only; logs and CI get the periodic log lines instead.
    return ctx.is_main and sys.stderr.isatty()


def _autocast(ctx: DistContext, amp: bool, dtype: torch.dtype = torch.float16):
    if amp and ctx.device.type == "cuda":
        return torch.autocast("cuda", dtype=dtype)
    return nullcontext()


def amp_settings(recipe: Recipe, device: torch.device) -> tuple[bool, torch.dtype, bool]:
    """(autocast on, its dtype, gradient scaler on) for ``recipe`` on ``device``: AMP runs on CUDA
    only; float16 needs a gradient scaler (its range underflows small gradients), bfloat16 has
    float32's range and trains without one."""
    amp = recipe.train.amp and device.type == "cuda"
    dtype = getattr(torch, recipe.train.amp_dtype)
    return amp, dtype, amp and dtype == torch.float16


def to_memory_format(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A 4-d batch in channels_last (NHWC) memory format when ``channels_last``; as is otherwise."""
    if channels_last and images.dim() == 4:
        return images.contiguous(memory_format=torch.channels_last)
    return images


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    ctx: DistContext,
    label_smoothing: float = 0.0,
    max_batches: int | None = None,
    show_progress: bool = True,
) -> dict:
    """Loss, top-1 and top-5 (percent) on ``loader``, summed over every rank's shard.

    Always in fp32 without autocast (TF32 where ``_configure_cuda_backends`` allowed it), and the
    loss is the cross-entropy with ``label_smoothing``: the authors' evaluation, so the reported
    val loss is comparable to their logs and to the training loss."""
    model.eval()
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    sums = RunningSums()
    batches = tqdm(
        loader, desc="eval", leave=False, disable=not (show_progress and _show_progress(ctx)), dynamic_ncols=True
    )
    for index, (images, targets) in enumerate(batches):
        if max_batches is not None and index >= max_batches:
            break
        images, targets = images.to(ctx.device, non_blocking=True), targets.to(ctx.device, non_blocking=True)
        logits = model(images).float()
        sums.add(float(criterion(logits, targets)), logits, targets)
    return RunningSums.summary(all_reduce_sum(sums.as_list(), ctx.device))


def optimizer_step(loss: torch.Tensor, gm: nn.Module, optimizer, scaler, scheduler=None) -> None:
    """Backward and one optimiser step, in SUBP's order: the pruned-weight decay goes on the
    unscaled gradients (after ``unscale_``), before the step; then the LR ``scheduler``, if any.
    The trainer, ``benchmarks/gpu_training.py`` and the DDP test worker all step through here."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    decay_pruned_weights(gm)
    scaler.step(optimizer)
    scaler.update()
    if scheduler is not None:
        scheduler.step()


class Trainer:
    """One training run of a recipe. ``run()`` trains; construction validates everything the
    run needs (data, model, checkpoint, output folder) without writing anything."""

    def __init__(self, recipe: Recipe, resume: bool = False, force: bool = False):
        self.recipe = recipe
        self.ctx = init_distributed(recipe.train.device)
        _configure_threads(recipe, self.ctx)
        _configure_cuda_backends(recipe, self.ctx)
        _seed_everything(recipe.train.seed)
        self.output_dir = Path(recipe.output.dir)
        _check_output_dir(self.output_dir, resume, force)
        self.resumed = read_training_checkpoint(self.output_dir / LAST_CHECKPOINT) if resume else None

        self.bundle = build_data(recipe)
        self.gm = build_prepared_model(recipe, self.bundle, load_pretrained=self.resumed is None)
        self.gm = _sync_batchnorm(self.gm, recipe, self.ctx).to(self.ctx.device)
        if recipe.train.channels_last:
            self.gm = self.gm.to(memory_format=torch.channels_last)
        self.train_loader, self.val_loader, self.train_sampler = build_loaders(
            self.bundle,
            recipe.train.batch_size,
            recipe.train.workers,
            self.ctx.enabled,
            recipe.train.seed,
            drop_last_train=recipe.train.drop_last,
        )
        steps = len(self.train_loader)
        self.steps_per_epoch = min(steps, recipe.train.max_steps_per_epoch or steps)
        self.optimizer = build_optimizer(self.gm, recipe.optim)
        self.scheduler = build_scheduler(self.optimizer, recipe.optim, self.steps_per_epoch, recipe.train.epochs)
        self.amp, self.amp_dtype, scaled = amp_settings(recipe, self.ctx.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=scaled)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=recipe.optim.label_smoothing)
        self.start_epoch = 0
        self.best_top1 = float("-inf")
        if self.resumed is not None:
            self._restore(self.resumed)
        self.model = (
            DistributedDataParallel(
                self.gm, device_ids=[self.ctx.local_rank] if self.ctx.device.type == "cuda" else None
            )
            if self.ctx.enabled
            else self.gm
        )

    def _restore(self, checkpoint: TrainingCheckpoint) -> None:
        saved_recipe = validate_recipe(checkpoint.recipe, source="the checkpoint's recipe")
        if saved_recipe.model != self.recipe.model or saved_recipe.sparsity != self.recipe.sparsity:
            raise ConfigError(
                f"--resume: the checkpoint in {str(self.output_dir)!r} was trained with another model or sparsity "
                "section than this recipe; resume with the recipe it was started with"
            )
        load_state_dict(self.gm, checkpoint.model, source=f"checkpoint {str(self.output_dir / LAST_CHECKPOINT)!r}")
        self.optimizer.load_state_dict(checkpoint.optimizer)
        self.scheduler.load_state_dict(checkpoint.scheduler)
        if checkpoint.scaler:  # empty when written without a scaler (CPU, bfloat16): start a fresh one
            self.scaler.load_state_dict(checkpoint.scaler)
        self.start_epoch = checkpoint.epoch
        self.best_top1 = checkpoint.best_top1
        _restore_rng_state(checkpoint.rng)

    def _checkpoint(self, epoch: int, metrics: dict, is_best: bool) -> None:
        checkpoint = TrainingCheckpoint(
            recipe=self.recipe.model_dump(),
            epoch=epoch + 1,
            model=self.gm.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
            best_top1=self.best_top1,
            metrics=metrics,
            rng=_rng_state(),
            num_classes=self.bundle.num_classes,
            in_channels=self.bundle.in_channels,
            image_size=self.bundle.image_size,
        )
        checkpoint.save(self.output_dir / LAST_CHECKPOINT)
        if is_best:
            checkpoint.save(self.output_dir / BEST_CHECKPOINT)

    def _set_data_epoch(self, epoch: int) -> None:
        # The shuffle order depends on (seed, epoch) and each sample's augmentation on (seed, epoch,
        # index) only, also in persistent workers, so an epoch replayed after --resume sees the same
        # batches as the uninterrupted run.
        self.train_sampler.set_epoch(epoch)

    def _update_masks(self, epoch: int) -> tuple[dict[str, MaskUpdate], dict[str, int], list[str]]:
        """Every SUBP conv's mask for ``epoch``: (telemetry, blocks revived per layer, per-rank digests).

        Each rank computes the masks from its own weights with the (seed, epoch, layer) generator;
        the ranks' masks are compared *before* rank 0's are broadcast, so a divergence (weights that
        drifted apart, a nondeterministic kernel) is reported instead of silently overwritten.
        A block is *revived* when it was pruned before this update and is kept after it.
        """
        modules = subp_modules(self.gm)
        previous = {name: module.block_mask.clone() for name, module in modules}
        updates = update_masks(self.gm, epoch, self.recipe.train.seed, broadcast=False)
        revived = {name: int(((previous[name] == 0) & (module.block_mask != 0)).sum()) for name, module in modules}
        layer_digests = gather_objects(mask_digests(self.gm))
        rank_digests = [
            hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest() for digests in layer_digests
        ]
        if len(set(rank_digests)) > 1:
            differing = sorted(name for name in layer_digests[0] if len({d[name] for d in layer_digests}) > 1)
            LOG.warning(
                "epoch %d: ranks computed different masks for %d layer(s) (%s); using rank 0's. The ranks' weights "
                "or kernels are not bit-identical.",
                epoch + 1,
                len(differing),
                ", ".join(differing),
            )
        broadcast_tensors([module.block_mask for _, module in modules])
        return updates, revived, rank_digests

    def _train_epoch(self, epoch: int) -> dict:
        self.model.train()
        sums = RunningSums()
        progress = tqdm(
            total=self.steps_per_epoch,
            desc=f"epoch {epoch + 1}/{self.recipe.train.epochs}",
            disable=not _show_progress(self.ctx),
            dynamic_ncols=True,
            leave=False,
        )
        for step, (images, targets) in enumerate(self.train_loader):
            if step >= self.steps_per_epoch:
                break
            images, targets = (
                to_memory_format(images.to(self.ctx.device, non_blocking=True), self.recipe.train.channels_last),
                targets.to(self.ctx.device, non_blocking=True),
            )
            with _autocast(self.ctx, self.amp, self.amp_dtype):
                logits = self.model(images)
                loss = self.criterion(logits, targets)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch + 1}, step {step}; lower optim.lr")
            optimizer_step(loss, self.gm, self.optimizer, self.scaler, self.scheduler)
            sums.add(float(loss.detach()), logits.detach().float(), targets)
            progress.update(1)
            progress.set_postfix(loss=f"{float(loss.detach()):.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.4f}")
            if (step + 1) % self.recipe.train.log_every == 0:
                running = RunningSums.summary(sums.as_list())
                LOG.info(
                    "epoch %d step %d/%d loss %.4f top1 %.2f lr %.5f",
                    epoch + 1,
                    step + 1,
                    self.steps_per_epoch,
                    running["loss"],
                    running["top1"],
                    self.optimizer.param_groups[0]["lr"],
                )
        progress.close()
        return RunningSums.summary(all_reduce_sum(sums.as_list(), self.ctx.device))

    def _log_start(self) -> None:
        recipe = self.recipe
        LOG.info(
            "recipe %s: model %s, data %s (%d train / %d val, %d classes, %dx%d, %d channel(s))",
            recipe.name,
            recipe.model.name,
            recipe.data.kind,
            len(self.bundle.train),
            len(self.bundle.val),
            self.bundle.num_classes,
            self.bundle.image_size,
            self.bundle.image_size,
            self.bundle.in_channels,
        )
        LOG.info(
            "device %s, world size %d, torch threads %d, AMP %s, channels_last %s, %d steps/epoch, epochs %d..%d",
            self.ctx.device,
            self.ctx.world_size,
            torch.get_num_threads(),
            str(self.amp_dtype).removeprefix("torch.") + (" + grad scaler" if self.scaler.is_enabled() else "")
            if self.amp
            else "off",
            self.recipe.train.channels_last,
            self.steps_per_epoch,
            self.start_epoch + 1,
            recipe.train.epochs,
        )
        flops = count_flops(self.gm, (1, self.bundle.in_channels, self.bundle.image_size, self.bundle.image_size))
        LOG.info(
            "%d SUBP convs (N=%d, target prune rate %.4f, %s, %s); MACs/image %.4f G dense -> %.4f G at the target",
            len(subp_modules(self.gm)),
            recipe.sparsity.N,
            recipe.sparsity.prune_rate,
            recipe.sparsity.criterion,
            recipe.sparsity.schedule,
            flops.macs_dense / 1e9,
            flops.macs / 1e9,
        )

    def run(self) -> TrainResult:
        recipe = self.recipe
        if self.ctx.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if self.resumed is None:
                for name in (METRICS_FILE, LOG_FILE, SUMMARY_FILE):
                    (self.output_dir / name).unlink(missing_ok=True)
        barrier()
        _setup_logging(self.output_dir, self.ctx.is_main)
        started = time.perf_counter()
        final: dict = {}
        with logging_redirect_tqdm(loggers=[LOG]):
            self._log_start()
            for epoch in range(self.start_epoch, recipe.train.epochs):
                epoch_started = time.perf_counter()
                updates, revived, rank_mask_digests = self._update_masks(epoch)
                if updates:
                    LOG.info("epoch %d masks:\n%s", epoch + 1, sparsity_table(updates, revived))
                self._set_data_epoch(epoch)
                epoch_lr = self.optimizer.param_groups[0]["lr"]
                train_metrics = self._train_epoch(epoch)
                broadcast_buffers(self.gm)
                # The unwrapped model: its buffers are already in sync, and DDP's per-forward
                # buffer broadcast would hang a rank whose validation shard is empty.
                val_metrics = evaluate(
                    self.gm, self.val_loader, self.ctx, recipe.optim.label_smoothing, recipe.train.max_eval_batches
                )
                is_best = val_metrics["top1"] > self.best_top1
                self.best_top1 = max(self.best_top1, val_metrics["top1"])
                record = {
                    "epoch": epoch + 1,
                    "lr": epoch_lr,
                    "train": train_metrics,
                    "val": val_metrics,
                    "best_top1": self.best_top1,
                    "seconds": time.perf_counter() - epoch_started,
                    "layers": layer_records(updates, revived),
                    "rank_mask_digests": rank_mask_digests,
                }
                LOG.info(
                    "epoch %d/%d: train loss %.4f top1 %.2f | val loss %.4f * Prec@1 %.3f Prec@5 %.3f | %.1fs",
                    epoch + 1,
                    recipe.train.epochs,
                    train_metrics["loss"],
                    train_metrics["top1"],
                    val_metrics["loss"],
                    val_metrics["top1"],
                    val_metrics["top5"],
                    record["seconds"],
                )
                if self.ctx.is_main:
                    append_jsonl(self.output_dir / METRICS_FILE, record)
                    self._checkpoint(epoch, record, is_best)
                barrier()
                final = record
        digests = gather_objects(state_digest(self.gm))
        if len(set(digests)) > 1:
            LOG.warning("ranks disagree: model digests %s", digests)
        elif self.ctx.enabled:
            LOG.info("all %d ranks hold bit-identical weights and masks", self.ctx.world_size)
        problems = masks_are_final(self.gm)
        if problems:
            LOG.warning(
                "masks are NOT final and uniform at the target rate:\n%s",
                "\n".join(f"  {name}: {problem}" for name, problem in problems.items()),
            )
        else:
            LOG.info(
                "final masks: every SUBP conv is uniform at its target (%d convs checked)", len(subp_modules(self.gm))
            )
        result = TrainResult(
            output_dir=self.output_dir,
            epochs_run=recipe.train.epochs - self.start_epoch,
            final=final,
            best_top1=self.best_top1,
            masks_final=not problems,
            mask_problems=problems,
            seconds=time.perf_counter() - started,
        )
        if self.ctx.is_main:
            summary = {
                "recipe": recipe.name,
                "epochs": recipe.train.epochs,
                "final_val": final.get("val"),
                "best_top1": self.best_top1,
                "masks_final_and_uniform": result.masks_final,
                "mask_problems": problems,
                "world_size": self.ctx.world_size,
                "rank_state_digests": digests,
                "seconds_this_run": result.seconds,
            }
            (self.output_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        return result

    def close(self) -> None:
        shutdown_distributed()


def train(recipe: Recipe, resume: bool = False, force: bool = False) -> TrainResult:
    trainer = Trainer(recipe, resume=resume, force=force)
    try:
        return trainer.run()
    finally:
        trainer.close()


def evaluate_checkpoint(recipe: Recipe, checkpoint: str | Path) -> dict:
    """``--evaluate --pretrained CKPT``: the recipe's validation set through the checkpoint's weights."""
    ctx = init_distributed(recipe.train.device)
    try:
        _configure_threads(recipe, ctx)
        payload = read_checkpoint(checkpoint)
        bundle = build_data(recipe)
        _configure_cuda_backends(recipe, ctx)
        gm = build_prepared_model(recipe, bundle, load_pretrained=False)
        load_state_dict(gm, extract_state_dict(payload, checkpoint), source=f"checkpoint {str(checkpoint)!r}")
        gm.to(ctx.device)
        _, val_loader, _ = build_loaders(
            bundle, recipe.train.batch_size, recipe.train.workers, ctx.enabled, recipe.train.seed
        )
        return evaluate(gm, val_loader, ctx, recipe.optim.label_smoothing, recipe.train.max_eval_batches)
    finally:
        shutdown_distributed()
