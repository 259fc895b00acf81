"""Building the Relax ``main(x) -> output`` function: kernels added once, calls emitted in order.

Every kernel is a scheduled PrimFunc registered under a readable name (e.g.
``conv3x3_s1_56x56_64to64_K32_N16_bias_residual_relu``) and called with ``relax.call_tir``;
identical kernels (same key) are added once and called many times, which keeps the build (one
LLVM compile per distinct kernel) short. Weights are Relax constants passed as arguments.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Hashable, Iterator

import numpy as np
import tvm
from tvm import relax, tirx

from subp_fx.codegen.kernels.batch_split import batch_rows_primfunc, stack_rows_primfunc
from subp_fx.codegen.kernels.loops import DTYPE

ENTRY_FUNCTION = "main"


class RelaxProgram:
    """Emits one dataflow function ``main`` over a float32 input of a fixed shape."""

    def __init__(self, input_shape: tuple[int, ...], input_name: str = "x"):
        self._builder = relax.BlockBuilder()
        self.input = relax.Var(input_name, relax.TensorType(tuple(input_shape), DTYPE))
        self._kernels: dict[Hashable, tvm.ir.GlobalVar] = {}
        self._names: set[str] = set()
        self.kernel_names: dict[Hashable, str] = {}
        self._output: relax.Expr | None = None

    @contextlib.contextmanager
    def function(self, name: str = ENTRY_FUNCTION) -> Iterator[None]:
        """Scope in which calls are emitted; :meth:`finish` must be called inside it. ``name``:
        the function's (another than the entry's for a model run in sub-batches)."""
        self._output = None
        with self._builder.function(name, [self.input]):
            with self._builder.dataflow():
                yield
                if self._output is None:
                    raise RuntimeError("RelaxProgram.function() closed without finish(output)")
                result = self._builder.emit_output(self._output)
            self._builder.emit_func_output(result)

    def kernel(self, key: Hashable, name: str, make: Callable[[], tirx.PrimFunc]) -> tvm.ir.GlobalVar:
        """The kernel for ``key``, built by ``make`` and registered the first time it is asked for."""
        if key not in self._kernels:
            unique = name
            suffix = 1
            while unique in self._names:
                unique = f"{name}_{suffix}"
                suffix += 1
            self._names.add(unique)
            # "tir.is_scheduled": the kernel is scheduled already; no default schedule may touch it.
            kernel = make().with_attr("global_symbol", unique).with_attr("tir.is_scheduled", True)
            self._kernels[key] = self._builder.add_func(kernel, unique)
            self.kernel_names[key] = unique
        return self._kernels[key]

    def call(
        self,
        key: Hashable,
        name: str,
        make: Callable[[], tirx.PrimFunc],
        arguments: list[relax.Expr],
        out_shape: tuple[int, ...],
        out_dtype: str = DTYPE,
    ) -> relax.Var:
        """Emit ``call_tir`` of the keyed kernel on ``arguments``; returns the output variable
        (``out_dtype``: float32, or uint8 for an int8 build's quantised activations)."""
        function = self.kernel(key, name, make)
        return self._builder.emit(relax.call_tir(function, arguments, relax.TensorType(tuple(out_shape), out_dtype)))

    def reshape(self, value: relax.Expr, shape: tuple[int, ...]) -> relax.Var:
        """A reshape of a contiguous tensor: lowered by Relax to a view, no copy, no kernel."""
        return self._builder.emit(relax.op.reshape(value, tuple(shape)))

    @staticmethod
    def constant(array: np.ndarray) -> relax.Constant:
        return relax.const(np.ascontiguousarray(array))

    def finish(self, output: relax.Expr) -> None:
        """Make ``output`` the function's result (emitted when the :meth:`function` scope closes)."""
        self._output = output

    def entry_over_sub_batches(
        self, batch: int, sub_batch_function: str, output_shape: tuple[int, ...], lanes: int, output_dtype: str = DTYPE
    ) -> None:
        """Emit the entry function for a batch of ``batch`` samples that runs the function
        ``sub_batch_function`` (emitted before, over this program's input shape, returning
        ``output_shape``) on consecutive sub-batches and stacks their outputs: copies in and out,
        the sub-batch's weights bound once."""
        sub_batch = self.input_shape[0]
        parts = batch // sub_batch
        in_elements = math.prod(self.input_shape[1:])
        out_elements = math.prod(output_shape[1:])
        whole = relax.Var("x", relax.TensorType((batch, *self.input_shape[1:]), DTYPE))
        function = self._builder.get().get_global_var(sub_batch_function)
        with self._builder.function(ENTRY_FUNCTION, [whole]):
            with self._builder.dataflow():
                rows = self.reshape(whole, (batch, in_elements))
                outputs = []
                for part in range(parts):
                    start = part * sub_batch
                    copied = self.call(
                        ("batch_rows", batch, in_elements, start, sub_batch),
                        f"batch_rows_{start}to{start + sub_batch}_of_{batch}",
                        lambda start=start: batch_rows_primfunc(batch, in_elements, start, sub_batch, lanes),
                        [rows],
                        (sub_batch, in_elements),
                    )
                    result = self._builder.emit(relax.Call(function, [self.reshape(copied, self.input_shape)]))
                    outputs.append(self.reshape(result, (sub_batch, out_elements)))
                stacked = self.call(
                    ("stack_rows", parts, sub_batch, out_elements, output_dtype),
                    f"stack_{parts}x{sub_batch}_rows",
                    lambda: stack_rows_primfunc(parts, sub_batch, out_elements, lanes, output_dtype),
                    outputs,
                    (batch, out_elements),
                    output_dtype,
                )
                result = self._builder.emit_output(self.reshape(stacked, (batch, *output_shape[1:])))
            self._builder.emit_func_output(result)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(extent) for extent in self.input.ty.shape)

    def module(self) -> tvm.IRModule:
        return self._builder.get()
