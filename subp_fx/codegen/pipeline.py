"""The compile pipeline, stage by stage, in the order ``compile`` runs them:

1. ``fold``: ``passes.fold_batchnorm`` merges each eval-mode batch norm into its conv, then
   ``passes.fold_layer_scale`` each constant per-channel multiply (ConvNeXt's layer scale) into
   the layer feeding it;
2. ``convert``: ``passes.convert`` turns each SUBP conv into the compact ``BlockSparseConv2d``;
3. ``lower``: ``lowering.lower.lower_graph`` checks the graph is folded and converted, then emits
   a Relax ``main`` of ``call_tir`` calls to our scheduled kernels (and free reshapes);
4. ``relax passes``: :func:`relax_passes`, the explicit list ``tvm.compile`` runs on that module
   (TVM's own ``relax/backend/cpu_generic`` is the model: named lists, no implicit default);
5. ``build``: ``tvm.compile`` with that list and TVM's default TIR pipeline -> a VM executable;
6. ``export``: the executable's shared library, which the returned :class:`CompiledModel` runs
   (what is tested is what ``export`` ships).

Why the Relax list is pinned here: ``tvm.compile``'s implicit default would legalise any Relax op
our lowering left behind into a generic, unscheduled TIR loop nest, silently (TVM's own untuned
build of ResNet-18 ran 50x slower than PyTorch eager on this machine kind:
``shared/notes/tvm-0.27.md``). Our module may hold ``call_tir`` and ``reshape`` only, which
:func:`check_relax_ops` asserts before anything is built; ``LegalizeOps`` then lowers the
reshapes alone, which ``RewriteDataflowReshape`` turns into views (no copy). TVM's CPU default
also runs ``DispatchSampling``, ``DispatchSortScan`` (no such ops here) and ``RewriteCUDAGraph``
(GPU only): left out.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tvm
from tvm import relax
from tvm.target import Target

from subp_fx.codegen.defaults import DEFAULT_TARGET
from subp_fx.codegen.lowering.lower import LoweredModel, lower_graph
from subp_fx.codegen.runtime.compiled import CompiledModel, as_float32_array
from subp_fx.codegen.runtime.manifest import LIBRARY_FILE, GraphPassReport, Manifest
from subp_fx.codegen.threads import physical_core_count, set_num_threads, thread_pool_capacity
from subp_fx.codegen.tuning.log import TuningLog
from subp_fx.errors import UnsupportedOpError
from subp_fx.passes.convert import CONVERTED_META_KEY, convert
from subp_fx.passes.fold_batchnorm import FOLDED_META_KEY, UNFOLDED_META_KEY, fold_batchnorm
from subp_fx.passes.fold_layer_scale import fold_layer_scale

# The Relax ops our lowering emits; anything else reaching the build is a lowering bug.
EMITTED_RELAX_OPS = frozenset({"relax.call_tir", "relax.reshape"})


def check_relax_ops(mod: tvm.IRModule) -> tvm.IRModule:
    """Refuse a module whose Relax functions call an op other than :data:`EMITTED_RELAX_OPS`
    (it would be legalised to generic, unscheduled TIR); return ``mod`` unchanged otherwise.

    A plain function run by :func:`build` before ``tvm.compile``, not a pass in the list: an
    exception raised inside a TVM pass reaches Python as a bare ``RuntimeError``.
    """
    unexpected: set[str] = set()

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name not in EMITTED_RELAX_OPS:
            unexpected.add(expr.op.name)

    for function in mod.functions.values():
        if isinstance(function, relax.Function):
            relax.analysis.post_order_visit(function, visit)
    if unexpected:
        raise UnsupportedOpError(
            f"internal: the lowered module calls Relax op(s) {sorted(unexpected)}, which the build would legalise to "
            f"unscheduled generic code; the lowering emits only {sorted(EMITTED_RELAX_OPS)}. Please report this"
        )
    return mod


def legalize_passes(target: Target) -> list[tvm.transform.Pass]:  # noqa: ARG001 (the same on every CPU)
    # Only reshapes reach it (check_relax_ops); RewriteDataflowReshape then makes them views.
    return [relax.transform.LegalizeOps()]


def dataflow_lower_passes(target: Target) -> list[tvm.transform.Pass]:  # noqa: ARG001
    return [
        relax.transform.RewriteDataflowReshape(),
        relax.transform.ToNonDataflow(),
        relax.transform.RemovePurityChecking(),
        relax.transform.CallTIRRewrite(),
    ]


def finalize_passes(target: Target) -> list[tvm.transform.Pass]:  # noqa: ARG001
    return [
        relax.transform.StaticPlanBlockMemory(),
        relax.transform.LowerAllocTensor(),
        relax.transform.KillAfterLastUse(),
        relax.transform.LowerRuntimeBuiltin(),
        relax.transform.ComputePrimValue(),
        relax.transform.VMShapeLower(),
        relax.transform.AttachGlobalSymbol(),
    ]


def relax_passes(target: Target) -> tvm.transform.Pass:
    """Stage 4: every Relax pass the build runs, in order."""
    return tvm.transform.Sequential(
        legalize_passes(target) + dataflow_lower_passes(target) + finalize_passes(target), name="subp_fx.relax_passes"
    )


@dataclass(frozen=True)
class InferenceGraph:
    """Stages 1-2: the model folded and converted, and what those passes did."""

    gm: Any  # torch.fx.GraphModule
    passes: GraphPassReport


def inference_graph(model) -> InferenceGraph:
    """Stages 1-2 on a copy of ``model`` (the model is untouched)."""
    folded = fold_batchnorm(model)
    converted = convert(fold_layer_scale(folded))
    report = GraphPassReport(
        folded_batchnorms=len(folded.meta[FOLDED_META_KEY]),
        unfolded_batchnorms=dict(folded.meta[UNFOLDED_META_KEY]),
        converted_convs=len(converted.meta[CONVERTED_META_KEY]),
    )
    return InferenceGraph(converted, report)


def build(lowered: LoweredModel) -> relax.VMExecutable:
    """Stages 4-5: the Relax passes and TVM's TIR pipeline, to a VM executable."""
    check_relax_ops(lowered.module)
    return tvm.compile(lowered.module, target=lowered.target, relax_pipeline=relax_passes(lowered.target))


