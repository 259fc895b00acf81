"""The TIR pipeline subp-fx builds with: TVM's default, then :mod:`dynamic_tasks` on x86 targets.

``tvm.compile`` takes a TIR pipeline by name only (``tvm.tirx.build`` looks names up in TVM's
pipeline table), so each worker count gets a named entry there, made once per process.
"""

from __future__ import annotations

import tvm
import tvm.s_tir.pipeline
from tvm.target import Target
from tvm.tirx import compilation_pipeline

from subp_fx.codegen.tir_passes.dynamic_tasks import dynamic_tasks, targets_with_dynamic_tasks

DEFAULT = "default"
_PREFIX = "subp_fx.dynamic_tasks."


def tir_pipeline(target: Target, workers: int) -> str:
    """The name of the TIR pipeline to build ``target``'s kernels with, for ``workers`` workers:
    TVM's own (``"default"``) where :func:`targets_with_dynamic_tasks` says no."""
    if not targets_with_dynamic_tasks(target):
        return DEFAULT
    name = f"{_PREFIX}{workers}"
    if name not in compilation_pipeline.PIPELINE_MAP:

        def factory(**_options):
            lowering, finalize_host, finalize_device = tvm.s_tir.pipeline.default_s_tir_pipeline()
            return tvm.transform.Sequential([lowering, dynamic_tasks(workers)]), finalize_host, finalize_device

        compilation_pipeline.register_tir_pipeline(name, factory)
    return name


__all__ = ["DEFAULT", "tir_pipeline"]
