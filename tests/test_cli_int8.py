"""`subp-fx compile --precision int8` as a user meets it: compile a recipe calibrated on
synthetic images, then `eval` and `bench` say which precision they ran; and every bad int8 input
is one paragraph, exit 2, with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import small_recipe, write_recipe
from tests.test_cli_compile import assert_user_error, run_cli


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """SmallCNN on synthetic 16x16 images (random weights, random uniform masks when compiled)."""
    root = tmp_path_factory.mktemp("int8")
    return write_recipe(root / "r.yaml", small_recipe(root / "run"))


def test_compile_eval_bench_in_int8(recipe, tmp_path, capsys):
    out = tmp_path / "compiled"
    status, printed, _ = run_cli(
        capsys,
        "compile",
        recipe,
        "-o",
        out,
        "--precision",
        "int8",
        "--calibration-data",
        "synthetic",
        "--calibration-batches",
        2,
        "--threads",
        1,
        "--no-dense-baseline",
    )
    assert status == 0, printed
    assert "in int8" in printed and "precision: int8 (calibrated on 32 images in 2 batch(es) from synthetic)" in printed
    assert "int8/" in printed  # the kernel table's precision column
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "int8" and manifest["calibration"]["source"] == "synthetic"
    source = json.loads((out / "source.json").read_text())
    assert source["precision"] == "int8" and source["calibration"]["batches"] == 2

    status, printed, _ = run_cli(capsys, "eval", out, "--compare-pytorch", "--json", tmp_path / "eval.json")
    assert status == 0 and "compiled (int8): * Prec@1" in printed and "pytorch (fp32): * Prec@1" in printed
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["precision"] == "int8" and result["compiled"]["samples"] == 32
    # int8 against fp32 PyTorch: close (quantisation, measured 1-2% of max |logit|) but not equal
    assert 0 < result["max_abs_logit_diff"] < 0.05 * result["max_abs_logit"]

    status, printed, _ = run_cli(
        capsys, "bench", out, "--no-torch-compile", "--iters", 3, "--warmup", 1, "--json", tmp_path / "bench.json"
    )
    assert status == 0 and "int8" in printed
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert bench["precision"]["subp_sparse"] == "int8" and bench["precision"]["pytorch_eager_dense"] == "fp32"


def _image_folder(root, channels_mode: str, count: int):
    """An ImageFolder with ``count`` 16x16 images in val/ (and train/), two classes."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for index in range(count):
            folder = root / split / f"class{index % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            size = (16, 16) if channels_mode == "L" else (16, 16, 3)
            Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8), channels_mode).save(folder / f"{index}.png")
    return root


@pytest.mark.parametrize(
    "options, fragments",
    [
        (["--precision", "int8"], ["--precision int8 needs --calibration-data", "fashion-mnist | imagefolder ROOT"]),
        (["--calibration-data", "synthetic"], ["--calibration-data is for --precision int8", "this build is fp32"]),
        (["--precision", "int8", "--calibration-data", "imagefolder"], ["imagefolder needs its ROOT"]),
        (["--precision", "int8", "--calibration-data", "cifar10"], ["'cifar10' is not a calibration source", "valid"]),
        (["--precision", "int8", "--calibration-data", "synthetic", "x", "y"], ["takes a source and"]),
        (
            ["--precision", "bf16", "--target", "llvm -mcpu=znver3"],
            ["--precision bf16 needs a CPU with avx512_bf16", "(znver3) has none", "valid here: fp32 or int8"],
        ),
    ],
)
def test_bad_int8_options_are_refused_before_any_work(recipe, tmp_path, capsys, options, fragments):
    status, printed, err = run_cli(capsys, "compile", recipe, "-o", tmp_path / "out", *options)
    assert_user_error(status, err, *fragments)
    assert len(err.strip().splitlines()) <= 3 and not printed  # one paragraph
    assert not (tmp_path / "out").exists()


def test_bf16_on_this_cpu_compiles_or_names_the_missing_avx512_bf16(recipe, tmp_path, capsys):
    with open("/proc/cpuinfo") as cpuinfo:
        has_bf16 = "avx512_bf16" in cpuinfo.read()
    out = tmp_path / "out"
    status, printed, err = run_cli(
        capsys, "compile", recipe, "-o", out, "--precision", "bf16", "--no-dense-baseline", "--quiet"
    )
    if not has_bf16:
        assert_user_error(status, err, "needs a CPU with avx512_bf16", "valid here: fp32 or int8")
        assert not out.exists()
        return
    assert status == 0, err
    assert "in bf16" in printed and "bf16/avx512-bf16" in printed  # the kernel table names the path
    assert json.loads((out / "manifest.json").read_text())["precision"] == "bf16"


def test_calibration_sets_that_cannot_calibrate_are_refused_with_nothing_written(recipe, tmp_path, capsys):
    out = tmp_path / "out"
    # a val/ split of 3 images cannot fill one batch of 16
    small = _image_folder(tmp_path / "small", "RGB", 3)
    status, _, err = run_cli(
        capsys,
        "compile",
        recipe,
        "-o",
        out,
        "--precision",
        "int8",
        "--calibration-data",
        "imagefolder",
        small,
        "--calibration-batches",
        1,
        "--no-dense-baseline",
    )
    assert_user_error(status, err, "need 16 images", "holds 3", "fewer batches")
    # an empty folder: no images at all
    (tmp_path / "empty" / "val").mkdir(parents=True)
    (tmp_path / "empty" / "train").mkdir()
    status, _, err = run_cli(
        capsys,
        "compile",
        recipe,
        "-o",
        out,
        "--precision",
        "int8",
        "--calibration-data",
        "imagefolder",
        tmp_path / "empty",
        "--no-dense-baseline",
    )
    assert status == 2 and err.startswith("subp-fx: error:") and "Traceback" not in err
    assert not out.exists() and not [path for path in tmp_path.iterdir() if path.name.startswith(".")]


def test_grayscale_images_calibrate_an_rgb_model_as_the_data_module_decodes_them(tmp_path):
    """1-channel images are not refused for a 3-channel model: the data module decodes them to RGB
    (as it would for evaluation), so the batches have the model's channel count."""
    from subp_fx.tools.calibration_spec import CalibrationSpec

    gray = _image_folder(tmp_path / "gray", "L", 4)
    batches = CalibrationSpec("imagefolder", str(gray), batches=1, batch_size=4).batches_for((1, 3, 16, 16))
    assert [tuple(batch.shape) for batch in batches] == [(4, 3, 16, 16)]
