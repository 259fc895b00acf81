"""How many vector loads this CPU's cores issue per multiply-add: the bound of a 1x1 conv kernel.

Our 1xN kernels (fp32 and int8, NHWC) broadcast one activation per pixel and multiply it into
N output channels. At N=16 with 16-lane zmm registers that is one broadcast load per FMA (per
``vpdpbusd`` in int8), and on Intel Ice Lake server (this project's machine, 2026-11-30) a core
issues one 512-bit load per cycle but two FMAs: a 1x1 conv at N=16 is then bound by loads at
half the FMA rate, whatever the tile. 3x3 convs are not (a broadcast serves up to 3 taps), nor are
dense engines (their tiles share one broadcast among 4 or more vectors of output channels).

``probes/load_ports.c`` times, on one thread, 14 independent instructions per iteration from
L1-resident memory: FMAs alone, loads alone, and a broadcast before each FMA / ``vpdpbusd``, for
ymm (AVX2) and zmm (AVX-512, VNNI) where the CPU has them. This script compiles it with the
system C compiler (``-O2 -march=native``; skipped with a note where there is none), prints a
table and writes ``results/load_ports.{md,json}``.

    python benchmarks/load_ports.py
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import cpu_model_name  # benchmarks/ is on sys.path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "probes" / "load_ports.c"
RESULTS = HERE / "results"

# Probe -> (what it measures, float32 or int32 lanes per instruction, multiply-adds per lane).
PROBES = {
    "fma_ymm": ("vfmadd231ps ymm, registers only", 8, 1),
    "broadcast_load_ymm": ("vbroadcastss ymm from memory, nothing else", 8, 0),
    "broadcast_then_fma_ymm": ("vbroadcastss ymm + vfmadd231ps (one load per FMA)", 8, 1),
    "fma_zmm": ("vfmadd231ps zmm, registers only", 16, 1),
    "vector_load_zmm": ("vmovups zmm from memory, nothing else", 16, 0),
    "broadcast_load_zmm": ("vbroadcastss zmm from memory, nothing else", 16, 0),
    "broadcast_then_fma_zmm": ("vbroadcastss zmm + vfmadd231ps (one load per FMA)", 16, 1),
    "vpdpbusd_zmm": ("vpdpbusd zmm, registers only", 16, 4),
    "broadcast_then_vpdpbusd_zmm": ("vpbroadcastd zmm + vpdpbusd (one load per dot)", 16, 4),
}


def run_probe() -> dict[str, float] | str:
    """Probe name -> instructions per ns, or why the probe could not run."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return "no C compiler (cc, gcc or clang) on PATH"
    with tempfile.TemporaryDirectory() as folder:
        binary = Path(folder) / "load_ports"
        build = subprocess.run(
            [compiler, "-O2", "-march=native", str(SOURCE), "-o", str(binary)], capture_output=True, text=True
        )
        if build.returncode:
            return f"{compiler} could not build {SOURCE.name}: {build.stderr.strip()[:500]}"
        output = subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout
    return {name: float(rate) for name, rate in (line.split() for line in output.splitlines() if line.strip())}


def markdown(rates: dict[str, float], cpu: str) -> str:
    lines = [
        f"# Loads per multiply-add: {cpu}, one thread",
        "",
        "| probe | what runs | instructions / ns | multiply-adds / ns |",
        "|---|---|---|---|",
    ]
    for name, rate in rates.items():
        what, lanes, macs = PROBES.get(name, (name, 0, 0))
        per_ns = f"{rate * lanes * macs:.1f}" if macs else "-"
        lines.append(f"| {name} | {what} | {rate:.2f} | {per_ns} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rates = run_probe()
    if isinstance(rates, str):
        print(f"load_ports: skipped: {rates}")
        return 0
    cpu = cpu_model_name()
    text = markdown(rates, cpu)
    print(text)
    (args.out / "load_ports.md").write_text(text)
    (args.out / "load_ports.json").write_text(json.dumps({"cpu": cpu, "instructions_per_ns": rates}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
