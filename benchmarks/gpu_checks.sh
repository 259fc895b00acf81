#!/usr/bin/env bash
# All GPU checks of issue 12 in one run, under 10 minutes on one H200: the `cuda` tests, the
# training-throughput benchmark (float16 and bfloat16 AMP), the data-loading benchmark (CPU workers
# and nvJPEG), and the machine's description. Results go to the folder given as $1 (or $OUT):
#   gpu_checks.log          everything printed, in order
#   env.txt, nvidia-smi.txt torch / CUDA / cuDNN versions, GPU, driver
#   cuda_tests.log/.xml     pytest -m cuda tests/train/test_cuda.py (+ the CPU tests of the new options)
#   gpu_training.json       ResNet-50 SUBP 66/128 vs dense, AMP float16, channels_last, batch 256
#   gpu_training_bf16.json  the same with bfloat16 autocast
#   data_loading.json/.md   ImageFolder pipeline images/s for 0/4/8/16 workers, nvJPEG decode rate
#   summary.json            the headline numbers and every stage's exit status
#
# How to run it from a session that has the device machine (one H200, Python 3.12, PyTorch 2.11
# preinstalled, no network), with the `run` tool:
#   run(command="bash benchmarks/gpu_checks.sh $OUT", carry=[".whl"], timeout_s=600)
# then copy the files it returns into benchmarks/results/gpu/ and quote summary.json in the note.
#
# Wheels: the image (read 2026-11-29 from the device tool's KINDS.md) has torch 2.11, torchvision 0.26,
# numpy, Pillow, PyYAML, tqdm, tabulate, pytest and hypothesis, but not pydantic. Before the run, on the
# CPU machine (it has the network), fill .whl/ (ignored by git: never commit it) with:
#   mkdir -p .whl
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl pydantic_core==2.50.5
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#       pydantic==2.14.4 annotated-types==0.8.0 typing_extensions==4.16.0 typing-inspection==0.4.5
# (2.8 MB; the script's import check lists anything else missing.)
# The versions are the ones this repository's .venv tests with. The wheels go to /tmp/site and the
# package runs from this source tree (PYTHONPATH=repo root): no `pip install -e`, nothing that pins
# torch==2.14.1 is imported.
set -u -o pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="${1:-${OUT:-$REPO/gpu_check_results}}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
exec > >(tee "$OUT_DIR/gpu_checks.log") 2>&1
cd "$REPO"
START=$(date +%s)
declare -A STATUS

stage() {  # stage NAME TIMEOUT_S COMMAND...: run, record the exit status, never stop the script
    local name="$1" limit="$2"
    shift 2
    echo
    echo "=== $name (limit ${limit}s, t=$(($(date +%s) - START))s) ==="
    timeout --kill-after=10 "$limit" "$@"
    STATUS[$name]=$?
    echo "=== $name: exit ${STATUS[$name]} ==="
}

if compgen -G ".whl/*.whl" > /dev/null; then
    echo "installing $(ls .whl/*.whl | wc -l) wheels from .whl/ into /tmp/site"
    "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || echo "WARNING: wheel install failed"
    export PYTHONPATH="$REPO:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "no .whl/ folder: using the image's packages only"
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONDONTWRITEBYTECODE=1

nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1 || echo "nvidia-smi failed" >> "$OUT_DIR/nvidia-smi.txt"
cat "$OUT_DIR/nvidia-smi.txt"
"$PY" - > "$OUT_DIR/env.txt" 2>&1 <<'EOF'
import importlib, platform, torch
print("python", platform.python_version())
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
print("cuda available", torch.cuda.is_available(), "devices", torch.cuda.device_count())
for i in range(torch.cuda.device_count()):
    print("device", i, torch.cuda.get_device_name(i))
print("nccl", torch.cuda.nccl.version() if torch.cuda.is_available() else None)
for name in ("numpy", "torchvision", "PIL", "pydantic", "yaml", "tqdm", "tabulate", "pytest", "subp_fx"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "ok"), getattr(module, "__file__", ""))
    except Exception as error:  # report every missing piece, not only the first
        print(name, "MISSING:", type(error).__name__, error)
EOF
cat "$OUT_DIR/env.txt"

# GPU_CHECKS_QUICK=1: tiny settings, to check this script's plumbing on a CPU machine (numbers meaningless)
if [ "${GPU_CHECKS_QUICK:-0}" = 1 ]; then
    BENCH=(--device cpu --model resnet18 --batch 2 --image-size 32 --steps 2 --warmup 1 --rounds 1 --mask-repeats 1)
    DATA=(--workers 0 1 --images 96 --batch 16 --batches 4 --skip 1)
else
    BENCH=()
    DATA=(--workers 0 4 8 16 --images 1024 --batch 64 --batches 12 --skip 4)
fi

stage cuda_tests 270 "$PY" -m pytest -p no:cacheprovider -q -rA -m cuda tests/train/test_cuda.py \
    --junitxml="$OUT_DIR/cuda_tests.xml" -o junit_family=xunit2
stage option_tests 40 "$PY" -m pytest -p no:cacheprovider -q tests/train/test_gpu_options.py
stage bench_fp16 110 "$PY" benchmarks/gpu_training.py --amp-dtype float16 "${BENCH[@]}" \
    --json "$OUT_DIR/gpu_training.json"
stage bench_bf16 70 "$PY" benchmarks/gpu_training.py --amp-dtype bfloat16 --rounds 1 --mask-repeats 1 "${BENCH[@]}" \
    --json "$OUT_DIR/gpu_training_bf16.json"
stage data_loading 75 "$PY" benchmarks/data_loading.py "${DATA[@]}" \
    --json "$OUT_DIR/data_loading.json" --markdown "$OUT_DIR/data_loading.md"

STATUS_JSON="{"
for name in "${!STATUS[@]}"; do STATUS_JSON+="\"$name\": ${STATUS[$name]}, "; done
STATUS_JSON="${STATUS_JSON%, }}"
"$PY" - "$OUT_DIR" "$STATUS_JSON" "$(($(date +%s) - START))" <<'EOF'
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path
out, status, seconds = Path(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
summary = {"exit_status": status, "seconds": seconds}
junit = out / "cuda_tests.xml"
if junit.is_file():
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    summary["cuda_tests"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    summary["cuda_tests"]["not_passed"] = [
        case.get("name") for case in suite.iter("testcase") if len(case) and case[0].tag in ("failure", "error", "skipped")
    ]
for name in ("gpu_training", "gpu_training_bf16"):
    path = out / f"{name}.json"
    if path.is_file():
        r = json.loads(path.read_text())
        summary[name] = {
            "device": r["machine"].get("name"),
            "dense_images_per_s": round(r["dense"]["images_per_s"], 1),
            "subp_images_per_s": round(r["subp"]["images_per_s"], 1),
            "subp_over_dense_step_time": round(r["subp_over_dense_step_time"], 4),
            "goal_met": r["goal_met"],
            "mask_update_s": {k: round(v["seconds_median"], 3) for k, v in r["mask_update"].items()},
        }
path = out / "data_loading.json"
if path.is_file():
    r = json.loads(path.read_text())
    summary["data_loading"] = {
        "images_per_s_by_workers": {row["workers"]: round(row["images_per_s"]) for row in r["loaders"]},
        "pieces": {k: round(v) for k, v in r["pieces"].items()},
    }
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
EOF
echo "total $(($(date +%s) - START)) s; results in $OUT_DIR"
