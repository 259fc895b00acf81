"""Compiling a whole model to a TVM VM program, running it, exporting it and loading it back.

``compile(model, example_input)`` takes a model as trained (SUBP convs with final uniform masks,
batch norms) or already converted, runs ``fold_batchnorm`` and ``convert`` on a copy, lowers it
(``lower.lower_graph``), builds it with ``tvm.compile`` and returns a :class:`CompiledModel`:
call it on an NCHW numpy array or tensor of the example's shape, get numpy logits.

``CompiledModel.export(dir)`` writes ``dir/model.so`` (``export_library``) and
``dir/manifest.json`` (``manifest``) into a temporary sibling directory and renames it into place,
so a crash never leaves a half-written artefact; an existing ``dir`` is refused unless
``force=True``. ``load_compiled(dir)`` loads the library into a Relax VM; loading and running use
only numpy and the TVM runtime (torch is imported by ``compile`` alone, lazily).

Threads: a model runs its kernels on ``threads`` TVM runtime threads (default: this machine's
physical cores), applied with ``threads.set_num_threads`` before every call from a thread whose
pool differs (the pool is per calling thread).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.target import Target

from subp_fx.codegen.kernel_table import KernelEntry, format_kernel_table
from subp_fx.codegen.kernels.tuning_log import TuningLog
from subp_fx.codegen.manifest import LIBRARY_FILE, MANIFEST_FILE, Manifest
from subp_fx.codegen.threads import get_num_threads, physical_core_count, set_num_threads, thread_pool_capacity
from subp_fx.errors import ArtifactError, CompiledInputError
from subp_fx.fileio import publish_directory

DEFAULT_TARGET = "llvm -mcpu=native"


def _as_numpy(x: Any) -> np.ndarray:
    """A float32 C-contiguous array from a numpy array or a torch tensor (without importing torch)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


class CompiledModel:
    """A model compiled by subp-fx: callable on NCHW float32 input of one fixed shape.

    Build one with :func:`compile` or :func:`load_compiled`; either way it runs the VM of its
    exported library file (``library``), which ``export`` copies. ``manifest`` describes it
    (shapes, target, threads, per-layer kernel table).
    """

    def __init__(self, library: Path, manifest: Manifest):
        self.manifest = manifest
        self._library = library
        self._vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
        self._main = self._vm[manifest.entry]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.manifest.input_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.manifest.output_shape

    @property
    def threads(self) -> int:
        return self.manifest.threads

    @property
    def kernel_table(self) -> list[KernelEntry]:
        return self.manifest.kernels

    @property
    def target(self) -> Target:
        return Target(self.manifest.target)

    def report(self) -> str:
        """The per-layer kernel table as text (kind, K/C_in, MACs, tile, epilogue, why dense)."""
        return format_kernel_table(self.manifest.kernels)

    def _apply_threads(self) -> None:
        if get_num_threads() != self.threads:
            set_num_threads(self.threads)

    def __call__(self, x: Any) -> np.ndarray:
        """Logits (or the model's output) for ``x``, an NCHW numpy array or torch tensor."""
        array = _as_numpy(x)
        if array.shape != self.input_shape:
            raise CompiledInputError(
                f"input has shape {array.shape}; this model was compiled for {self.manifest.input_layout} input of shape "
                f"{self.input_shape} (compile again with an example of the shape you need)"
            )
        self._apply_threads()
        return self._main(tvm.runtime.tensor(array)).numpy()

    def run_tvm(self, x: tvm.runtime.Tensor) -> tvm.runtime.Tensor:
        """One call on a TVM tensor of the input shape, output left as a TVM tensor (for timing)."""
        self._apply_threads()
        return self._main(x)

    def export(self, directory: str | os.PathLike, force: bool = False) -> Path:
        """Write ``model.so`` and ``manifest.json`` into ``directory``, atomically.

        Refuses (:class:`ArtifactError`) an existing ``directory`` unless ``force``; with
        ``force`` the old directory is replaced only once the new one is complete.
        """
        directory = Path(directory)
        if not self._library.is_file():
            raise ArtifactError(f"{self._library}, the library this model runs from, no longer exists; nothing to export")
        if directory.exists() and not force:
            raise ArtifactError(
                f"{directory} already exists; refusing to overwrite it. Choose a new directory, remove it, or pass force=True"
            )
        if directory.exists() and not directory.is_dir():
            raise ArtifactError(f"{directory} exists and is not a directory; a compiled model is a directory")
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".partial", dir=directory.parent))
        try:
            shutil.copyfile(self._library, staging / self.manifest.library)
            self.manifest.write(staging / MANIFEST_FILE)
            publish_directory(staging, directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return directory


def _example_shape(example_input: Any) -> tuple[int, ...]:
    """The input shape from an example array / tensor, or a shape given as a tuple of ints."""
    if isinstance(example_input, (tuple, list)) and all(isinstance(size, int) for size in example_input):
        return tuple(example_input)
    return tuple(int(size) for size in _as_numpy(example_input).shape)


def _inference_graph(model):
    """``model`` with batch norms folded and SUBP convs converted (on copies; the model is untouched)."""
    from subp_fx.passes.convert import convert
    from subp_fx.passes.fold_batchnorm import fold_batchnorm

    return convert(fold_batchnorm(model))


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
    ``tuning_log``: a JSON file of such timings (``kernels.tuning_log``), read first and written
    back with the shapes this compile timed; implies ``tune_tiles``.
    Refuses: whatever ``fold_batchnorm`` / ``convert`` refuse (training-mode batch norm,
    non-uniform masks), and every op the lowering cannot handle, listed in one
    ``UnsupportedOpError``.
    """
    from subp_fx.codegen.lower import lower_graph

    shape = _example_shape(example_input)
    threads = min(physical_core_count(), thread_pool_capacity()) if threads is None else threads
    set_num_threads(threads)  # validates; tile timing (tune_tiles) then runs with the model's threads
    started = time.perf_counter()
    log = TuningLog.load(tuning_log) if tuning_log is not None else None
    lowered = lower_graph(_inference_graph(model), shape, target, tune_tiles=tune_tiles or log is not None, tuning_log=log)
    if log is not None and log.added:
        log.save()
    executable = tvm.compile(lowered.module, target=lowered.target)
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
        tvm_version=tvm.__version__,
        subp_fx_version=_subp_fx_version(),
        compile_seconds=time.perf_counter() - started,
    )
    compiled = CompiledModel(library, manifest)
    weakref.finalize(compiled, shutil.rmtree, staging, True)
    return compiled


def load_compiled(directory: str | os.PathLike, threads: int | None = None) -> CompiledModel:
    """Load a model written by ``CompiledModel.export`` (needs numpy and the TVM runtime only).

    ``threads`` overrides the manifest's thread count; by default the manifest's count is used,
    capped at what this machine's TVM pool holds. Raises :class:`ArtifactError` for a missing
    directory, a missing or malformed manifest, or a missing library.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"{directory} is not a directory; load_compiled expects a directory written by CompiledModel.export")
    manifest = Manifest.read(directory / MANIFEST_FILE)
    library = directory / manifest.library
    if not library.is_file():
        raise ArtifactError(f"{library} is missing; the directory holds {sorted(p.name for p in directory.iterdir())}")
    if threads is None:
        threads = min(manifest.threads, thread_pool_capacity())
    else:
        set_num_threads(threads)
    return CompiledModel(library, dataclasses.replace(manifest, threads=threads))


__all__ = ["CompiledModel", "DEFAULT_TARGET", "compile", "load_compiled"]
