"""The other inference engines users compare us with (ONNX Runtime, OpenVINO), as benchmark
contenders on the same dense weights, the same input and the same thread count.

They are optional (``pip install 'subp-fx[peers]'``): an engine that is not installed is skipped
with a note, never an error. Each runs the model exported once by ``torch.onnx.export`` and is
configured the way its own documentation says it is fastest on a CPU (see PEER_ENGINES). Every
contender states the precision it really computed in: OpenVINO picks bf16 by itself on CPUs with
avx512_bf16, so its default configuration is a separate, labelled contender, never an fp32 one.

The int8 contenders are what a user who quantises for CPU speed deploys: ONNX Runtime's
``quantize_static`` (QDQ, weights int8 symmetric per output channel, activations uint8 asymmetric
per tensor, MinMax over the caller's calibration batches), quantised once and run by both ONNX
Runtime and OpenVINO. Their precision label is read back from the graph each engine really runs.
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from subp_fx.tools.calibration import model_shaped_batches

ONNX_OPSET = 17


@dataclass(frozen=True)
class PeerRun:
    """One built contender: ``run()`` computes the batch; ``precision`` is what it computed in."""

    run: Callable[[], object]
    precision: str
    engine: str


@dataclass
class PeerContenders:
    """What :func:`peer_contenders` built (name -> run), why anything was left out, and how long
    quantising the int8 model took (pre-processing and calibration included; None when none was made)."""

    runs: dict[str, PeerRun] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    quantize_s: float | None = None


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """``model`` (eval mode, dense weights) as an ONNX file with one input ``input``.

    The TorchScript-based exporter (``dynamo=False``) is the one the peers' own tutorials use and
    gives the plain Conv/Relu/Add graph their optimisers fuse best; its deprecation warning is
    expected and silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (example,),
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["input"],
            output_names=["output"],
        )
    return path


def quantize_qdq(onnx_path: Path, calibration: list[np.ndarray], out_path: Path) -> Path:
    """``onnx_path``'s model quantised to int8 QDQ at ``out_path``, the way ONNX Runtime documents it:
    ``quant_pre_process`` (symbolic shape inference, graph optimisation, ONNX shape inference), then
    ``quantize_static`` with per-channel symmetric int8 weights, per-tensor asymmetric uint8
    activations and MinMax ranges over ``calibration`` (arrays of the model's input shape, as
    :func:`subp_fx.tools.calibration.model_shaped_batches` returns). The pre-processed model is
    written beside ``out_path``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    out_path = Path(out_path)
    prepared = out_path.with_name(out_path.stem + ".preprocessed.onnx")
    quant_pre_process(str(onnx_path), str(prepared))
    reader = _CalibrationReader([{"input": batch} for batch in calibration])
    quantize_static(
        str(prepared),
        str(out_path),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
    )
    return out_path


class _CalibrationReader:
    """ONNX Runtime's CalibrationDataReader protocol (``get_next`` returns one feed, then None);
    its ``__subclasshook__`` accepts any class with ``get_next``, so onnxruntime need not be imported
    to define it."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def _precision_label(layer_precisions: list[str], where: str) -> str:
    """One label for the precisions a model's convolutions and fully-connected layers ran in:
    ``int8`` when all are int8, else the distinct ones joined by ``+`` (``int8+fp32``)."""
    if not layer_precisions:
        raise ValueError(f"{where} holds no convolution or fully-connected layer: cannot tell its precision")
    return "+".join(sorted(set(layer_precisions)))


# ONNX Runtime's node types for convolutions and fully-connected layers after optimisation: the
# quantised kernels (u8 x s8 with int32 accumulation) and the float ones they replace.
_ORT_INT8_LAYERS = {"QLinearConv", "ConvInteger", "QGemm", "QLinearMatMul", "MatMulInteger"}
_ORT_FLOAT_LAYERS = {"Conv", "FusedConv", "NhwcFusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul"}


