"""The compile's progress on a terminal: one tqdm line per stage, then its time.

While a stage runs, its line shows the stage, a bar over its steps when the stage counts them
(``lower_graph``: graph nodes) and the elapsed time; the LLVM build is one opaque call, so its
line shows only a running timer, refreshed by a small thread (``tvm.compile`` releases the GIL).
When the stage ends its line is replaced by ``LABEL: STAGE  12.3 s``. Used by the CLI only when
stderr is a terminal: piped or captured output gets nothing from here.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

from subp_fx.codegen.progress import CompileProgress

# Seconds between redraws of a line whose stage reports no steps (the build's timer).
REFRESH_SECONDS = 0.5

_STEP_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}]"
_TIMER_FORMAT = "{desc} [{elapsed}]"


class TerminalProgress(CompileProgress):
    """Draws the stages of one model's compile on ``stream``, each line prefixed by ``label``."""

    def __init__(self, label: str, stream: TextIO | None = None):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self._bar: tqdm | None = None
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    def stage_started(self, stage: str, note: str = "") -> None:
        self._close()
        description = f"{self.label}: {stage}" + (f" ({note})" if note else "")
        self._bar = tqdm(desc=description, file=self.stream, leave=False, bar_format=_TIMER_FORMAT, dynamic_ncols=True)
        self._stop.clear()
        self._ticker = threading.Thread(target=self._tick, args=(self._bar,), daemon=True)
        self._ticker.start()

    def stage_total(self, total: int, unit: str) -> None:
        if self._bar is not None:
            self._bar.bar_format = _STEP_FORMAT
            self._bar.unit = unit
            self._bar.reset(total=total)

    def advance(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def stage_finished(self, stage: str, seconds: float, failed: bool = False) -> None:
        self._close()
        outcome = "failed after " if failed else ""
        tqdm.write(f"{self.label + ': ' + stage:<36} {outcome}{seconds:6.1f} s", file=self.stream)

    def _tick(self, bar: tqdm) -> None:
        while not self._stop.wait(REFRESH_SECONDS):
            bar.refresh()

    def _close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def terminal_progress(quiet: bool = False, stream: TextIO | None = None) -> Callable[[str], CompileProgress] | None:
    """A maker of one :class:`TerminalProgress` per model compiled (label -> observer) when
    ``stream`` (default stderr) is a terminal and not ``quiet``; None otherwise: a log file or a
    pipe gets the report alone, as before."""
    stream = stream if stream is not None else sys.stderr
    if quiet or not stream.isatty():
        return None
    return lambda label: TerminalProgress(label, stream)


__all__ = ["REFRESH_SECONDS", "TerminalProgress", "terminal_progress"]
