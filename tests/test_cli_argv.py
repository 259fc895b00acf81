"""`--target` as TVM users type it (cli_argv), and targets refused before any work.

Nothing here compiles a model: the parsing tests stop at argparse, and the refusals must happen
before the model is even loaded (the loading, tracing and lowering fail the test if they start).
"""

from __future__ import annotations

import platform

import pytest

from subp_fx.cli import main, parse_args
from subp_fx.cli_argv import join_target_options
from tests.conftest import small_recipe, write_recipe

SHORT = ("-o", "-h", "-q")
# A triple LLVM knows, of another architecture than this machine's.
FOREIGN_TRIPLE = "x86_64-linux-gnu" if platform.machine() in ("aarch64", "arm64") else "aarch64-linux-gnu"


@pytest.mark.parametrize(
    "argv, expected",
    [
        # unquoted, as on the design card
        (
            ["compile", "m.pt", "--target", "llvm", "-mcpu=native", "-num-cores=2", "--batch", "2"],
            ["compile", "m.pt", "--target=llvm -mcpu=native -num-cores=2", "--batch", "2"],
        ),
        # quoted: one token already
        (["--target", "llvm -mcpu=znver3", "-o", "x"], ["--target=llvm -mcpu=znver3", "-o", "x"]),
        # = form, alone and followed by options
        (["--target=llvm"], ["--target=llvm"]),
        (["--target=llvm", "-mcpu=native", "m.pt"], ["--target=llvm -mcpu=native", "m.pt"]),
        # TVM's bare booleans and list values
        (
            ["--target", "llvm", "-fast-math", "-mattr=+avx2,+fma", "-keys=cpu", "-opt-level=3"],
            ["--target=llvm -fast-math -mattr=+avx2,+fma -keys=cpu -opt-level=3"],
        ),
        # our own options end the target: short ones (alone or with the value attached) and long ones
        (["--target", "llvm", "-o", "out"], ["--target=llvm", "-o", "out"]),
        (["--target", "llvm", "-oout"], ["--target=llvm", "-oout"]),
        (["--target", "llvm", "-q", "-h"], ["--target=llvm", "-q", "-h"]),
        (["--target", "llvm", "--bogus", "-mcpu=x"], ["--target=llvm", "--bogus", "-mcpu=x"]),
        # a forgotten kind still reaches the target parser, which says what is wrong
        (["--target", "-mcpu=native"], ["--target=-mcpu=native"]),
        # no value: left for argparse to report
        (["--target"], ["--target"]),
        (["--target", "--batch", "2"], ["--target", "--batch", "2"]),
        # nothing after -- is an option
        (["--", "--target", "llvm", "-mcpu=native"], ["--", "--target", "llvm", "-mcpu=native"]),
    ],
)
def test_join_target_options(argv, expected):
    assert join_target_options(argv, SHORT) == expected


@pytest.mark.parametrize(
    "target_argv, expected",
    [
        (["--target", "llvm", "-mcpu=native", "-num-cores=2"], "llvm -mcpu=native -num-cores=2"),
        (["--target", "llvm -mcpu=znver3"], "llvm -mcpu=znver3"),
        (["--target=llvm"], "llvm"),
        (["--target=llvm", "-mcpu=native"], "llvm -mcpu=native"),
        ([], "llvm -mcpu=native"),
    ],
)
def test_compile_parses_every_form_with_options_before_and_after(target_argv, expected):
    before = parse_args(["compile", "m.pt", *target_argv, "-o", "out", "--batch", "2"])
    after = parse_args(["compile", "m.pt", "-o", "out", *target_argv])
    for args in (before, after):
        assert args.target == expected and args.output == "out" and args.source == "m.pt"
    assert before.batch == 2


def test_unknown_options_stay_argparse_errors(capsys):
    for argv in (
        ["compile", "m.pt", "-o", "out", "--target", "llvm", "--bogus"],
        ["compile", "m.pt", "-o", "out", "-mcpu=native"],  # a target option without --target
        ["bench", "dir", "--target", "llvm", "-mcpu=native"],  # bench takes no target
    ):
        with pytest.raises(SystemExit) as exited:
            parse_args(argv)
        assert exited.value.code == 2
        assert "unrecognized arguments" in capsys.readouterr().err


# --- refused before any work ---------------------------------------------------------------------


def _must_not_start(name):
    def started(*args, **kwargs):
        raise AssertionError(f"{name} started although the target should have been refused")

    return started


@pytest.fixture
def no_work(monkeypatch):
    """Loading the model, tracing and lowering all fail the test if they start."""
    from subp_fx.codegen import pipeline
    from subp_fx.tools import artifact

    monkeypatch.setattr(artifact, "load_compile_source", _must_not_start("load_compile_source"))
    monkeypatch.setattr(pipeline, "inference_graph", _must_not_start("inference_graph"))
    monkeypatch.setattr(pipeline, "lower_graph", _must_not_start("lower_graph"))


@pytest.mark.parametrize(
    "target_argv, fragments",
    [
        (["--target", "cuda"], ["'cuda'", "kind must be 'llvm'", "llvm -mcpu=native"]),
        (["--target", "c"], ["'c'", "kind must be 'llvm'"]),
        (["--target", "cuda", "-arch=sm_80"], ["'cuda -arch=sm_80'", "kind must be 'llvm'"]),
        (["--target", "garbage"], ["unknown target kind 'garbage'", "subp-fx compiles for 'llvm'"]),
        (["--target", "llvm", "-mcpu=notacpu"], ["-mcpu=notacpu is not a CPU LLVM knows", "'native'"]),
        (["--target", "llvm", "-mcpux=native"], ["unknown option 'mcpux'", "-mcpu"]),
        (["--target", "llvm", f"-mtriple={FOREIGN_TRIPLE}"], [FOREIGN_TRIPLE, "not this machine's architecture"]),
        (["--target", "-mcpu=native"], ["starts with an option", "'llvm -mcpu=native'"]),
    ],
)
def test_a_target_we_cannot_build_is_refused_at_once(target_argv, fragments, tmp_path, capsys, no_work):
    recipe = write_recipe(tmp_path / "r.yaml", small_recipe(tmp_path / "run"))
    out = tmp_path / "out"
    status = main(["compile", str(recipe), "-o", str(out), *target_argv])
    captured = capsys.readouterr()
    assert status == 2 and captured.err.startswith("subp-fx: error:") and "Traceback" not in captured.err
    flowed = " ".join(captured.err.split())
    for fragment in fragments:
        assert fragment in flowed, (fragment, captured.err)
    assert captured.out == ""
    # nothing written; and the model was never loaded, traced or lowered (the no_work fixture)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["r.yaml"]


def test_the_unquoted_design_card_line_reaches_the_model(tmp_path, capsys, monkeypatch):
    """`compile MODEL --target llvm -mcpu=native -num-cores=2` passes argparse and the target
    check and goes on to load the model (stopped there: compiling is tested elsewhere)."""
    from subp_fx.errors import SubpError
    from subp_fx.tools import artifact

    def stop(*args, **kwargs):
        raise SubpError("stopped where the model would be loaded")

    monkeypatch.setattr(artifact, "load_compile_source", stop)
    recipe = write_recipe(tmp_path / "r.yaml", small_recipe(tmp_path / "run"))
    argv = ["compile", str(recipe), "--target", "llvm", "-mcpu=native", "-num-cores=2", "-o", str(tmp_path / "o")]
    assert main(argv) == 2
    assert "stopped where the model would be loaded" in capsys.readouterr().err