def _onnxruntime_session(onnx_path: Path, threads: int, optimized_path: Path | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
        options.log_severity_level = 3  # not the warning that the saved graph is CPU-specific: it is only read
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def _onnxruntime_fp32(onnx_path: Path, example: np.ndarray, threads: int) -> PeerRun:
    import onnxruntime as ort

    session = _onnxruntime_session(onnx_path, threads)
    feed = {"input": example}
    return PeerRun(lambda: session.run(None, feed)[0], "fp32", f"onnxruntime {ort.__version__}")


def _onnxruntime_int8(qdq_path: Path, example: np.ndarray, threads: int) -> PeerRun:
    """The QDQ model in ONNX Runtime. Its optimiser fuses each DequantizeLinear -> Conv ->
    QuantizeLinear into one int8 kernel (QLinearConv); the precision is read from the optimised
    graph it saves, so a layer left in float shows up in the label."""
    import onnx
    import onnxruntime as ort

    optimized_path = Path(qdq_path).with_name(Path(qdq_path).stem + ".ort-optimized.onnx")
    session = _onnxruntime_session(qdq_path, threads, optimized_path)
    kinds = [node.op_type for node in onnx.load(str(optimized_path)).graph.node]
    layers = [
        "int8" if kind in _ORT_INT8_LAYERS else "fp32" for kind in kinds if kind in _ORT_INT8_LAYERS | _ORT_FLOAT_LAYERS
    ]
    precision = _precision_label(layers, f"ONNX Runtime's optimised {qdq_path.name}")
    feed = {"input": example}
    return PeerRun(lambda: session.run(None, feed)[0], precision, f"onnxruntime {ort.__version__}")


def _openvino_compile(onnx_path: Path, threads: int, precision_hint: str | None):
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if precision_hint is not None:
        config["INFERENCE_PRECISION_HINT"] = precision_hint
    return core.compile_model(core.read_model(str(onnx_path)), "CPU", config)


def _openvino_run(compiled, example: np.ndarray, precision: str) -> PeerRun:
    import openvino as ov

    request = compiled.create_infer_request()

    def run():
        return request.infer({0: example})[0]

    return PeerRun(run, precision, f"openvino {ov.__version__}")


_OV_PRECISIONS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "u8": "int8", "i8": "int8"}


def _openvino(onnx_path: Path, example: np.ndarray, threads: int, precision_hint: str | None) -> PeerRun:
    compiled = _openvino_compile(onnx_path, threads, precision_hint)
    # what OpenVINO actually chose: an ov.Type whose type name is f32, bf16 or f16
    resolved = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    return _openvino_run(compiled, example, _OV_PRECISIONS.get(resolved, resolved))


def _openvino_int8(qdq_path: Path, example: np.ndarray, threads: int) -> PeerRun:
    """The QDQ model in OpenVINO, whose low-precision transformations turn each quantised conv into an
    int8 kernel (primitive ``brgconv_avx512_I8`` on AVX-512). Layers the QDQ model leaves in float
    run in fp32 (precision hint f32, as in ONNX Runtime), so the column is int8 and nothing else.
    The precision is each conv's and fully-connected layer's runtime precision in the compiled
    model's execution graph."""
    compiled = _openvino_compile(qdq_path, threads, "f32")
    layers = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" in info and info["layerType"].astype(str) in ("Convolution", "FullyConnected"):
            resolved = info["runtimePrecision"].astype(str)
            layers.append(_OV_PRECISIONS.get(resolved, resolved))
    return _openvino_run(compiled, example, _precision_label(layers, f"OpenVINO's compiled {qdq_path.name}"))


@dataclass(frozen=True)
class PeerEngine:
    """A registry entry: the packages it imports, its builder ``build(onnx_path, example, threads)``,
    and whether ``onnx_path`` must be the int8 QDQ model (which needs calibration batches)."""

    requires: tuple[str, ...]
    build: Callable[[Path, np.ndarray, int], PeerRun]
    int8: bool = False


