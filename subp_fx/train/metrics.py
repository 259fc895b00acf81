"""Accuracy, running averages, per-layer sparsity tables and the JSON-lines metrics file."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tabulate import tabulate

from subp_fx.algorithm.modules import MaskUpdate


@torch.no_grad()
def correct_top_k(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """How many rows have the target among the k highest logits, for each k (k capped at the
    class count, so top-5 on a 3-class problem is top-3)."""
    max_k = min(max(ks), logits.shape[1])
    top = logits.topk(max_k, dim=1).indices
    hits = top == targets[:, None]
    return [int(hits[:, : min(k, max_k)].any(dim=1).sum()) for k in ks]


class RunningSums:
    """Sums of loss and correct counts over an epoch, reducible across ranks."""

    def __init__(self) -> None:
        self.loss_sum = 0.0
        self.correct1 = 0
        self.correct5 = 0
        self.count = 0

    def add(self, loss: float, logits: torch.Tensor, targets: torch.Tensor) -> None:
        batch = targets.shape[0]
        top1, top5 = correct_top_k(logits, targets)
        self.loss_sum += loss * batch
        self.correct1 += top1
        self.correct5 += top5
        self.count += batch

    def as_list(self) -> list[float]:
        return [self.loss_sum, self.correct1, self.correct5, self.count]

    @staticmethod
    def summary(values: list[float]) -> dict[str, float]:
        loss_sum, correct1, correct5, count = values
        count = max(count, 1)
        return {
            "loss": loss_sum / count,
            "top1": 100.0 * correct1 / count,
            "top5": 100.0 * correct5 / count,
            "samples": int(count),
        }


def sparsity_table(updates: dict[str, MaskUpdate], revived: dict[str, int] | None = None) -> str:
    """Per-layer state after a mask update: the telemetry of how many blocks moved. ``blocks
    regrown``: kept beyond the final target by the schedule; ``revived``: pruned before this
    update and kept after it (when ``revived`` is given)."""
    rows = []
    for name, update in updates.items():
        row = [
            name,
            f"{update.kept_per_row}/{update.in_channels}",
            f"{100 * update.sparsity:.1f}%",
            f"{update.current_rate:.4f}",
            update.regrown,
            update.changed,
        ]
        if revived is not None:
            row.append(revived.get(name, 0))
        rows.append(row)
    headers = ["layer", "kept/row", "sparsity", "scheduled rate", "blocks regrown", "blocks changed"]
    if revived is not None:
        headers.append("revived")
    return tabulate(rows, headers=headers, tablefmt="simple")


def layer_records(updates: dict[str, MaskUpdate], revived: dict[str, int] | None = None) -> dict[str, dict]:
    records = {
        name: {
            "kept_per_row": update.kept_per_row,
            "in_channels": update.in_channels,
            "sparsity": update.sparsity,
            "scheduled_rate": update.current_rate,
            "regrown": update.regrown,
            "changed": update.changed,
        }
        for name, update in updates.items()
    }
    for name, count in (revived or {}).items():
        records[name]["revived"] = count
    return records


def append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as stream:
        stream.write(json.dumps(record) + "\n")
