"""A compiled model: running it, exporting it and loading it back.

A :class:`CompiledModel` (built by ``codegen.pipeline.compile`` or :func:`load_compiled`) is
called on an NCHW numpy array or tensor of the shape it was compiled for and returns numpy logits.

``CompiledModel.export(dir)`` writes ``dir/model.so`` (``export_library``) and
``dir/manifest.json`` (``manifest``) into a temporary sibling directory and renames it into place,
so a crash never leaves a half-written artefact; an existing ``dir`` is refused unless
``force=True``. ``load_compiled(dir)`` loads the library into a Relax VM; loading and running use
only numpy and the TVM runtime (torch is imported by ``compile`` alone, lazily).

Calls from several Python threads at once are safe: each thread runs its own Relax VM over the
one loaded library and copies its input into its own tensor.

Threads: a model runs its kernels on ``threads`` TVM runtime threads (default: this machine's
physical cores), applied with ``threads.set_num_threads`` before every call from a thread whose
pool differs (the pool is per calling thread). In a process that also runs PyTorch, each call
first puts torch's spinning OpenMP threads to sleep (``torch_threads``): they would otherwise take
the cores the model runs on (1.3x slower, measured); and a call that starts on a core TVM
pinned a worker to moves the calling thread off it for its duration (``caller_affinity``: left
there, ResNet-18 ran 1.7x slower, measured).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.target import Target

from subp_fx.codegen.runtime.caller_affinity import caller_pinning
from subp_fx.codegen.runtime.kernel_table import KernelEntry
from subp_fx.codegen.runtime.manifest import MANIFEST_FILE, Manifest
from subp_fx.codegen.runtime.torch_threads import quiet_torch_threads
from subp_fx.codegen.target import missing_host_features
from subp_fx.codegen.threads import get_num_threads, set_num_threads, thread_pool_capacity
from subp_fx.errors import ArtifactError, CompiledInputError
from subp_fx.fileio import staged_directory


def as_float32_array(x: Any) -> np.ndarray:
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
        self._module = tvm.runtime.load_module(str(library))
        self._vm = relax.VirtualMachine(self._module, tvm.cpu())
        self._main = self._vm[manifest.entry]
        self._owner = threading.get_ident()
        self._pool_size: int | None = None
        self._per_thread = threading.local()

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
        """The compile report: the per-layer kernel table (kind, K/C_in, MACs, tile, epilogue, why
        dense) and what the graph passes left (batch norms not folded, and why)."""
        return self.manifest.report()

    def _apply_threads(self) -> None:
        if get_num_threads() != self.threads:
            set_num_threads(self.threads)

    def _entry(self):
        """The entry function of this thread's VM. A Relax VM is not safe to call from two threads
        at once (its register file is shared: concurrent calls failed with "reg <
        frame->register_file.size()"), so every thread but the one that loaded the model gets
        a VM of its own over the same loaded library."""
        if threading.get_ident() == self._owner:
            return self._main
        entry = getattr(self._per_thread, "entry", None)
        if entry is None:
            vm = relax.VirtualMachine(self._module, tvm.cpu())
            entry = self._per_thread.entry = vm[self.manifest.entry]
            self._per_thread.vm = vm
        return entry

    def _input_tensor(self, array: np.ndarray) -> tvm.runtime.Tensor:
        """``array`` copied into this thread's input tensor, allocated on its first call: a new
        tensor each call costs an allocation of the input's size (602 KB at 224 px) and its page
        faults (measured: 60 us a call against 35 for the copy alone, Zen 4). Per thread, so that
        threads calling one model at once never share it; the output is copied out before the
        call returns, so nothing the caller keeps refers to it."""
        tensor = getattr(self._per_thread, "tensor", None)
        if tensor is None:
            tensor = self._per_thread.tensor = tvm.runtime.empty(self.input_shape, "float32", tvm.cpu())
        tensor.copyfrom(array)
        return tensor

    def pin_caller(self) -> frozenset[int] | None:
        """Move the calling thread off the cores of the TVM workers this model's kernels use when
        it is on one; returns what to hand ``caller_pinning.restore`` after the run
        (``caller_affinity``)."""
        if self._pool_size is None:
            self._pool_size = thread_pool_capacity()
        return caller_pinning.pin(self.threads, self._pool_size)

    def __call__(self, x: Any) -> np.ndarray:
        """Logits (or the model's output) for ``x``, an NCHW numpy array or torch tensor."""
        array = as_float32_array(x)
        if array.shape != self.input_shape:
            raise CompiledInputError(
                f"input has shape {array.shape}; "
                f"this model was compiled for {self.manifest.input_layout} input of shape "
                f"{self.input_shape} (compile again with an example of the shape you need)"
            )
        self._apply_threads()
        quiet_torch_threads()  # torch's OpenMP threads would spin on our cores (torch_threads)
        previous_cpus = self.pin_caller()
        try:
            return self._entry()(self._input_tensor(array)).numpy()
        finally:
            caller_pinning.restore(previous_cpus)
            quiet_torch_threads.after_run()

    def run_tvm(self, x: tvm.runtime.Tensor) -> tvm.runtime.Tensor:
        """One call on a TVM tensor of the input shape, output left as a TVM tensor (for timing)."""
        self._apply_threads()
        previous_cpus = self.pin_caller()
        try:
            return self._entry()(x)
        finally:
            caller_pinning.restore(previous_cpus)

    def export(self, directory: str | os.PathLike, force: bool = False) -> Path:
        """Write ``model.so`` and ``manifest.json`` into ``directory``, atomically.

        Refuses (:class:`ArtifactError`) an existing ``directory`` unless ``force``; with
        ``force`` the old directory is replaced only once the new one is complete.
        """
        directory = Path(directory)
        if not self._library.is_file():
            raise ArtifactError(
                f"{self._library}, the library this model runs from, no longer exists; nothing to export"
            )
        if directory.exists() and not force:
            raise ArtifactError(
                f"{directory} already exists; refusing to overwrite it. "
                "Choose a new directory, remove it, or pass force=True"
            )
        if directory.exists() and not directory.is_dir():
            raise ArtifactError(f"{directory} exists and is not a directory; a compiled model is a directory")
        with staged_directory(directory) as staging:
            shutil.copyfile(self._library, staging / self.manifest.library)
            self.manifest.write(staging / MANIFEST_FILE)
        return directory


def load_compiled(directory: str | os.PathLike, threads: int | None = None) -> CompiledModel:
    """Load a model written by ``CompiledModel.export`` (needs numpy and the TVM runtime only).

    ``threads`` overrides the manifest's thread count; by default the manifest's count is used,
    capped at what this machine's TVM pool holds. Raises :class:`ArtifactError` for a missing
    directory, a missing or malformed manifest, a missing library, or one compiled for
    instructions this CPU lacks (e.g. a bf16 build, avx512_bf16, loaded on a Zen 3).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(
            f"{directory} is not a directory; load_compiled expects a directory written by CompiledModel.export"
        )
    manifest = Manifest.read(directory / MANIFEST_FILE)
    library = directory / manifest.library
    if not library.is_file():
        raise ArtifactError(f"{library} is missing; the directory holds {sorted(p.name for p in directory.iterdir())}")
    missing = missing_host_features(Target(manifest.target))
    if missing:
        cpu = manifest.target.get("mcpu", "?")
        raise ArtifactError(
            f"{directory} was compiled for -mcpu={cpu}, whose {', '.join(missing)} this CPU lacks: its kernels "
            "would stop on an illegal instruction here. Compile it again on this machine "
            "(subp-fx compile ... --target llvm -mcpu=native)"
        )
    if threads is None:
        threads = min(manifest.threads, thread_pool_capacity())
    else:
        set_num_threads(threads)
    return CompiledModel(library, dataclasses.replace(manifest, threads=threads))


__all__ = ["CompiledModel", "as_float32_array", "load_compiled"]