# The names are contender names in `bench --json`.
PEER_ENGINES: dict[str, PeerEngine] = {
    "onnxruntime_fp32": PeerEngine(("onnxruntime",), _onnxruntime_fp32),
    "openvino_fp32": PeerEngine(("openvino",), lambda path, example, threads: _openvino(path, example, threads, "f32")),
    # What a user who does not set a precision gets: bf16 on CPUs with avx512_bf16, f32 elsewhere.
    "openvino_default": PeerEngine(
        ("openvino",), lambda path, example, threads: _openvino(path, example, threads, None)
    ),
    # ONNX Runtime quantises for both (quantize_qdq).
    "onnxruntime_int8": PeerEngine(("onnxruntime",), _onnxruntime_int8, int8=True),
    "openvino_int8": PeerEngine(("onnxruntime", "openvino"), _openvino_int8, int8=True),
}


def peer_contenders(
    model: nn.Module,
    example: torch.Tensor,
    threads: int,
    workdir: Path,
    engines: list[str] | None = None,
    calibration: Iterable[object] | None = None,
) -> PeerContenders:
    """Build the installed peers of ``engines`` (default: all of PEER_ENGINES) on ``model``'s dense
    weights for ``example``'s shape. ``workdir`` receives the ONNX files.

    ``openvino_default`` is kept only when it resolves to another precision than fp32 (then it is
    renamed ``openvino_default_<precision>``): on a CPU without bf16 it would time ``openvino_fp32`` twice.

    The int8 peers run one QDQ model quantised here from the fp32 export (:func:`quantize_qdq`) with
    ``calibration``: any iterable of NCHW float batches (numpy arrays or tensors) with ``example``'s
    C, H and W (see :func:`subp_fx.tools.calibration.model_shaped_batches`, which refuses bad ones
    with a DataError). Without ``calibration`` they are skipped with a note.
    """
    wanted = list(PEER_ENGINES) if engines is None else engines
    unknown = [name for name in wanted if name not in PEER_ENGINES]
    if unknown:
        raise ValueError(f"unknown peer engine(s) {unknown}; valid: {list(PEER_ENGINES)}")
    result = PeerContenders()
    for name in wanted:
        missing = [package for package in PEER_ENGINES[name].requires if importlib.util.find_spec(package) is None]
        if missing:
            verb = "is" if len(missing) == 1 else "are"
            result.skipped[name] = f"{' and '.join(missing)} {verb} not installed (pip install 'subp-fx[peers]')"
        elif PEER_ENGINES[name].int8 and calibration is None:
            result.skipped[name] = "int8 needs calibration batches: none were given"
    wanted = [name for name in wanted if name not in result.skipped]
    if not wanted:
        return result
    if importlib.util.find_spec("onnx") is None:
        for name in wanted:
            result.skipped[name] = "onnx is not installed: no model to give it (pip install 'subp-fx[peers]')"
        return result
    onnx_path = export_onnx(model, example, Path(workdir) / "model.onnx")
    if any(PEER_ENGINES[name].int8 for name in wanted):
        batches = model_shaped_batches(calibration, tuple(example.shape))
        started = time.perf_counter()
        qdq_path = quantize_qdq(onnx_path, batches, Path(workdir) / "model.int8.onnx")
        result.quantize_s = time.perf_counter() - started
    array = np.ascontiguousarray(example.numpy())
    for name in wanted:
        built = PEER_ENGINES[name].build(qdq_path if PEER_ENGINES[name].int8 else onnx_path, array, threads)
        if name == "openvino_default":
            if built.precision == "fp32":
                result.skipped[name] = "OpenVINO's default precision on this CPU is fp32: openvino_fp32 is that run"
                continue
            name = f"openvino_default_{built.precision}"
        result.runs[name] = built
    return result
