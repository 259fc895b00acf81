"""The per-layer kernel table: what each conv / linear layer was compiled to, and why.

One :class:`KernelEntry` per conv or linear layer, in execution order. It goes into the compiled
model's manifest (``to_json``) and the compile report (:func:`format_kernel_table`): kind
(sparse / dense / depthwise), K / C_in, MACs, the register tile, what the epilogue fuses, and for
a dense layer why it is dense. Pure Python: readable without TVM.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from subp_fx.codegen.kernels.isa import int8_path_named

SPARSE = "sparse"
DENSE = "dense"
DEPTHWISE = "depthwise"
GROUPED = "grouped"
KINDS = (SPARSE, DENSE, DEPTHWISE, GROUPED)
# What the table says an int8 depthwise conv computes in: exact integer sums in float32 lanes
# (kernels.depthwise_int8), not the int8 conv kernel's dot-product path.
INT8_DEPTHWISE_PRECISION = "int8/fp32-exact-sums"


@dataclass(frozen=True)
class KernelEntry:
    """One layer of the compiled model.

    ``kept_per_row`` is K, the input channels each block-row reads (C_in for a dense layer, 1 for
    a depthwise one); ``macs`` counts multiply-adds actually done per model call (pruned blocks
    excluded, channel padding excluded) as a direct conv counts them, in ``calls`` calls of the
    kernel (one per sub-batch of a batch run in sub-batches, else 1); ``block_size`` is N (None
    for depthwise). ``algorithm``: how the kernel computes the layer, ``"direct"`` or e.g.
    ``"winograd F(4x4,3x3)"`` (``kernels.winograd``), whose multiply-adds (``executed_macs``,
    a tile cut by the output's edge counted whole) are fewer than the layer's.
    """

    layer: str
    kind: str
    op: str  # "conv2d" or "linear"
    kernel: str  # the PrimFunc's name in the compiled module
    in_channels: int
    kept_per_row: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    out_hw: tuple[int, int]
    block_size: int | None
    macs: int
    tile: str
    epilogue: str
    dense_reason: str | None = None
    # "fp32", or "int8/<path>": the int8 kernel and the instruction path it was built with
    # (e.g. "int8/avx512-vnni"), chosen from the target.
    precision: str = "fp32"
    # Its place among the model's conv / linear calls as they execute (a fused conv runs where
    # its epilogue's last node stands, so this can differ from the table's model order).
    call_order: int | None = None
    calls: int = 1
    algorithm: str = "direct"
    executed_macs: int | None = None

    @property
    def work_macs(self) -> int:
        """The multiply-adds the kernel executes: ``executed_macs`` where the algorithm does fewer
        than the layer's ``macs``, else ``macs`` (what a profile holds its time against)."""
        return self.macs if self.executed_macs is None else self.executed_macs

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KernelEntry:
        names = {field.name for field in fields(cls)}
        values = {name: data[name] for name in names if name in data}
        for pair in ("kernel_size", "stride", "out_hw"):
            values[pair] = tuple(values[pair])
        return cls(**values)


def epilogue_text(bias: bool, residual: bool, activation: str) -> str:
    """What a kernel's write-back adds to the conv, e.g. "bias+residual+relu" (or "none")."""
    parts = ["bias"] * bias + ["residual"] * residual + ([activation] if activation != "none" else [])
    return "+".join(parts) or "none"


_COLUMNS = ("layer", "kind", "K/C_in", "kernel", "out", "N", "MMACs", "precision", "tile", "epilogue", "why dense")


def _row(entry: KernelEntry) -> tuple[str, ...]:
    kh, kw = entry.kernel_size
    return (
        entry.layer,
        entry.kind,
        f"{entry.kept_per_row}/{entry.in_channels}",
        f"{kh}x{kw}/{entry.stride[0]}",
        f"{entry.out_channels}@{entry.out_hw[0]}x{entry.out_hw[1]}",
        "-" if entry.block_size is None else str(entry.block_size),
        f"{entry.macs / 1e6:.1f}",
        entry.precision,
        entry.tile,
        entry.epilogue,
        entry.dense_reason or "",
    )


def format_kernel_table(entries: list[KernelEntry]) -> str:
    """A plain-text table, one line per layer, with totals."""
    rows = [_COLUMNS] + [_row(entry) for entry in entries]
    widths = [max(len(row[column]) for row in rows) for column in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    total = sum(entry.macs for entry in entries)
    sparse = sum(entry.macs for entry in entries if entry.kind == SPARSE)
    lines.append(
        f"total {total / 1e6:.1f} MMACs, of which {sparse / 1e6:.1f} in sparse kernels ({len(entries)} layers)"
    )
    slow = slow_int8_paths(entries)
    if slow:
        lines.append(
            f"note: the int8 layers run on {', '.join(slow)}, a fallback for CPUs without VNNI that is slower than "
            "the same model in fp32 on this target (kernels.isa.Int8Path.faster_than_fp32); compile with "
            "--precision fp32 for speed here, or for a target with avx512vnni / avxvnni"
        )
    return "\n".join(lines)


def slow_int8_paths(entries: list[KernelEntry]) -> list[str]:
    """The int8 dot-product paths in ``entries``' precisions (``int8/<path>``, ``->u8`` aside) that
    are not faster than fp32 on their target (:attr:`Int8Path.faster_than_fp32`), sorted."""
    names = {
        entry.precision.split("/", 1)[1].removesuffix("->u8")
        for entry in entries
        if entry.precision.startswith("int8/")
    }
    paths = (int8_path_named(name) for name in names)
    return sorted(path.name for path in paths if path is not None and not path.faster_than_fp32)
