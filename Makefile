# Two entry points that set everything up on a fresh machine and are cheap the second time:
#   make demo   -> prune a CNN on Fashion-MNIST with SUBP (recipes/fashion-mnist-demo.yaml), compile
#                  it to 1xN block-sparse CPU code with TVM (fp32, then int8 calibrated on Fashion-MNIST,
#                  and bf16 on CPUs with avx512_bf16), and check its accuracy against PyTorch; prints
#                  the builds side by side
#   make test   -> the lint gate (ruff, configured in pyproject.toml), then the test suite
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed-stamp
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_OUT ?= runs/fashion-mnist-demo

.PHONY: setup demo test dataset clean

setup: $(STAMP) dataset

# torch/torchvision are pinned to the builds this machine keeps on disk; an unpinned torch would
# pull a multi-GB CUDA build from the network.
$(STAMP): pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(VENV)/bin/pip install --quiet -e '.[compile,test,bench,peers]'
	@touch $(STAMP)

dataset: $(FASHION_MNIST)

$(FASHION_MNIST):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq dataset-fashion-mnist

demo: setup
	$(VENV)/bin/subp-fx prune recipes/fashion-mnist-demo.yaml --force --set output.dir=$(DEMO_OUT)
	$(VENV)/bin/subp-fx compile $(DEMO_OUT)/last.pt -o $(DEMO_OUT)/compiled --force
	$(VENV)/bin/subp-fx eval $(DEMO_OUT)/compiled --compare-pytorch --json $(DEMO_OUT)/compiled-eval.json
	$(VENV)/bin/subp-fx compile $(DEMO_OUT)/last.pt -o $(DEMO_OUT)/compiled-int8 --force \
		--precision int8 --calibration-data fashion-mnist
	$(VENV)/bin/subp-fx eval $(DEMO_OUT)/compiled-int8 --compare-pytorch --json $(DEMO_OUT)/compiled-int8-eval.json
	@# bf16 needs avx512_bf16 (vdpbf16ps); elsewhere the demo shows fp32 and int8 only
	if grep -q avx512_bf16 /proc/cpuinfo; then \
		$(VENV)/bin/subp-fx compile $(DEMO_OUT)/last.pt -o $(DEMO_OUT)/compiled-bf16 --force --precision bf16 && \
		$(VENV)/bin/subp-fx eval $(DEMO_OUT)/compiled-bf16 --compare-pytorch --json $(DEMO_OUT)/compiled-bf16-eval.json; \
	else rm -rf $(DEMO_OUT)/compiled-bf16 $(DEMO_OUT)/compiled-bf16-eval.json; fi
	$(VENV)/bin/python benchmarks/demo_result.py $(DEMO_OUT) --out $(DEMO_OUT)

# The suite runs in three processes. In one process, after ~1100 tests had loaded TVM, torch, ONNX
# Runtime and OpenVINO libraries and threads, tests/tools/test_benchmark.py's first test died with
# SIGSEGV inside native code (no Python frame; reproduced twice, 2026-11-30); the same tests pass
# alone and after every subset of the earlier tests tried. Under gdb (2026-11-30, twice): the main
# thread faults in CPython's take_gil right after a blocking read of a compiler subprocess's output
# (TVM's export_library linking model.so), si_code SI_KERNEL (a general-protection fault, e.g. a
# corrupted pointer), not a signal sent by another process: the GIL state looks corrupted while the
# main thread had released it, which points at native code touching Python state without the GIL.
# Not vfork: with subprocess._USE_VFORK = False the one-process suite died the same way (rc 139).
# Not found yet; tools/ and train/ run in a fresh process meanwhile. On a Zen 4 (avx512_bf16), fresh
# clone, 2026-11-30: the first process died the same way (rc 139, no Python traceback) at
# tests/test_cli_compile.py's compile + eval + bench round trip; with the CLI files moved to the
# second process, that one died at tests/train/test_gpu_benchmarks.py's gpu_checks.sh subprocess,
# every time, also on the previous stop's code (2ab91ff): it needs tests/tools/test_peers.py
# (ONNX Runtime, OpenVINO) and that file's two earlier tests (training and DataLoader benchmarks)
# before it in one process; tests/train alone (52 passed) and tools/ with the CLI files (91
# passed) pass. So three processes: the rest, then tools/ and the CLI end-to-end files (both
# export and bench), then train/.
ENGINE_TESTS := tests/tools tests/test_cli_compile.py tests/test_cli_int8.py
TRAIN_TESTS := tests/train

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/python -m pytest -q $(addprefix --ignore=,$(ENGINE_TESTS) $(TRAIN_TESTS))
	$(VENV)/bin/python -m pytest -q $(ENGINE_TESTS)
	$(VENV)/bin/python -m pytest -q $(TRAIN_TESTS)

clean:
	rm -rf $(VENV) runs .pytest_cache
