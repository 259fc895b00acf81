"""The ``manifest.json`` of an exported compiled model: what ``model.so`` expects and contains.

Written next to ``model.so`` by ``CompiledModel.export`` and read back by ``load_compiled``;
also useful to a human deciding whether an artefact fits a machine. Fields:

- ``format`` / ``format_version``: ``"subp-fx-compiled"`` / 1;
- ``library``, ``entry``: the shared library's file name and the VM function to call;
- ``input_shape``, ``input_layout`` ("NCHW"), ``activation_layout`` ("NHWC", inside the model),
  ``output_shape``, ``dtype`` ("float32": the input and output; inside, see ``precision``);
- ``precision``: what the convs compute in: ``"fp32"``, or ``"int8"`` (the eligible convs run on
  int8 kernels; ``calibration`` then says which data set their activation ranges);
- ``target``: the TVM target as a JSON object (``tvm.target.Target(target)`` rebuilds it);
- ``threads``: the thread count the model was compiled (and tiles chosen) for;
- ``kernels``: the per-layer kernel table (``KernelEntry.to_json``);
- ``graph_passes``: what the graph passes did before lowering: functional batch norms / convs /
  linears made module calls and those left with the reason, batch norms folded, those left unfolded with
  the reason (they run as a separate per-channel kernel), SUBP convs converted, shape nodes folded
  to constants, channel shuffles fused;
- ``tvm_version``, ``subp_fx_version``, ``compile_seconds``.

Pure Python (json), no TVM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from subp_fx.codegen.runtime.kernel_table import KernelEntry, format_kernel_table
from subp_fx.errors import ArtifactError

FORMAT = "subp-fx-compiled"
FORMAT_VERSION = 1
LIBRARY_FILE = "model.so"
MANIFEST_FILE = "manifest.json"
ENTRY_FUNCTION = "main"
# The function a batch compiled in sub-batches runs once per sub-batch (``lowering.sub_batches``).
SUB_BATCH_FUNCTION = "sub_batch"


@dataclass(frozen=True)
class GraphPassReport:
    """How the model was captured (``passes.capture``: method and why) and what
    ``fold_static_shapes``, ``fold_constants``, ``drop_identities``, ``modularize_functional``, ``fold_batchnorm``,
    ``fold_layer_scale``, ``fold_zero_pads``, ``convert`` and ``fuse_channel_shuffles`` did to
    it before it was lowered."""

    folded_batchnorms: int = 0
    unfolded_batchnorms: dict[str, str] = field(default_factory=dict)
    converted_convs: int = 0
    capture: str = "symbolic_trace"
    capture_reason: str = ""
    folded_pads: int = 0
    folded_shape_nodes: int = 0
    fused_channel_shuffles: int = 0
    modularized_calls: int = 0
    functional_left: dict[str, str] = field(default_factory=dict)
    folded_constants: int = 0
    folded_layer_scales: int = 0
    dropped_identities: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "folded_batchnorms": self.folded_batchnorms,
            "unfolded_batchnorms": dict(self.unfolded_batchnorms),
            "converted_convs": self.converted_convs,
            "capture": self.capture,
            "capture_reason": self.capture_reason,
            "folded_pads": self.folded_pads,
            "folded_shape_nodes": self.folded_shape_nodes,
            "fused_channel_shuffles": self.fused_channel_shuffles,
            "modularized_calls": self.modularized_calls,
            "functional_left": dict(self.functional_left),
            "folded_constants": self.folded_constants,
            "folded_layer_scales": self.folded_layer_scales,
            "dropped_identities": self.dropped_identities,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GraphPassReport:
        return cls(
            folded_batchnorms=int(data.get("folded_batchnorms", 0)),
            unfolded_batchnorms={str(name): str(why) for name, why in data.get("unfolded_batchnorms", {}).items()},
            converted_convs=int(data.get("converted_convs", 0)),
            capture=str(data.get("capture", "symbolic_trace")),
            capture_reason=str(data.get("capture_reason", "")),
            folded_pads=int(data.get("folded_pads", 0)),
            folded_shape_nodes=int(data.get("folded_shape_nodes", 0)),
            fused_channel_shuffles=int(data.get("fused_channel_shuffles", 0)),
            modularized_calls=int(data.get("modularized_calls", 0)),
            functional_left={str(name): str(why) for name, why in data.get("functional_left", {}).items()},
            folded_constants=int(data.get("folded_constants", 0)),
            folded_layer_scales=int(data.get("folded_layer_scales", 0)),
            dropped_identities=int(data.get("dropped_identities", 0)),
        )

    def lines(self) -> list[str]:
        text = [
            f"capture: {self.capture}" + (f" ({self.capture_reason})" if self.capture_reason else ""),
            f"graph passes: {self.folded_shape_nodes} shape node(s) folded to constants, "
            f"{self.folded_constants} tensor(s) computed from constants alone evaluated once, "
            f"{self.dropped_identities} identity / eval-mode dropout call(s) removed, "
            f"{self.modularized_calls} functional batch norm / conv / linear call(s) made module calls, "
            f"{self.folded_batchnorms} batch norm(s) folded into their convs, "
            f"{self.folded_layer_scales} constant per-channel multiply(ies) folded into their layers, "
            f"{self.folded_pads} zero pad(s) folded into conv padding, "
            f"{self.converted_convs} SUBP conv(s) converted to 1xN blocks, "
            f"{self.fused_channel_shuffles} channel shuffle(s) fused",
        ]
        if self.functional_left:
            text.append(f"{len(self.functional_left)} functional batch norm / conv / linear call(s) left as they are:")
            text += [f"  {name}: {why}" for name, why in self.functional_left.items()]
        if self.unfolded_batchnorms:
            text.append(
                f"{len(self.unfolded_batchnorms)} batch norm(s) left unfolded (each runs as its own "
                "per-channel kernel):"
            )
            text += [f"  {name}: {why}" for name, why in self.unfolded_batchnorms.items()]
        return text


def describe_calibration(calibration: dict[str, Any]) -> str:
    """e.g. "128 images in 8 batch(es) from fashion-mnist" for a manifest's ``calibration``."""
    images = calibration.get("calibrated_images", "?")
    images = f"{images} images in {calibration.get('calibrated_batches', '?')} batch(es)"
    source = calibration.get("source")
    if source is None:
        return images + " given by the caller"
    return images + f" from {source}" + (f" {calibration['root']}" if calibration.get("root") else "")


