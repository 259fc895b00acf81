"""What a compile tells an observer while it runs: the stage, its steps when known, its time.

The pipeline prints nothing itself (a library must not write to a caller's terminal); it calls a
:class:`CompileProgress` that the caller supplies. The base class does nothing, so an observer
overrides only what it shows; the CLI's terminal bar is ``subp_fx.tools.progress``. TVM-free.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

# The stages of ``pipeline.compile``, in the order it runs them (see ``pipeline``'s docstring).
STAGES = ("inference_graph", "lower_graph", "check_relax_ops", "relax_passes", "build", "export")

# An int8 build runs one more stage, between ``inference_graph`` and ``lower_graph``.
CALIBRATE_STAGE = "calibrate"


class CompileProgress:
    """Observer of one model's compile. Every stage of :data:`STAGES` gets ``stage_started`` then
    ``stage_finished``, in order; between them a stage whose work is countable (``lower_graph``:
    the graph's nodes) calls ``stage_total`` once and ``advance`` per step. An opaque stage
    (``build``: one ``tvm.compile`` call) calls neither: show its running time instead."""

    def stage_started(self, stage: str, note: str = "") -> None:
        """``stage`` begins; ``note`` says what it works on when known (e.g. "37 kernels")."""

    def stage_total(self, total: int, unit: str) -> None:
        """The stage now running has ``total`` steps of ``unit`` (e.g. 120 "nodes")."""

    def advance(self, steps: int = 1) -> None:
        """``steps`` more steps of the stage now running are done."""

    def stage_finished(self, stage: str, seconds: float, failed: bool = False) -> None:
        """``stage`` ended after ``seconds``; ``failed``: by an exception, which the caller sees next."""


@contextmanager
def stage(progress: CompileProgress, name: str, note: str = "") -> Iterator[None]:
    """Report ``name`` to ``progress`` as started now and finished (or failed) when the block ends."""
    progress.stage_started(name, note)
    started = time.perf_counter()
    try:
        yield
    except BaseException:
        progress.stage_finished(name, time.perf_counter() - started, failed=True)
        raise
    progress.stage_finished(name, time.perf_counter() - started)


__all__ = ["CALIBRATE_STAGE", "STAGES", "CompileProgress", "stage"]