def _example_shape(example_input: Any) -> tuple[int, ...]:
    """The input shape from an example array / tensor, or a shape given as a tuple of ints."""
    if isinstance(example_input, (tuple, list)) and all(isinstance(size, int) for size in example_input):
        return tuple(example_input)
    return tuple(int(size) for size in as_float32_array(example_input).shape)


def _subp_fx_version() -> str:
    from subp_fx import __version__

    return __version__


def compile(  # noqa: A001 (the public name the issue asks for)
    model,
    example_input: Any,
    target: str | Mapping[str, Any] | Target = DEFAULT_TARGET,
    threads: int | None = None,
    tune_tiles: bool = False,
    tuning_log: str | os.PathLike | None = None,
) -> CompiledModel:
    """Compile ``model`` (an ``nn.Module`` or GraphModule in eval mode) for inputs shaped like
    ``example_input`` (an NCHW array or tensor, whose values are not used, or the shape itself).

    ``target``: a classic string (``"llvm -mcpu=native"``), JSON string, dict or Target
    (``parse_target``). ``threads``: TVM runtime threads to run with (default: physical cores).
    ``tune_tiles``: time a few register tiles per distinct conv shape at compile time.
    ``tuning_log``: a JSON file of such timings (``tuning.log``), read first and written
    back with the shapes this compile timed; implies ``tune_tiles``.
    Refuses: whatever ``fold_batchnorm`` / ``convert`` refuse (training-mode batch norm,
    non-uniform masks), and every op the lowering cannot handle, listed in one
    ``UnsupportedOpError``.
    """
    shape = _example_shape(example_input)
    threads = min(physical_core_count(), thread_pool_capacity()) if threads is None else threads
    set_num_threads(threads)  # validates; tile timing (tune_tiles) then runs with the model's threads
    started = time.perf_counter()
    log = TuningLog.load(tuning_log) if tuning_log is not None else None
    graph = inference_graph(model)
    lowered = lower_graph(graph.gm, shape, target, tune_tiles=tune_tiles or log is not None, tuning_log=log)
    if log is not None and log.added:
        log.save()
    executable = build(lowered)
    # The model runs from the exported library itself: what is tested is what export ships. (It
    # is also exported before any VM exists: a VM's start-up adds a memory-scope entry per
    # constant to the executable, and TVM 0.27 logs a warning per entry when saving it.)
    staging = Path(tempfile.mkdtemp(prefix="subp-fx-compiled-"))
    library = staging / LIBRARY_FILE
    try:
        executable.export_library(str(library))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    manifest = Manifest(
        input_shape=lowered.input_shape,
        output_shape=lowered.output_shape,
        target=json.loads(str(lowered.target)),
        threads=threads,
        kernels=lowered.kernel_table,
        graph_passes=graph.passes,
        tvm_version=tvm.__version__,
        subp_fx_version=_subp_fx_version(),
        compile_seconds=time.perf_counter() - started,
    )
    compiled = CompiledModel(library, manifest)
    weakref.finalize(compiled, shutil.rmtree, staging, True)
    return compiled


__all__ = [
    "EMITTED_RELAX_OPS",
    "InferenceGraph",
    "build",
    "check_relax_ops",
    "compile",
    "inference_graph",
    "relax_passes",
]