@dataclass(frozen=True)
class Manifest:
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    target: dict[str, Any]
    threads: int
    kernels: list[KernelEntry] = field(default_factory=list)
    graph_passes: GraphPassReport = field(default_factory=GraphPassReport)
    tvm_version: str = ""
    subp_fx_version: str = ""
    compile_seconds: float = 0.0
    input_layout: str = "NCHW"
    activation_layout: str = "NHWC"
    dtype: str = "float32"
    precision: str = "fp32"
    calibration: dict[str, Any] | None = None
    library: str = LIBRARY_FILE
    entry: str = ENTRY_FUNCTION

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "library": self.library,
            "entry": self.entry,
            "input_shape": list(self.input_shape),
            "input_layout": self.input_layout,
            "activation_layout": self.activation_layout,
            "output_shape": list(self.output_shape),
            "dtype": self.dtype,
            "precision": self.precision,
            "calibration": self.calibration,
            "target": self.target,
            "threads": self.threads,
            "kernels": [entry.to_json() for entry in self.kernels],
            "graph_passes": self.graph_passes.to_json(),
            "tvm_version": self.tvm_version,
            "subp_fx_version": self.subp_fx_version,
            "compile_seconds": round(self.compile_seconds, 3),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str) -> Manifest:
        """Read a manifest; ``source`` names the file in errors."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ArtifactError(f"{source} is not a subp-fx compiled-model manifest (its 'format' is not {FORMAT!r})")
        if data.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(
                f"{source} has format_version {data.get('format_version')!r}; "
                f"this subp-fx reads version {FORMAT_VERSION}: "
                "recompile the model with this version"
            )
        try:
            return cls(
                input_shape=tuple(int(size) for size in data["input_shape"]),
                output_shape=tuple(int(size) for size in data["output_shape"]),
                target=dict(data["target"]),
                threads=int(data["threads"]),
                kernels=[KernelEntry.from_json(entry) for entry in data.get("kernels", [])],
                graph_passes=GraphPassReport.from_json(data.get("graph_passes", {})),
                tvm_version=str(data.get("tvm_version", "")),
                subp_fx_version=str(data.get("subp_fx_version", "")),
                compile_seconds=float(data.get("compile_seconds", 0.0)),
                input_layout=str(data.get("input_layout", "NCHW")),
                activation_layout=str(data.get("activation_layout", "NHWC")),
                dtype=str(data.get("dtype", "float32")),
                precision=str(data.get("precision", "fp32")),
                calibration=dict(data["calibration"]) if data.get("calibration") else None,
                library=str(data.get("library", LIBRARY_FILE)),
                entry=str(data.get("entry", ENTRY_FUNCTION)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ArtifactError(f"{source} is malformed: {type(error).__name__}: {error}") from None

    @property
    def sub_batches(self) -> int:
        """How many sub-batches one call runs the layers on (1: the whole batch at once)."""
        return max((entry.calls for entry in self.kernels), default=1)

    def report(self) -> str:
        """The compile report: the precision (and the sub-batches, if any), the kernel table, then
        what the graph passes did."""
        calibration = "" if not self.calibration else f" (calibrated on {describe_calibration(self.calibration)})"
        lines = [f"precision: {self.precision}{calibration}"]
        if self.sub_batches > 1:
            batch = self.input_shape[0]
            lines.append(
                f"batch {batch} runs in {self.sub_batches} sub-batches of {batch // self.sub_batches} "
                "(each layer's activations stay cached; MACs below are the whole batch's)"
            )
        return "\n".join([*lines, format_kernel_table(self.kernels), *self.graph_passes.lines()])

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            data = json.loads(path.read_text())
        except OSError as error:
            raise ArtifactError(f"cannot read {path}: {error.strerror}") from None
        except json.JSONDecodeError as error:
            raise ArtifactError(f"{path} is not valid JSON ({error.msg} at line {error.lineno})") from None
        return cls.from_json(data, str(path))
