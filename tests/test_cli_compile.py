"""`subp-fx compile / eval / bench`: the artefact, the reports, and bad input (exit 2, one
paragraph, nothing half-written)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torchvision

from subp_fx.cli import main
from tests.conftest import small_recipe, write_recipe


def run_cli(capsys, *argv):
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_user_error(status, err, *fragments):
    assert status == 2 and err.startswith("subp-fx: error:") and "Traceback" not in err
    flowed = " ".join(err.split())
    for fragment in fragments:
        assert fragment in flowed, (fragment, err)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A SmallCNN trained for 2 epochs on synthetic 16x16 images, with final uniform masks."""
    root = tmp_path_factory.mktemp("trained")
    recipe = write_recipe(root / "r.yaml", small_recipe(root / "run", train={"epochs": 2, "threads": 1}))
    assert main(["prune", str(recipe)]) == 0
    return root


def test_compile_eval_bench_round_trip(trained, tmp_path, capsys):
    out = tmp_path / "compiled"
    status, printed, err = run_cli(
        capsys, "compile", trained / "run" / "last.pt", "-o", out, "--batch", 2, "--threads", 1
    )
    assert status == 0
    assert "lower_graph" not in printed + err  # stderr is no terminal here: no progress lines
    for fragment in ("stem.0", "dense", "sparse", "C_in=3 < 4", "16/32"):
        assert fragment in printed, fragment
    for name in ("model.so", "manifest.json", "dense/model.so", "pytorch_model.pt", "subp_model.pt", "source.json"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input_shape"] == [2, 3, 16, 16] and manifest["threads"] == 1
    kinds = {
        entry["layer"]: (entry["kind"], entry["kept_per_row"], entry["in_channels"]) for entry in manifest["kernels"]
    }
    assert kinds["features.0.0"] == ("sparse", 16, 32) and kinds["stem.0"][0] == "dense"
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]  # no staging left

    status, printed, _ = run_cli(capsys, "eval", out, "--compare-pytorch", "--json", tmp_path / "eval.json")
    assert status == 0 and "* Prec@1" in printed
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["compiled"]["samples"] == 32 and result["compiled"]["top1"] == pytest.approx(
        result["pytorch"]["top1"]
    )
    assert result["max_abs_logit_diff"] <= 1e-4 * result["max_abs_logit"]

    status, printed, _ = run_cli(
        capsys, "bench", out, "--iters", 2, "--warmup", 1, "--no-torch-compile", "--json", tmp_path / "b.json"
    )
    assert status == 0
    bench = json.loads((tmp_path / "b.json").read_text())
    ours_and_torch = {"subp_sparse", "subp_dense", "pytorch_eager_dense", "pytorch_torchscript_dense"}
    peers = set(bench["results"]) - ours_and_torch  # ONNX Runtime and OpenVINO, where installed
    assert ours_and_torch <= set(bench["results"])
    assert all(name.startswith(("onnxruntime_", "openvino_")) for name in peers)
    assert bench["threads"] == {"tvm": 1, "torch": 1} and bench["flop_ideal_speedup"] > 1.5
    assert {"median_ms", "p90_ms", "p99_ms", "throughput_per_s"} <= set(bench["results"]["subp_sparse"])

    # another batch recompiles both builds for it
    status, _, _ = run_cli(
        capsys,
        "bench",
        out,
        "--batch",
        3,
        "--iters",
        1,
        "--warmup",
        0,
        "--no-torch-compile",
        "--json",
        tmp_path / "b3.json",
    )
    assert status == 0
    bench = json.loads((tmp_path / "b3.json").read_text())
    assert bench["input_shape"] == [3, 3, 16, 16] and bench["batch"] == 3 and "subp_dense" in bench["results"]

    # where the time goes, inside the model: every layer of the kernel table is a timed call
    status, printed, _ = run_cli(capsys, "profile", out, "--runs", 2, "--json", tmp_path / "p.json")
    assert status == 0 and "uninstrumented" in printed and "features.0.0" in printed
    profile = json.loads((tmp_path / "p.json").read_text())
    layers = {call["layer"] for call in profile["calls"] if call["layer"]}
    assert layers == {entry["layer"] for entry in manifest["kernels"]} and profile["latency_us"] > 0
    status, printed, _ = run_cli(capsys, "profile", out, "--dense", "--runs", 1, "--top", 3)
    # the artefact line, the header, 3 calls, the totals, the machine's limits, the calls below theirs
    assert status == 0 and "dense" in printed.splitlines()[0] and len(printed.splitlines()) == 1 + 1 + 3 + 3
    assert "of limit" in printed.splitlines()[1] and "below 85% of their limit" in printed.splitlines()[-1]


