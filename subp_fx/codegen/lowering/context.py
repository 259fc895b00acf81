"""The state one lowering carries from node to node (the handlers' single argument besides the node)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch.fx as fx
from tvm.target import Target

from subp_fx.codegen.kernels import winograd
from subp_fx.codegen.kernels.cache import l1_data_cache, l2_bytes
from subp_fx.codegen.kernels.isa import VectorISA
from subp_fx.codegen.kernels.layout import transpose_primfunc
from subp_fx.codegen.kernels.spec import BlockSparseConvSpec, ConvTile
from subp_fx.codegen.kernels.tiling import heuristic_tile
from subp_fx.codegen.lowering.fusion import Epilogue
from subp_fx.codegen.lowering.graph_view import GraphView, LoweredTensor, canonical_order
from subp_fx.codegen.lowering.program import RelaxProgram
from subp_fx.codegen.runtime.kernel_table import KernelEntry, epilogue_text
from subp_fx.codegen.tuning.build import choose_tile
from subp_fx.codegen.tuning.log import TuningLog


@dataclass
class LoweringContext:
    """Graph facts, the program being emitted, the target, and what each node lowered to.

    ``values`` maps an fx node to its lowered value: a :class:`LoweredTensor`, or a plain Python
    value for nodes that compute shapes (``x.size(0)``). ``epilogues`` maps a conv node to what
    its kernel fuses (see ``fusion``). ``tune_tiles`` times a few register tiles per distinct conv
    shape (``choose_tile``) instead of taking the cost model's choice; ``tuning_log`` reuses and
    records those timings. ``winograd``: fp32 3x3 stride-1 convs run on the Winograd kernel
    (``kernels.winograd``) instead of the direct one. ``int8``: an int8 build's plan and uint8
    tensors (``lowering.int8``); ``bf16``: a bf16 build's path and bf16 copies (``lowering.bf16``).
    """

    view: GraphView
    program: RelaxProgram
    target: Target
    isa: VectorISA
    tune_tiles: bool = False
    tuning_log: TuningLog | None = None
    winograd: bool = False
    epilogues: dict[fx.Node, Epilogue] = field(default_factory=dict)
    values: dict[fx.Node, Any] = field(default_factory=dict)
    kernel_table: list[KernelEntry] = field(default_factory=list)
    int8: Any = None  # lowering.int8.Int8Lowering of an int8 build, else None
    bf16: Any = None  # lowering.bf16.Bf16Lowering of a bf16 build, else None
    _reordered: dict[tuple[fx.Node, tuple[int, ...]], LoweredTensor] = field(default_factory=dict)

    @property
    def lanes(self) -> int:
        return self.isa.lanes

    def stored(self, node: Any) -> LoweredTensor:
        """``node``'s tensor in whatever order it is stored (for handlers indifferent to layout:
        permutes, elementwise ops, and those that check ``axis_order`` themselves)."""
        value = self.values[node]
        if not isinstance(value, LoweredTensor):
            raise TypeError(f"{node} lowered to {type(value).__name__}, not a tensor")
        return value

    def tensor(self, node: Any, order: tuple[int, ...] | None = None) -> LoweredTensor:
        """``node``'s tensor stored in ``order`` (default: :func:`canonical_order`, NHWC for 4-d,
        which every handler assumes unless it asks otherwise). A tensor a permute left in another
        order is transposed once per order asked for (``layout.transpose_primfunc``)."""
        value = self.stored(node)
        order = canonical_order(len(value.shape)) if order is None else tuple(order)
        if value.axis_order == order:
            return value
        cached = self._reordered.get((node, order))
        if cached is None:
            # Stored axis j of the result is torch axis order[j], stored at value's axis_order.index(...).
            axes = tuple(value.axis_order.index(axis) for axis in order)
            source = value.stored_shape
            out_shape = tuple(source[axis] for axis in axes)
            expr = self.program.call(
                ("transpose", source, axes),
                "transpose_" + "x".join(map(str, source)) + "_" + "".join(map(str, axes)),
                lambda: transpose_primfunc(source, axes, self.lanes),
                [value.expr],
                out_shape,
            )
            cached = self._reordered[(node, order)] = LoweredTensor(expr, value.shape, order)
        return cached

    def epilogue(self, conv: fx.Node) -> Epilogue:
        return self.epilogues.get(conv, Epilogue(conv))

    def record_kernel(self, node: fx.Node, key, *, bias: bool, residual: bool, activation: str, **fields) -> None:
        """Add ``node``'s row to the kernel table: the layer, the name its kernel (``key``) was
        registered under, the epilogue text, and ``fields`` (see ``KernelEntry``)."""
        self.kernel_table.append(
            KernelEntry(
                layer=str(node.target),
                kernel=self.program.kernel_names[key],
                epilogue=epilogue_text(bias, residual, activation),
                **fields,
            )
        )

    def winograd_tile(self, spec: BlockSparseConvSpec) -> winograd.WinogradTile | None:
        """The Winograd kernel's tile for an fp32 conv of ``spec`` where this build runs it there
        (``winograd`` on, a conv ``winograd.why_direct`` passes), else None: the direct kernel runs it."""
        if not self.winograd or winograd.why_direct(spec) is not None:
            return None
        return winograd.heuristic_tile(winograd.kernel_spec(spec), self.isa)

    def tile_for(self, spec: BlockSparseConvSpec) -> ConvTile:
        if self.tune_tiles:
            return choose_tile(spec, self.target, log=self.tuning_log)[0]
        return heuristic_tile(spec, self.isa, l1_data_cache(self.target), l2_bytes(self.target))
