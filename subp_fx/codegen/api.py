"""The public compile API, for ``subp_fx.compile`` / ``subp_fx.load_compiled`` to re-export lazily.

``compile(model, example_input, target=DEFAULT_TARGET, threads=None, tune_tiles=False,
tuning_log=None)`` (``pipeline``) returns a ``CompiledModel``; ``load_compiled(directory)`` reads
one back from ``CompiledModel.export``. ``lower`` / ``lower_graph`` give the Relax module itself.
"""

from subp_fx.codegen.lowering.lower import LoweredModel, lower, lower_graph
from subp_fx.codegen.pipeline import compile
from subp_fx.codegen.runtime.compiled import CompiledModel, load_compiled
from subp_fx.codegen.runtime.kernel_table import KernelEntry, format_kernel_table

__all__ = [
    "CompiledModel",
    "KernelEntry",
    "LoweredModel",
    "compile",
    "format_kernel_table",
    "load_compiled",
    "lower",
    "lower_graph",
]
