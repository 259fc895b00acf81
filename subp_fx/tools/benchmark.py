"""``subp-fx bench``: latency of a compiled artefact beside our dense build and PyTorch's dense
paths, interleaved in one process (``tools.latency``)."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from subp_fx.errors import ConfigError, SubpError
from subp_fx.tools.artifact import (
    DENSE_DIR,
    DENSE_LABEL,
    SPARSE_LABEL,
    SUBP_MODEL_FILE,
    load_pytorch_model,
    read_source,
)
from subp_fx.tools.calibration import model_shaped_batches
from subp_fx.tools.calibration_spec import CalibrationSpec

if TYPE_CHECKING:
    from subp_fx.codegen.progress import CompileProgress

ProgressMaker = Callable[[str], "CompileProgress"]


def _contenders_for_batch(out_dir: Path, batch: int, threads: int | None, progress: ProgressMaker | None = None):
    """(sparse, dense or None) compiled models for ``batch``: the artefact's own when its batch
    matches, otherwise both rebuilt for ``batch`` from the stored models with the same target
    (``progress``: as for ``compile_to_directory``)."""
    from subp_fx.codegen.api import compile as compile_model
    from subp_fx.codegen.api import load_compiled

    sparse = load_compiled(out_dir, threads=threads)
    calibration = artefact_calibration(out_dir)
    has_dense = (out_dir / DENSE_DIR).is_dir()
    if batch is None or batch == sparse.input_shape[0]:
        return sparse, load_compiled(out_dir / DENSE_DIR, threads=sparse.threads) if has_dense else None
    if batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch}")
    shape = (batch, *sparse.input_shape[1:])
    target, threads = sparse.manifest.target, sparse.threads
    # The rebuilt pair keeps the artefact's precision, calibrated on the same batches.
    options = {"target": target, "threads": threads, "precision": sparse.manifest.precision}
    if calibration is not None:
        options.update(calibration=calibration.batches_for(shape), calibration_info=calibration.to_json())

    def observer(label: str) -> CompileProgress | None:
        return progress(f"{label}, batch {batch}") if progress is not None else None

    rebuilt = compile_model(
        load_pytorch_model(out_dir, SUBP_MODEL_FILE), shape, **options, progress=observer(SPARSE_LABEL)
    )
    dense = (
        compile_model(load_pytorch_model(out_dir), shape, **options, progress=observer(DENSE_LABEL))
        if has_dense
        else None
    )
    return rebuilt, dense


def artefact_calibration(out_dir: Path) -> CalibrationSpec | None:
    """The calibration an int8 artefact was compiled with (``source.json``), else None."""
    recorded = read_source(out_dir).get("calibration")
    return CalibrationSpec.from_json(recorded) if recorded else None


SPARSE_NAME = "subp_sparse"
DENSE_NAME = "subp_dense"
REFERENCE_NAME = "pytorch_eager_dense"
# Before anything is timed, every contender's output on the benchmark input must be within
# AGREEMENT_TOLERANCE * max |PyTorch eager output| of PyTorch eager's: a fast wrong answer is no
# result. Summation order alone (folded batch norms, blocked kernels) stays near 1e-5 of it.
AGREEMENT_TOLERANCE = 1e-3
# Contenders computing in bf16 or fp16 (OpenVINO's default on CPUs with avx512_bf16) keep 8 or 11
# mantissa bits: their outputs are checked against this looser bound instead, and say so.
REDUCED_PRECISION_TOLERANCE = 5e-2
# int8 (ours and the int8 peers) against fp32 eager: per-tensor activation and per-channel weight
# rounding left 1.4-2.0% of max |logit| on ResNet-18/50 (ONNX Runtime and OpenVINO int8 QDQ, this
# project's measurement); an int8 build is checked against its fake-quant reference in the tests.
INT8_TOLERANCE = 5e-2
PRECISION_TOLERANCES = {
    "fp32": AGREEMENT_TOLERANCE,
    "bf16": REDUCED_PRECISION_TOLERANCE,
    "fp16": REDUCED_PRECISION_TOLERANCE,
    "int8": INT8_TOLERANCE,
}


class DisagreementError(SubpError):
    """A contender's output differs from PyTorch eager's on the same input and weights: timing it
    would compare a wrong program."""


# What every field of `subp-fx bench --json` means (also printed by `subp-fx bench --explain`).
BENCH_FIELDS = {
    "results.<name>": (
        "latency of one contender, ms per batch: median_ms, mean_ms, p90_ms, p99_ms, min_ms over iters timed runs; "
        "throughput_per_s = batch * 1000 / median_ms"
    ),
    "subp_sparse": "this compiled model (1xN block-sparse kernels)",
    "subp_dense": "the same weights compiled by subp-fx with every conv dense (same kernels, K = C_in)",
    "pytorch_eager_dense": "the same weights in PyTorch eager (pruned weights as zeros, batch norm unfolded)",
    "pytorch_compile_dense": "torch.compile (inductor) with torch._inductor.config.freezing = True",
    "pytorch_torchscript_dense": "torch.jit.trace + torch.jit.freeze",
    "pytorch_compile_bf16": (
        "beside a bf16 build only: torch.compile (inductor, freezing) run under torch.autocast('cpu', "
        "dtype=torch.bfloat16), PyTorch's documented bf16 CPU inference"
    ),
    "onnxruntime_fp32": (
        "ONNX Runtime (CPU provider, all graph optimisations, intra-op threads = threads, inter-op 1) on the "
        "dense weights exported by torch.onnx.export; only when onnxruntime is installed"
    ),
    "openvino_fp32": (
        "OpenVINO CPU plugin, PERFORMANCE_HINT=LATENCY, INFERENCE_NUM_THREADS = threads, "
        "INFERENCE_PRECISION_HINT=f32, same ONNX file; only when openvino is installed"
    ),
    "openvino_default_<precision>": (
        "OpenVINO without a precision hint, as a user gets it: bf16 on CPUs with avx512_bf16 (absent where the "
        "default resolves to fp32, which openvino_fp32 already times)"
    ),
    "precision": (
        "contender -> the arithmetic it computed in (fp32, bf16, fp16, int8; an int8 peer that left some layers in "
        "float says so, e.g. int8+fp32); our builds: the artefact's precision"
    ),
    "peers_skipped": "peer engine -> why it was not run (not installed, or a duplicate of another column)",
    "macs_sparse / macs_dense": (
        "multiply-accumulates per batch actually executed by the sparse / dense build (kernel tables)"
    ),
    "flop_ideal_speedup": (
        "macs_dense / macs_sparse: the speed-up over our dense build if time were proportional to MACs"
    ),
    "flop_ideal_ms": "subp_dense median * macs_sparse / macs_dense",
    "speedup_vs.<name>": "<name> median / subp_sparse median (> 1: the sparse model is faster)",
    "threads": "TVM runtime threads and torch intra-op threads, both set to the same count",
    "agreement": (
        "checked before timing, on the benchmark input: reference (pytorch_eager_dense), tolerance "
        "(max abs difference allowed, relative to max_abs_reference = the largest |reference output|), "
        "max_abs_reference, sparse_vs_dense_max_abs_diff (subp_sparse against subp_dense; null without a dense build), "
        "all_agree, and per contender under contenders.<name>: max_abs_diff against the reference (null when the "
        "shapes differ or the output is not finite) and agrees. A disagreeing contender stops the benchmark "
        "(exit 2) unless --allow-mismatch is given; then it is timed, flagged MISMATCH in the table and "
        "all_agree is false"
    ),
}


def _as_array(output) -> np.ndarray:
    if isinstance(output, torch.Tensor):
        return output.detach().cpu().numpy()
    return np.asarray(output)


def check_agreement(
    outputs: dict[str, object],
    reference: object,
    tolerance: float = AGREEMENT_TOLERANCE,
    tolerances: dict[str, float] | None = None,
) -> dict:
    """How far every output in ``outputs`` (name -> array or tensor) is from ``reference``: the
    ``agreement`` record of ``bench --json`` (see BENCH_FIELDS). An output agrees when its shape is
    the reference's, it is finite, and its max abs difference is at most ``tolerance`` * max
    |reference| (or ``tolerance`` for an all-zero reference). ``tolerances`` overrides
    ``tolerance`` per contender (reduced-precision engines)."""
    expected = _as_array(reference).astype(np.float64)
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    tolerances = tolerances or {}
    arrays = {name: _as_array(output).astype(np.float64) for name, output in outputs.items()}

    def distance(actual: np.ndarray, wanted: np.ndarray) -> float | None:
        if actual.shape != wanted.shape:
            return None
        value = float(np.abs(actual - wanted).max()) if actual.size else 0.0
        return value if math.isfinite(value) else None

    contenders = {}
    for name, actual in arrays.items():
        diff = distance(actual, expected)
        allowed = tolerances.get(name, tolerance) * (scale if scale > 0 else 1.0)
        contenders[name] = {"max_abs_diff": diff, "agrees": diff is not None and diff <= allowed}
        if name in tolerances:
            contenders[name]["tolerance"] = tolerances[name]
    sparse_vs_dense = (
        distance(arrays[SPARSE_NAME], arrays[DENSE_NAME]) if SPARSE_NAME in arrays and DENSE_NAME in arrays else None
    )
    return {
        "reference": REFERENCE_NAME,
        "tolerance": tolerance,
        "max_abs_reference": scale,
        "sparse_vs_dense_max_abs_diff": sparse_vs_dense,
        "all_agree": all(entry["agrees"] for entry in contenders.values()),
        "contenders": contenders,
    }


def _disagreement_message(agreement: dict, out_dir: Path) -> str:
    allowed = agreement["tolerance"] * (agreement["max_abs_reference"] or 1.0)
    wrong = [
        f"{name} (max |difference| "
        + (
            "not comparable: other shape or not finite"
            if entry["max_abs_diff"] is None
            else f"{entry['max_abs_diff']:.3g}"
        )
        + ")"
        for name, entry in agreement["contenders"].items()
        if not entry["agrees"]
    ]
    return (
        f"not benchmarking {str(out_dir)!r}: on the benchmark input {', '.join(wrong)} "
        f"{'disagrees' if len(wrong) == 1 else 'disagree'} with PyTorch eager "
        f"on the same weights (allowed: {allowed:.3g} = {agreement['tolerance']:g} x max |logit| "
        f"{agreement['max_abs_reference']:.3g}), so their timings would compare wrong programs. Recompile the "
        "artefact with `subp-fx compile` (its model.so and pytorch_model.pt must come from one compile); if the "
        "compiled model still disagrees, it is a compiler bug worth reporting. --allow-mismatch times them anyway "
        "and flags them MISMATCH"
    )


def bench_compiled(
    out_dir: str | Path,
    threads: int | None = None,
    warmup: int = 10,
    iters: int = 50,
    torch_compile: bool = True,
    batch: int | None = None,
    allow_mismatch: bool = False,
    peers: bool = True,
    progress: ProgressMaker | None = None,
) -> dict:
    """Median / p90 / p99 latency of the sparse model beside our dense build and PyTorch's dense
    paths, interleaved in one process on the same input with the same thread count. ``batch``
    other than the artefact's recompiles both builds for it (the compiled batch is static).

    Before timing, every contender's output on the benchmark input is compared with PyTorch
    eager's (``check_agreement``); a contender outside ``AGREEMENT_TOLERANCE`` raises
    :class:`DisagreementError` naming it, unless ``allow_mismatch`` (then the result's
    ``agreement`` record flags it). ``progress``: makes the observer of each recompile from its
    label (as for ``compile_to_directory``).

    ``peers``: also time ONNX Runtime and OpenVINO on the same dense weights where installed
    (``tools.peers``; each labelled with the precision it computed in, skipped with a note where absent).

    An int8 artefact: both our builds are int8; the int8 peers are quantised on the artefact's own
    calibration batches (``source.json``), and the benchmark input is the first calibration
    image(s) rather than noise, so that no contender is judged on values outside its ranges."""
    from subp_fx.tools.latency import TORCH_BASELINES, TORCH_REDUCED_BASELINES, measure_interleaved

    out_dir = Path(out_dir)
    sparse, dense = _contenders_for_batch(out_dir, batch, threads, progress)
    threads = sparse.threads
    torch.set_num_threads(threads)
    shape = tuple(sparse.input_shape)
    calibration = artefact_calibration(out_dir)
    calibration_batches = calibration.batches_for(shape) if calibration is not None else None
    if calibration_batches is not None:
        example = torch.as_tensor(model_shaped_batches(calibration_batches, shape)[0])
    else:
        example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    array = example.numpy()
    contenders = {SPARSE_NAME: lambda: sparse(array)}
    macs_sparse = sum(entry.macs for entry in sparse.kernel_table)
    macs_dense = None
    if dense is not None:
        contenders[DENSE_NAME] = lambda: dense(array)
        macs_dense = sum(entry.macs for entry in dense.kernel_table)
    reference = load_pytorch_model(out_dir)
    for name, build in TORCH_BASELINES.items():
        if name == "pytorch_compile_dense" and not torch_compile:
            continue
        contenders[name] = build(reference, example)
    peers_skipped, peer_precision = {}, {}
    for name, (torch_precision, build) in TORCH_REDUCED_BASELINES.items():
        if torch_precision == sparse.manifest.precision and torch_compile:  # all are torch.compile builds
            contenders[name] = build(reference, example)
            peer_precision[name] = torch_precision
    with tempfile.TemporaryDirectory(prefix="subp-fx-peers-") as scratch:
        if peers:
            from subp_fx.tools.peers import peer_contenders

            built = peer_contenders(reference, example, threads, Path(scratch), calibration=calibration_batches)
            peers_skipped = built.skipped
            for name, peer in built.runs.items():
                contenders[name] = peer.run
                peer_precision[name] = peer.precision
        ours = {SPARSE_NAME: sparse.manifest.precision} | ({DENSE_NAME: dense.manifest.precision} if dense else {})
        precision = {name: peer_precision.get(name, ours.get(name, "fp32")) for name in contenders}  # torch: fp32
        with torch.inference_mode():
            expected = reference(example)
        # one run each (copied: a runtime may reuse its output buffer), checked before any timing
        outputs = {name: np.array(_as_array(run())) for name, run in contenders.items()}
        tolerances = {name: PRECISION_TOLERANCES[p] for name, p in precision.items() if p != "fp32"}
        agreement = check_agreement(outputs, expected, tolerances=tolerances)
        if not agreement["all_agree"] and not allow_mismatch:
            raise DisagreementError(_disagreement_message(agreement, out_dir))
        stats = measure_interleaved(contenders, batch=shape[0], warmup=warmup, iters=iters)
    sparse_median = stats[SPARSE_NAME].median_ms
    result = {
        "artefact": str(out_dir),
        "input_shape": list(shape),
        "batch": shape[0],
        "threads": {"tvm": threads, "torch": torch.get_num_threads()},
        "warmup": warmup,
        "iters": iters,
        "results": {name: value.as_dict() for name, value in stats.items()},
        "speedup_vs": {name: value.median_ms / sparse_median for name, value in stats.items() if name != SPARSE_NAME},
        "macs_sparse": macs_sparse,
        "macs_dense": macs_dense,
        "agreement": agreement,
        "precision": precision,
        "peers_skipped": peers_skipped,
    }
    if macs_dense:
        result["flop_ideal_speedup"] = macs_dense / macs_sparse
        result["flop_ideal_ms"] = stats[DENSE_NAME].median_ms * macs_sparse / macs_dense
    return result


def format_bench(result: dict) -> str:
    from tabulate import tabulate

    rows = [
        [
            name,
            f"{r['median_ms']:.2f}",
            f"{r['p90_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['throughput_per_s']:.1f}",
            result.get("precision", {}).get(name, "fp32"),
            "1.00x" if name == SPARSE_NAME else f"{result['speedup_vs'][name]:.2f}x",
            _agreement_cell(result, name),
        ]
        for name, r in result["results"].items()
    ]
    if "flop_ideal_ms" in result:
        rows.append(
            [
                "flop_ideal (sparse MACs at our dense speed)",
                f"{result['flop_ideal_ms']:.2f}",
                "",
                "",
                "",
                "",
                f"{result['flop_ideal_speedup']:.2f}x vs subp_dense",
                "",
            ]
        )
    header = (
        f"input {tuple(result['input_shape'])}, "
        f"threads: TVM {result['threads']['tvm']}, torch {result['threads']['torch']}; "
        f"{result['iters']} interleaved runs after {result['warmup']} warm-up runs each\n"
    )
    table = tabulate(
        rows,
        headers=[
            "contender",
            "median ms",
            "p90 ms",
            "p99 ms",
            "images/s",
            "precision",
            "sparse speed-up",
            "max abs diff vs eager",
        ],
        tablefmt="github",
    )
    skipped = result.get("peers_skipped") or {}
    if skipped:
        table += "\n" + "\n".join(f"not run: {name}: {why}" for name, why in skipped.items())
    agreement = result.get("agreement")
    if agreement is None:
        return header + table
    if agreement["all_agree"]:
        footer = f"\nevery contender agrees with PyTorch eager within {agreement['tolerance']:g} x max |logit|"
    else:
        wrong = [name for name, entry in agreement["contenders"].items() if not entry["agrees"]]
        footer = (
            f"\nMISMATCH: {', '.join(wrong)} {'disagrees' if len(wrong) == 1 else 'disagree'} with PyTorch eager "
            f"beyond {agreement['tolerance']:g} x max "
            "|logit| (timed anyway: --allow-mismatch); their timings are not comparable"
        )
    return header + table + footer


def _agreement_cell(result: dict, name: str) -> str:
    entry = result.get("agreement", {}).get("contenders", {}).get(name)
    if entry is None:
        return ""
    diff = "n/a" if entry["max_abs_diff"] is None else f"{entry['max_abs_diff']:.1e}"
    return diff if entry["agrees"] else f"{diff} MISMATCH"
