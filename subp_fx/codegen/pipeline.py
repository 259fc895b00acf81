"""The compile pipeline, stage by stage, in the order ``compile`` runs them (after checking the
target, ``target.compile_target``, before any other work):

0. ``capture``: ``passes.capture.capture_for_compile``: torch.fx ``symbolic_trace``, or, for a
   forward it cannot follow (Python logic on shapes), a concrete trace on the example input,
   exact for the compiled (static) input shape;
1. ``fold``: for the one static input shape compiled for, ``passes.fold_static_shapes`` makes
   every Python value computed from shapes (``x.size(0)``, ``c // groups``, ``x.ndim == 4``
   asserts) a constant; ``passes.fold_constants`` evaluates every tensor computed from the
   model's constants alone (``gamma.reshape(1, -1, 1, 1)``, a standardised weight) once and
   reads it as a constant; ``passes.drop_identities`` removes ``nn.Identity`` and eval-mode
   dropout calls (so the folds below see the layer itself); ``passes.modularize_functional``
   makes each ``F.batch_norm`` / ``F.conv2d`` / ``F.linear`` on the model's own weights (layers
   fx traced into: timm's ``BatchNormAct2d``, ``Conv2dSame``, ``Linear``) a ``nn.BatchNorm2d`` /
   ``nn.Conv2d`` / ``nn.Linear`` call; then ``passes.fold_batchnorm`` merges each eval-mode batch
   norm into its conv (or the convs a channel concat joins), ``passes.fold_layer_scale`` each
   constant per-channel multiply (ConvNeXt's layer scale) into the layer feeding it, and
   ``passes.fold_pad`` each symmetric zero pad feeding a conv into that conv's padding;
2. ``convert``: ``passes.convert`` turns each SUBP conv into the compact ``BlockSparseConv2d``,
   then ``passes.fuse_channel_shuffles`` makes each view -> transpose -> view shuffle one node;
2b. ``calibrate`` (``precision="int8"`` only): ``quantize.calibrate`` runs that graph in PyTorch
   on the calibration batches and records every tensor's range; the lowering then plans
   (``quantize.plan_int8``) which convs run on int8 kernels and which tensors are stored as
   uint8;
3. ``lower``: ``lowering.lower.lower_graph`` checks the graph is folded and converted, then emits
   a Relax ``main`` of ``call_tir`` calls to our scheduled kernels (and free reshapes);
4. ``relax passes``: :func:`relax_passes`, the explicit list ``tvm.compile`` runs on that module
   (TVM's own ``relax/backend/cpu_generic`` is the model: named lists, no implicit default);
5. ``build``: ``tvm.compile`` with that list and TVM's default TIR pipeline -> a VM executable;
6. ``export``: the executable's shared library, which the returned :class:`CompiledModel` runs
   (what is tested is what ``export`` ships).

An optional observer (``progress.CompileProgress``) hears of each stage as it starts and ends,
under the names of ``progress.STAGES`` (``inference_graph`` is stages 1-2, ``lower_graph`` 3,
then ``check_relax_ops``, ``relax_passes``, ``build``, ``export``); nothing here prints.

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
from subp_fx.codegen.precision import check_precision_target
from subp_fx.codegen.progress import CALIBRATE_STAGE, CompileProgress, stage
from subp_fx.codegen.runtime.compiled import CompiledModel, as_float32_array
from subp_fx.codegen.runtime.manifest import LIBRARY_FILE, GraphPassReport, Manifest
from subp_fx.codegen.target import compile_target
from subp_fx.codegen.threads import physical_core_count, set_num_threads, thread_pool_capacity
from subp_fx.codegen.tir_passes.pipeline import tir_pipeline
from subp_fx.codegen.tuning.log import TuningLog
from subp_fx.errors import ConfigError, UnsupportedOpError
from subp_fx.passes.capture import capture_for_compile
from subp_fx.passes.convert import CONVERTED_META_KEY, convert
from subp_fx.passes.drop_identities import DROPPED_IDENTITIES_META_KEY, drop_identities
from subp_fx.passes.fold_batchnorm import FOLDED_META_KEY, UNFOLDED_META_KEY, fold_batchnorm
from subp_fx.passes.fold_constants import FOLDED_CONSTANTS_META_KEY, fold_constants
from subp_fx.passes.fold_layer_scale import FOLDED_LAYER_SCALES_META_KEY, fold_layer_scale
from subp_fx.passes.fold_pad import FOLDED_PADS_META_KEY, fold_zero_pads
from subp_fx.passes.fold_static_shapes import FOLDED_SHAPES_META_KEY, fold_static_shapes
from subp_fx.passes.fuse_channel_shuffle import FUSED_SHUFFLES_META_KEY, fuse_channel_shuffles
from subp_fx.passes.modularize_functional import (
    LEFT_FUNCTIONAL_META_KEY,
    MODULARIZED_META_KEY,
    modularize_functional,
)
from subp_fx.quantize import calibrate, check_precision

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
    """Stages 1-2: the model folded, converted and its shapes made constants, and what those
    passes did."""

    gm: Any  # torch.fx.GraphModule
    passes: GraphPassReport


def inference_graph(model, example_input: Any, capture: str = "auto") -> InferenceGraph:
    """Stages 0-2 on a copy of ``model`` (the model is untouched), for inputs like
    ``example_input`` (an NCHW tensor, array or shape): a model ``symbolic_trace`` cannot follow
    is traced concretely at that shape (``capture``: ``auto`` | ``symbolic_trace`` |
    ``concrete_trace``), and shape arithmetic is folded for it."""
    example = _example_tensor(example_input)
    shape = tuple(example.shape)
    captured = capture_for_compile(model, example, method=capture)
    # Shapes first: a shape assert reading a conv's output (timm's norm layers check x.ndim)
    # would otherwise be a second user of that output and keep its batch norm from folding.
    static = fold_static_shapes(captured.model, shape)
    constant = fold_constants(static)
    plain = drop_identities(constant)
    modular = modularize_functional(plain, shape)
    folded = fold_batchnorm(modular)
    scaled = fold_layer_scale(folded, shape)
    unpadded = fold_zero_pads(scaled)
    converted = convert(unpadded)
    shuffled = fuse_channel_shuffles(converted, shape)
    report = GraphPassReport(
        folded_batchnorms=len(folded.meta[FOLDED_META_KEY]),
        unfolded_batchnorms=dict(folded.meta[UNFOLDED_META_KEY]),
        converted_convs=len(converted.meta[CONVERTED_META_KEY]),
        capture=captured.method,
        capture_reason=captured.reason,
        folded_pads=len(unpadded.meta[FOLDED_PADS_META_KEY]),
        folded_shape_nodes=static.meta[FOLDED_SHAPES_META_KEY],
        folded_constants=len(constant.meta[FOLDED_CONSTANTS_META_KEY]),
        folded_layer_scales=len(scaled.meta[FOLDED_LAYER_SCALES_META_KEY]),
        dropped_identities=len(plain.meta[DROPPED_IDENTITIES_META_KEY]),
        fused_channel_shuffles=shuffled.meta[FUSED_SHUFFLES_META_KEY],
        modularized_calls=len(modular.meta[MODULARIZED_META_KEY]),
        functional_left=dict(modular.meta[LEFT_FUNCTIONAL_META_KEY]),
    )
    return InferenceGraph(shuffled, report)


def kernel_count(mod: tvm.IRModule) -> int:
    """The TIR kernels (PrimFuncs) in ``mod``: what the build compiles."""
    return sum(isinstance(function, tvm.tirx.PrimFunc) for function in mod.functions.values())


def build(
    lowered: LoweredModel, progress: CompileProgress | None = None, workers: int | None = None
) -> relax.VMExecutable:
    """Stages 4-5: the Relax passes and TVM's TIR pipeline, to a VM executable.

    The Relax passes run here rather than inside ``tvm.compile`` (which is then given no Relax
    pipeline) only so that an observer sees them as a stage of their own: ``tvm.relax.build``
    runs its pipeline exactly so, under ``with target``. The TIR pipeline is TVM's, plus, on x86,
    parallel loops whose tasks ``workers`` workers claim as they go (``tir_passes.dynamic_tasks``;
    default: as many as this process's TVM pool can run, so a model run on fewer threads, as
    ``set_num_threads`` allows, still uses each of them).
    """
    workers = thread_pool_capacity() if workers is None else workers
    progress = progress or CompileProgress()
    with stage(progress, "check_relax_ops"):
        check_relax_ops(lowered.module)
    with stage(progress, "relax_passes"), lowered.target:
        module = relax_passes(lowered.target)(lowered.module)
    with stage(progress, "build", note=f"{kernel_count(module)} kernels"):
        return tvm.compile(
            module, target=lowered.target, relax_pipeline=None, tir_pipeline=tir_pipeline(lowered.target, workers)
        )


def _example_shape(example_input: Any) -> tuple[int, ...]:
    """The input shape from an example array / tensor, or a shape given as a tuple of ints."""
    if isinstance(example_input, (tuple, list)) and all(isinstance(size, int) for size in example_input):
        return tuple(example_input)
    return tuple(int(size) for size in as_float32_array(example_input).shape)


def _example_tensor(example_input: Any):
    """The example as a float32 torch tensor; a shape gets seeded normal values (a concrete trace
    runs the model on it, and zeros could hide a branch on values)."""
    import torch

    if isinstance(example_input, (tuple, list)) and all(isinstance(size, int) for size in example_input):
        return torch.randn(tuple(example_input), generator=torch.Generator().manual_seed(0))
    return torch.as_tensor(as_float32_array(example_input))


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
    progress: CompileProgress | None = None,
    capture: str = "auto",
    precision: str = "fp32",
    calibration: Any = None,
    calibration_info: Mapping[str, Any] | None = None,
    sub_batch: int | None = None,
    winograd: bool = True,
) -> CompiledModel:
    """Compile ``model`` (an ``nn.Module`` or GraphModule in eval mode) for inputs shaped like
    ``example_input`` (an NCHW array or tensor, or the shape itself).

    The compiled model takes that one input shape. ``capture`` (``auto`` | ``symbolic_trace`` |
    ``concrete_trace``): how the model becomes a graph. ``auto`` uses torch.fx's symbolic_trace
    and, for a forward it cannot follow (``if x.shape[-1] % 2``, "same"-padding helpers reading
    ``x.size()``, shape asserts), traces concretely on the example: shape logic is resolved for
    that shape, which is exact since the compiled input shape is static (a branch on tensor
    *values* is resolved on the example's values, with a warning). The example's values are used
    only there (a shape gets seeded random values). The report says which capture ran and why.

    ``target``: a classic string (``"llvm -mcpu=native"``), JSON string, dict or Target
    (``parse_target``). ``threads``: TVM runtime threads to run with (default: physical cores).
    ``tune_tiles``: time a few register tiles per distinct conv shape at compile time.
    ``tuning_log``: a JSON file of such timings (``tuning.log``), read first and written
    back with the shapes this compile timed; implies ``tune_tiles``.
    ``progress``: told of each stage as it starts and ends (``progress.CompileProgress``).
    ``precision``: ``"fp32"`` (default), or ``"int8"``: every eligible conv (``quantize.plan``)
    runs on an int8 kernel (VNNI where the target has it), its input quantised per tensor with
    ranges recorded on ``calibration`` (an iterable of NCHW float batches of the compiled input's
    channels and size, or (images, labels) pairs; required for int8); ``calibration_info`` is
    recorded in the manifest (e.g. the data set's name). ``"bf16"`` (targets with avx512_bf16
    only; no calibration): every conv on the 1xN kernel reads bf16 inputs and weights and sums in
    float32 (``vdpbf16ps``; ``lowering.bf16``), the rest stays fp32.
    ``sub_batch``: for a batch of B > 1, how many samples the layers run on at a time (a divisor
    of B; the compiled model cuts its input into sub-batches and stacks their outputs, so that
    each layer's activations stay in the caches: ``lowering.sub_batches``); None chooses by
    the model's largest activation, B runs the whole batch through each layer.
    ``winograd``: fp32 3x3 stride-1 convs with enough output tiles run by Winograd F(4x4, 3x3)
    (``kernels.winograd``: 4x fewer multiply-adds, the 1xN sparsity kept; outputs differ from
    the direct conv's by rounding, about 1e-6 relative); False: every conv on the direct kernel.
    Refuses, at once, a precision or calibration that cannot work, a target it cannot build
    (``compile_target``: only CPU ``llvm`` targets of
    this machine's architecture, with a CPU LLVM knows; a ``TargetError``); then whatever
    ``fold_batchnorm`` / ``convert`` refuse (training-mode batch norm, non-uniform masks), and
    every op the lowering cannot handle, listed in one ``UnsupportedOpError``.
    """
    check_precision(precision)
    target = compile_target(target)  # first: a target we cannot build is refused before any work
    check_precision_target(precision, target)
    if (precision == "int8") != (calibration is not None):
        raise ConfigError(
            "precision='int8' needs calibration=<an iterable of NCHW input batches>"
            if precision == "int8"
            else f"calibration is for precision='int8'; a {precision} build calibrates nothing"
        )
    progress = progress or CompileProgress()
    shape = _example_shape(example_input)
    threads = min(physical_core_count(), thread_pool_capacity()) if threads is None else threads
    set_num_threads(threads)  # validates; tile timing (tune_tiles) then runs with the model's threads
    started = time.perf_counter()
    log = TuningLog.load(tuning_log) if tuning_log is not None else None
    with stage(progress, "inference_graph"):
        graph = inference_graph(model, example_input, capture)
    ranges = None
    if precision == "int8":
        with stage(progress, CALIBRATE_STAGE):
            ranges = calibrate(graph.gm, calibration, example_shape=shape)
    with stage(progress, "lower_graph"):
        lowered = lower_graph(
            graph.gm,
            shape,
            target,
            tune_tiles=tune_tiles or log is not None,
            tuning_log=log,
            progress=progress,
            activation_ranges=ranges,
            bf16=precision == "bf16",
            sub_batch=sub_batch,
            winograd=winograd,
        )
    if log is not None and log.added:
        log.save()
    executable = build(lowered, progress)
    # The model runs from the exported library itself: what is tested is what export ships. (It
    # is also exported before any VM exists: a VM's start-up adds a memory-scope entry per
    # constant to the executable, and TVM 0.27 logs a warning per entry when saving it.)
    staging = Path(tempfile.mkdtemp(prefix="subp-fx-compiled-"))
    library = staging / LIBRARY_FILE
    try:
        with stage(progress, "export"):
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
        precision=precision,
        calibration=None
        if ranges is None
        else {**dict(calibration_info or {}), "calibrated_batches": ranges.batches, "calibrated_images": ranges.images},
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
    "kernel_count",
    "relax_passes",
]
