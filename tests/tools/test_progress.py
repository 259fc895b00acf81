"""The compile's progress on a terminal (tools.progress), and silence everywhere else."""

from __future__ import annotations

import io
import time

import pytest

from subp_fx.codegen.progress import STAGES
from subp_fx.tools import progress
from subp_fx.tools.progress import TerminalProgress, terminal_progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _lines(stream: io.StringIO) -> list[str]:
    """What a terminal would show last on each line: the text after the final carriage return."""
    return [line.rsplit("\r", 1)[-1].strip() for line in stream.getvalue().split("\n") if line.strip()]


def test_progress_only_on_a_terminal_and_not_when_quiet(capsys):
    assert terminal_progress() is None  # pytest's captured stderr is no terminal
    assert terminal_progress(stream=io.StringIO()) is None
    assert terminal_progress(quiet=True, stream=FakeTerminal()) is None
    make = terminal_progress(stream=FakeTerminal())
    assert isinstance(make("sparse model"), TerminalProgress)


def test_each_stage_ends_as_one_line_with_its_seconds(monkeypatch):
    monkeypatch.setattr(progress, "REFRESH_SECONDS", 0.02)
    stream = FakeTerminal()
    observer = TerminalProgress("sparse model", stream)
    observer.stage_started("lower_graph")
    observer.stage_total(4, "nodes")
    for _ in range(4):
        observer.advance()
    time.sleep(0.1)  # tqdm throttles its redraws; the timer thread draws the last count
    assert "4/4 nodes" in stream.getvalue()  # the bar over the graph's nodes
    observer.stage_finished("lower_graph", 1.25)
    observer.stage_started("build", note="7 kernels")
    before = stream.getvalue().count("build (7 kernels)")
    time.sleep(0.3)  # an opaque stage: the timer thread redraws its line meanwhile
    assert stream.getvalue().count("build (7 kernels)") > before + 2
    observer.stage_finished("build", 0.3)
    observer.stage_started("export")
    observer.stage_finished("export", 2.0, failed=True)
    finished = [line for line in _lines(stream) if line.endswith(" s")]
    assert [line.split()[2] for line in finished] == ["lower_graph", "build", "export"]
    assert finished[0].endswith("1.2 s") and finished[2].endswith("failed after    2.0 s")
    assert all(line.startswith("sparse model: ") for line in finished)


@pytest.mark.parametrize("quiet", [False, True])
def test_compile_on_a_terminal_shows_the_stages_of_both_models(quiet, tmp_path, capsys, monkeypatch):
    from subp_fx.cli import main
    from tests.conftest import small_recipe, write_recipe

    recipe = write_recipe(tmp_path / "r.yaml", small_recipe(tmp_path / "run"))
    argv = ["compile", str(recipe), "-o", str(tmp_path / "out"), "--threads", "1"]
    if quiet:  # nothing is compiled: --quiet must only silence, so refuse the work right after
        monkeypatch.setattr("subp_fx.tools.artifact.load_compile_source", _stop)
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    status = main(argv + (["--quiet"] if quiet else []))
    printed = capsys.readouterr().out
    if quiet:
        assert status == 2 and not [stage for stage in STAGES if stage in terminal.getvalue()]
        return
    assert status == 0 and "wrote" in printed and not [stage for stage in STAGES if stage in printed]
    finished = [line for line in _lines(terminal) if line.endswith(" s")]
    assert [line.split(": ")[1].split()[0] for line in finished] == list(STAGES) * 2
    assert finished[0].startswith("sparse model: ") and finished[-1].startswith("dense baseline: ")


def _stop(*args, **kwargs):
    from subp_fx.errors import SubpError

    raise SubpError("stopped before compiling")