def test_existing_output_is_refused_and_kept(trained, tmp_path, capsys):
    out = tmp_path / "compiled"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    status, _, err = run_cli(capsys, "compile", trained / "run" / "last.pt", "-o", out)
    assert_user_error(status, err, "already exists", "--force")
    assert (out / "keep.txt").read_text() == "mine"


def test_plain_state_dict_from_another_architecture(tmp_path, capsys):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    status, _, err = run_cli(capsys, "compile", path, "-o", tmp_path / "out")
    assert_user_error(status, err, "resnet18.pth", "not a subp-fx training checkpoint")
    assert not (tmp_path / "out").exists()


def test_malformed_target_and_bad_threads(trained, tmp_path, capsys):
    status, _, err = run_cli(
        capsys, "compile", trained / "run" / "last.pt", "-o", tmp_path / "out", "--target", "llvm -mcpu"
    )
    assert_user_error(status, err, "-mcpu")
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exited:
        main(["compile", str(trained / "run" / "last.pt"), "-o", str(tmp_path / "out"), "--threads", "0"])
    assert exited.value.code == 2 and "must be >= 1" in capsys.readouterr().err


def test_recipe_compiles_with_imposed_sparsity(tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", small_recipe(tmp_path / "run"))
    status, printed, _ = run_cli(
        capsys,
        "compile",
        recipe,
        "-o",
        tmp_path / "out",
        "--impose-sparsity",
        0.75,
        "--no-dense-baseline",
        "--threads",
        1,
    )
    assert status == 0 and "random uniform masks at prune rate 0.75" in printed
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    sparse = [entry for entry in manifest["kernels"] if entry["kind"] == "sparse"]
    assert sparse and all(entry["kept_per_row"] == entry["in_channels"] // 4 for entry in sparse)
    assert not (tmp_path / "out" / "dense").exists()


# --- output paths are checked before the work starts ---------------------------------------------


def _must_not_start(name):
    def started(*args, **kwargs):
        raise AssertionError(f"{name} started before the output path was checked")

    return started


@pytest.fixture
def no_work(monkeypatch):
    """Evaluating, benchmarking and compiling all fail the test if they start."""
    from subp_fx.tools import artifact, benchmark, evaluate

    monkeypatch.setattr(evaluate, "evaluate_compiled", _must_not_start("evaluate_compiled"))
    monkeypatch.setattr(benchmark, "bench_compiled", _must_not_start("bench_compiled"))
    monkeypatch.setattr(artifact, "load_compile_source", _must_not_start("load_compile_source"))


@pytest.mark.parametrize(
    "command, work",
    [("eval", "nothing was evaluated"), ("bench", "nothing was benchmarked")],
)
def test_json_output_that_cannot_be_written_is_refused_before_any_work(command, work, tmp_path, capsys, no_work):
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("mine")
    cases = [
        (tmp_path / "missing" / "x.json", ["missing", "does not exist", "create it or choose another path"]),
        (a_file / "x.json", ["a_file.txt", "is not a directory"]),
        (tmp_path, ["is a directory", "give a file name"]),
    ]
    if Path("/sys").is_dir() and os.access("/sys", os.W_OK):  # root still cannot create files in sysfs
        cases.append((Path("/sys/x.json"), ["cannot create a file in '/sys'"]))
    for path, fragments in cases:
        status, _, err = run_cli(capsys, command, tmp_path / "artefact", "--json", path)
        assert_user_error(status, err, "--json", *fragments, work)
    assert a_file.read_text() == "mine"


def test_eval_json_into_a_missing_folder_fails_before_evaluating_not_after(trained, tmp_path, capsys):
    """The issue's report: `eval ... --json /missing/dir/x.json` evaluated everything, then died
    with a traceback and exit 1. Now: exit 2 at once, and the same command with a good path works."""
    out = tmp_path / "compiled"
    assert main(["compile", str(trained / "run" / "last.pt"), "-o", str(out), "--no-dense-baseline"]) == 0
    capsys.readouterr()
    status, printed, err = run_cli(capsys, "eval", out, "--json", tmp_path / "missing" / "dir" / "x.json")
    assert_user_error(status, err, "--json", "does not exist", "nothing was evaluated")
    assert "Prec@1" not in printed and not (tmp_path / "missing").exists()
    status, printed, _ = run_cli(capsys, "eval", out, "--json", tmp_path / "x.json")
    assert status == 0 and "Prec@1" in printed
    assert json.loads((tmp_path / "x.json").read_text())["compiled"]["samples"] == 32
    assert sorted(path.name for path in tmp_path.iterdir()) == ["compiled", "x.json"]  # no temporary left


def test_compile_outputs_that_cannot_be_written_are_refused_before_compiling(tmp_path, capsys, no_work):
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("mine")
    recipe = write_recipe(tmp_path / "r.yaml", small_recipe(tmp_path / "run"))
    nothing = "nothing was compiled"
    status, _, err = run_cli(capsys, "compile", recipe, "-o", a_file / "out")
    assert_user_error(status, err, "-o", "a_file.txt", "is a file, not a folder", nothing)
    status, _, err = run_cli(capsys, "compile", recipe, "-o", a_file, "--force")
    assert_user_error(status, err, "-o", "is a file", nothing)
    status, _, err = run_cli(capsys, "compile", recipe, "-o", tmp_path / "out", "--tuning-log", a_file / "log.json")
    assert_user_error(status, err, "--tuning-log", "is a file, not a folder", nothing)
    status, _, err = run_cli(capsys, "compile", recipe, "-o", tmp_path / "out", "--tuning-log", tmp_path)
    assert_user_error(status, err, "--tuning-log", "is a directory", nothing)
    assert a_file.read_text() == "mine" and not (tmp_path / "out").exists()


def test_a_sub_batch_that_does_not_divide_the_batch_is_refused_before_loading(tmp_path, capsys, no_work):
    recipe = write_recipe(tmp_path / "r.yaml", small_recipe(tmp_path / "run"))
    status, _, err = run_cli(capsys, "compile", recipe, "-o", tmp_path / "out", "--batch", "8", "--sub-batch", "3")
    assert_user_error(status, err, "--sub-batch 3 does not divide --batch 8", "valid: 1, 2, 4, 8")
    assert not (tmp_path / "out").exists()


def test_no_winograd_compiles_every_conv_directly(tmp_path, capsys):
    """By default a 3x3 stride-1 conv with enough 4x4 output tiles and kept channels runs by
    Winograd (the manifest says so per layer, source.json for the build); --no-winograd runs all
    directly."""
    from subp_fx.codegen.kernels.winograd import MIN_KEPT, MIN_TILES

    recipe = write_recipe(tmp_path / "r.yaml", small_recipe(tmp_path / "run", data={"image_size": 32}))
    algorithms = {}
    for flags in ((), ("--no-winograd",)):
        out = tmp_path / ("direct" if flags else "default")
        status, _, _ = run_cli(
            capsys, "compile", recipe, "-o", out, "--impose-sparsity", 0.5, "--no-dense-baseline", *flags
        )
        assert status == 0
        assert json.loads((out / "source.json").read_text())["winograd"] is not bool(flags)
        kernels = json.loads((out / "manifest.json").read_text())["kernels"]
        algorithms[flags] = {
            entry["layer"]: (
                entry["algorithm"],
                entry["kernel_size"],
                entry["stride"],
                entry["out_hw"],
                entry["kept_per_row"],
            )
            for entry in kernels
        }
    assert {algorithm for algorithm, *_ in algorithms[("--no-winograd",)].values()} == {"direct"}
    eligible = {
        layer
        for layer, (_, kernel, stride, (height, width), kept) in algorithms[()].items()
        if kernel == [3, 3] and stride == [1, 1] and -(-height // 4) * -(-width // 4) >= MIN_TILES and kept >= MIN_KEPT
    }
    assert eligible, "the test model has no conv the default build runs by Winograd"
    assert {layer for layer, (algorithm, *_) in algorithms[()].items() if algorithm != "direct"} == eligible
