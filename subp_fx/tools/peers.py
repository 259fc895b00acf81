"""The other inference engines users compare us with (ONNX Runtime, OpenVINO), as benchmark
contenders on the same dense weights, the same input and the same thread count.

They are optional (``pip install 'subp-fx[peers]'``): an engine that is not installed is skipped
with a note, never an error. Each runs the model exported once by ``torch.onnx.export`` and is
configured the way its own documentation says it is fastest on a CPU (see PEER_ENGINES). Every
contender states the precision it really computed in: OpenVINO picks bf16 by itself on CPUs with
avx512_bf16, so its default configuration is a separate, labelled contender, never an fp32 one.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

ONNX_OPSET = 17


@dataclass(frozen=True)
class PeerRun:
    """One built contender: ``run()`` computes the batch; ``precision`` is what it computed in."""

    run: Callable[[], object]
    precision: str
    engine: str


@dataclass
class PeerContenders:
    """What :func:`peer_contenders` built (name -> run) and why anything was left out."""

    runs: dict[str, PeerRun] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


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


def _onnxruntime_fp32(onnx_path: Path, example: np.ndarray, threads: int) -> PeerRun:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    feed = {"input": example}
    return PeerRun(lambda: session.run(None, feed)[0], "fp32", f"onnxruntime {ort.__version__}")


def _openvino(onnx_path: Path, example: np.ndarray, threads: int, precision_hint: str | None) -> PeerRun:
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if precision_hint is not None:
        config["INFERENCE_PRECISION_HINT"] = precision_hint
    compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU", config)
    request = compiled.create_infer_request()
    # what OpenVINO actually chose: an ov.Type whose type name is f32, bf16 or f16
    resolved = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    precision = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(resolved, resolved)

    def run():
        return request.infer({0: example})[0]

    return PeerRun(run, precision, f"openvino {ov.__version__}")


# name -> (the import that must exist, builder). The names are contender names in `bench --json`.
PEER_ENGINES: dict[str, tuple[str, Callable[[Path, np.ndarray, int], PeerRun]]] = {
    "onnxruntime_fp32": ("onnxruntime", _onnxruntime_fp32),
    "openvino_fp32": ("openvino", lambda path, example, threads: _openvino(path, example, threads, "f32")),
    # What a user who does not set a precision gets: bf16 on CPUs with avx512_bf16, f32 elsewhere.
    "openvino_default": ("openvino", lambda path, example, threads: _openvino(path, example, threads, None)),
}


def peer_contenders(
    model: nn.Module, example: torch.Tensor, threads: int, workdir: Path, engines: list[str] | None = None
) -> PeerContenders:
    """Build the installed peers of ``engines`` (default: all of PEER_ENGINES) on ``model``'s dense
    weights for ``example``'s shape. ``workdir`` receives the ONNX file.

    ``openvino_default`` is kept only when it resolves to another precision than fp32 (then it is
    renamed ``openvino_default_<precision>``): on a CPU without bf16 it would time ``openvino_fp32`` twice.
    """
    wanted = list(PEER_ENGINES) if engines is None else engines
    unknown = [name for name in wanted if name not in PEER_ENGINES]
    if unknown:
        raise ValueError(f"unknown peer engine(s) {unknown}; valid: {list(PEER_ENGINES)}")
    result = PeerContenders()
    installed = {name for name in wanted if importlib.util.find_spec(PEER_ENGINES[name][0]) is not None}
    for name in wanted:
        if name not in installed:
            result.skipped[name] = f"{PEER_ENGINES[name][0]} is not installed (pip install 'subp-fx[peers]')"
    if not installed:
        return result
    if importlib.util.find_spec("onnx") is None:
        for name in installed:
            result.skipped[name] = "onnx is not installed: no model to give it (pip install 'subp-fx[peers]')"
        return result
    onnx_path = export_onnx(model, example, Path(workdir) / "model.onnx")
    array = np.ascontiguousarray(example.numpy())
    for name in wanted:
        if name not in installed:
            continue
        built = PEER_ENGINES[name][1](onnx_path, array, threads)
        if name == "openvino_default":
            if built.precision == "fp32":
                result.skipped[name] = "OpenVINO's default precision on this CPU is fp32: openvino_fp32 is that run"
                continue
            name = f"openvino_default_{built.precision}"
        result.runs[name] = built
    return result
