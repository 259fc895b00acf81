"""The TIR pipeline subp-fx builds with: TVM's default lowering, then :mod:`weight_prefetch` on
LLVM targets and :mod:`dynamic_tasks` on x86 ones.

``tvm.compile`` takes a TIR pipeline by name only (``tvm.tirx.build`` looks names up in TVM's
pipeline table), so each worker count gets a named entry there, made once per process.
"""

from __future__ import annotations

import tvm
import tvm.s_tir.pipeline
from tvm.target import Target
from tvm.tirx import compilation_pipeline

from subp_fx.codegen.tir_passes.dynamic_tasks import dynamic_tasks, targets_with_dynamic_tasks
from subp_fx.codegen.tir_passes.weight_prefetch import weight_prefetch

DEFAULT = "default"
_PREFIX = "subp_fx."


def tir_pipeline(target: Target, workers: int) -> str:
    """The name of the TIR pipeline to build ``target``'s kernels with, for ``workers`` workers:
    TVM's own (``"default"``) for targets other than LLVM; on LLVM its lowering then
    :func:`weight_prefetch`, then (where :func:`targets_with_dynamic_tasks` says so)
    :func:`dynamic_tasks`."""
    if target.kind.name != "llvm":
        return DEFAULT
    dynamic = targets_with_dynamic_tasks(target)
    name = f"{_PREFIX}{'dynamic_tasks.' if dynamic else ''}{workers}"
    if name not in compilation_pipeline.PIPELINE_MAP:

        def factory(**_options):
            lowering, finalize_host, finalize_device = tvm.s_tir.pipeline.default_s_tir_pipeline()
            passes = [lowering, weight_prefetch()] + ([dynamic_tasks(workers)] if dynamic else [])
            return tvm.transform.Sequential(passes), finalize_host, finalize_device

        compilation_pipeline.register_tir_pipeline(name, factory)
    return name


__all__ = ["DEFAULT", "tir_pipeline"]
