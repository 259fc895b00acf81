"""The compile half of subp-fx: TVM code generation for 1xN block-sparse CNNs.

This package is the only place that imports TVM. ``threads`` is imported first so that the TVM
runtime's thread pool is sized to the physical cores before any kernel runs (see its docstring).
"""

from subp_fx.codegen import threads as _threads  # noqa: F401  (sizes the TVM pool; must come first)
from subp_fx.codegen.errors import BlockLayoutError, CodegenError, KernelSpecError, TargetError, ThreadConfigError
from subp_fx.codegen.packing import dense_as_block_sparse, pack_block_sparse, unpack_block_sparse
from subp_fx.codegen.target import get_num_threads, host_cpu_name, host_triple, parse_target, set_num_threads

__all__ = [
    "BlockLayoutError",
    "CodegenError",
    "KernelSpecError",
    "TargetError",
    "ThreadConfigError",
    "dense_as_block_sparse",
    "get_num_threads",
    "host_cpu_name",
    "host_triple",
    "pack_block_sparse",
    "parse_target",
    "set_num_threads",
    "unpack_block_sparse",
]
