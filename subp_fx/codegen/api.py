"""The public compile API, for ``subp_fx.compile`` / ``subp_fx.load_compiled`` to re-export lazily.

``compile(model, example_input, target="llvm -mcpu=native", threads=None, tune_tiles=False, tuning_log=None)``
returns a ``CompiledModel``; ``load_compiled(directory)`` reads one back from
``CompiledModel.export``. ``lower`` / ``lower_graph`` give the Relax module itself.
"""

from subp_fx.codegen.compiled import CompiledModel, compile, load_compiled
from subp_fx.codegen.kernel_table import KernelEntry, format_kernel_table
from subp_fx.codegen.lower import LoweredModel, lower, lower_graph

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
