"""PyTorch's spinning OpenMP threads are put to sleep before a compiled model runs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from subp_fx.codegen.runtime.torch_threads import OPT_OUT_VARIABLE, TorchThreadQuieter, torch_threads_may_spin

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

# Run in a fresh process: its only threads are torch's. GOMP_SPINCOUNT makes libgomp's spin last
# minutes, so a worker still running 50 ms after a region proves it spins, on any CPU.
SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import torch
    from subp_fx.codegen.runtime.torch_threads import quiet_torch_threads

    def states():
        found = {}
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/stat") as stat:
                found[int(tid)] = stat.read().rsplit(")", 1)[1].split()[0]
        return found

    torch.set_num_threads(2)
    before = set(states())
    data = torch.zeros(1 << 20)
    data.add_(1.0)  # a parallel region: torch's OpenMP worker starts, then spins
    time.sleep(0.05)
    workers = {tid: state for tid, state in states().items() if tid not in before}
    spinning = sorted(tid for tid, state in workers.items() if state == "R")
    did = quiet_torch_threads()
    time.sleep(0.05)
    after = {tid: state for tid, state in states().items() if tid in workers}
    print(len(workers), len(spinning), did, sorted(set(after.values())), torch.get_num_threads())
    """
)


def _run(extra_env: dict[str, str]) -> list[str]:
    env = {**os.environ, "GOMP_SPINCOUNT": "100000000000", "PYTHONPATH": REPO, **extra_env}
    env.pop("OMP_WAIT_POLICY", None)
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not torch_threads_may_spin(torch) or (os.cpu_count() or 1) < 2,
    reason="needs Linux, PyTorch on GNU OpenMP and 2 CPUs",
)


def test_spinning_torch_threads_sleep_after_the_quieter_and_torch_keeps_its_thread_count():
    workers, spinning, did, states_after, threads = _run({})
    assert int(workers) >= 1 and int(spinning) >= 1  # without it they would spin on (GOMP_SPINCOUNT)
    assert did == "True"
    assert states_after == "['S']"
    assert threads == "2"


def test_the_opt_out_leaves_them_spinning():
    workers, spinning, did, states_after, _ = _run({OPT_OUT_VARIABLE: "0"})
    assert int(spinning) >= 1 and did == "False" and "'R'" in states_after


def test_nothing_to_do_without_spinning_threads(monkeypatch):
    quieter = TorchThreadQuieter()
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert quieter() is False
    monkeypatch.delenv("OMP_WAIT_POLICY")
    quieter = TorchThreadQuieter()
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert quieter() is False
    finally:
        torch.set_num_threads(previous)


def test_a_process_without_torch_is_left_alone():
    script = (
        "import sys; from subp_fx.codegen.runtime.torch_threads import quiet_torch_threads; "
        "print(quiet_torch_threads(), 'torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": REPO}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


def test_back_to_back_calls_skip_the_quieting_and_later_ones_do_not(monkeypatch):
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        quieter = TorchThreadQuieter()
        assert quieter() is True  # first call: nothing known about the time before
        quieter.after_run()
        assert quieter() is False  # the previous run ended microseconds ago
        monkeypatch.setattr("subp_fx.codegen.runtime.torch_threads.BACK_TO_BACK_S", 0.0)
        assert quieter() is True
        quieter.enabled = False
        assert quieter() is False
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
