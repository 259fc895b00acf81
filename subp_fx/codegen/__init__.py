"""The compile half of subp-fx: TVM code generation for 1xN block-sparse CNNs.

This package is the only place that imports TVM. The folders follow the pipeline
(``pipeline.py`` names its stages in order):

- ``lowering/``: a folded, converted torch.fx graph -> a Relax module of ``call_tir`` calls;
- ``kernels/``: every hand-scheduled TIR kernel and what they share;
- ``tuning/``: building single kernels, timing register tiles, the tuning log, the asm checks;
- ``runtime/``: the compiled model (run, export, load: numpy and the TVM runtime only), its
  manifest and kernel table;
- ``activations``, ``target``, ``threads``, ``defaults``, ``errors``: one table or one job each.

``threads`` is imported first, so that the TVM runtime's thread pool is sized to the physical
cores before any kernel runs (see its docstring). Other names are imported on first use (PEP 562):
importing a TVM-free module of this package (``defaults``, ``kernels.modes``) imports no TVM.
"""

from __future__ import annotations

from subp_fx.codegen import threads as _threads  # noqa: F401  (sizes the TVM pool; must come first)
from subp_fx.lazy import lazy_exports

_EXPORTS = {
    "BlockLayoutError": "subp_fx.codegen.errors",
    "CodegenError": "subp_fx.codegen.errors",
    "KernelSpecError": "subp_fx.codegen.errors",
    "TargetError": "subp_fx.codegen.errors",
    "ThreadConfigError": "subp_fx.codegen.errors",
    "dense_as_block_sparse": "subp_fx.codegen.kernels.packing",
    "pack_block_sparse": "subp_fx.codegen.kernels.packing",
    "unpack_block_sparse": "subp_fx.codegen.kernels.packing",
    "get_num_threads": "subp_fx.codegen.threads",
    "set_num_threads": "subp_fx.codegen.threads",
    "host_cpu_name": "subp_fx.codegen.target",
    "host_triple": "subp_fx.codegen.target",
    "parse_target": "subp_fx.codegen.target",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports("subp_fx.codegen", globals(), _EXPORTS)
