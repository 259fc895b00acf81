"""Can TVM emit AVX-512 BF16's ``vdpbf16ps``? Each way a TIR kernel can ask for it, built in turn.

A bf16 1xN kernel is the int8 kernel's loop nest with 2 channels a 32-bit word instead of 4:
one ``vdpbf16ps`` (16 fp32 lanes += 16 x 2 bf16 products) per pixel and weight vector, the
activation pair broadcast. The LLVM intrinsic ``llvm.x86.avx512bf16.dpbf16ps.512`` takes
``<32 x bfloat>`` operands in LLVM 22 (the LLVM inside TVM 0.27). This script builds a one-step
kernel for ``-mcpu=sapphirerapids`` (avx512_bf16; nothing runs, so any host will do) each way,
each build in a child process (one of them crashes the process), and prints what happened:

- ``call_llvm_pure_intrin`` with ``bfloat16x32`` operands: TVM's TIR pipeline legalises every
  bf16 value before codegen (``BF16ComputeLegalize`` widens it to float32,
  ``BF16StorageLegalize`` stores it as uint16), so the call reaches LLVM with ``<32 x float>``
  or ``<32 x i16>`` operands and fails LLVM's verifier; with the two passes switched off, TVM's
  LLVM codegen segfaults;
- ``int16x32`` / ``float16x32`` operands: no implicit bitcast to ``<32 x bfloat>``; the verifier
  refuses;
- an imported LLVM function (``pragma_import_llvm``, the route ``subp_fx.codegen.kernels.bf16_dot``
  takes): a three-line LLVM function takes ``<16 x i32>`` words and bitcasts them itself; TVM
  links it into the kernel's module, always-inline, before optimisation: one ``vdpbf16ps``.

Measured 2026-11-30 with TVM 0.27.0.post1: the first four fail, the import builds. Run

    python benchmarks/probes/bf16_intrinsic.py

(exit 0 when some variant emits ``vdpbf16ps``) on a new TVM to see whether a native bf16 type
now reaches LLVM, which would let the kernel drop the imported function.
"""

from __future__ import annotations

import subprocess
import sys

INTRINSIC = "llvm.x86.avx512bf16.dpbf16ps.512"
TARGET = {"kind": "llvm", "mcpu": "sapphirerapids"}  # TVM 0.27 takes targets as JSON dicts
# (label, TIR type of the two bf16 operands, skip the two BF16 legalisation passes)
VARIANTS = [
    ("bfloat16x32, default pipeline", "bfloat16x32", False),
    ("bfloat16x32, BF16 legalisation passes off", "bfloat16x32", True),
    ("int16x32", "int16x32", False),
    ("float16x32", "float16x32", False),
    ("imported LLVM function taking int32x16 words", "import", False),
]


def build(operand_type: str, skip_legalisation: bool) -> str:
    """Build one step ``acc += dot(bcast(x[k]), w[k])`` over 8 words; the asm lines naming the op."""
    import tvm
    from tvm import tirx
    from tvm.tirx import ForKind

    words = tirx.decl_buffer((8,), "uint32", "x")
    weights = tirx.decl_buffer((8, 16), "uint32", "w")
    out = tirx.decl_buffer((16,), "float32", "o")
    acc = tirx.decl_buffer((16,), "float32", "acc", scope="local")
    k, lanes = tirx.Var("k", "int32"), tirx.Ramp(0, 1, 16)
    if operand_type == "import":
        from subp_fx.codegen.kernels import bf16_dot

        dot = bf16_dot.dot(
            acc[lanes],
            tirx.reinterpret("int32x16", tirx.Broadcast(words[k], 16)),
            tirx.reinterpret("int32x16", weights[k, lanes]),
        )
    else:
        dot = tirx.call_llvm_pure_intrin(
            "float32x16",
            INTRINSIC,
            acc[lanes],
            tirx.reinterpret(operand_type, tirx.Broadcast(words[k], 16)),
            tirx.reinterpret(operand_type, weights[k, lanes]),
        )
    body = tirx.SeqStmt(
        [
            tirx.AllocBuffer(acc),
            tirx.BufferStore(acc, tirx.Broadcast(tirx.const(0.0, "float32"), 16), [lanes]),
            tirx.For(k, 0, 8, ForKind.SERIAL, tirx.BufferStore(acc, dot, [lanes])),
            tirx.BufferStore(out, acc[lanes], [lanes]),
        ]
    )
    if operand_type == "import":
        from subp_fx.codegen.kernels import bf16_dot

        body = bf16_dot.importing_dot(body)
    func = tirx.PrimFunc([words, weights, out], body).with_attr("global_symbol", "step")
    if skip_legalisation:
        identity = lambda: tvm.transform.Sequential([])  # noqa: E731
        tirx.transform.BF16ComputeLegalize = identity
        tirx.transform.BF16StorageLegalize = identity
    module = tvm.compile(tvm.IRModule({"step": func}), target=tvm.target.Target(TARGET))
    lines = [line.strip() for line in module.mod.inspect_source("asm").splitlines() if "dpbf16" in line]
    return "\n".join(lines) or "built, but no vdpbf16ps in the assembly"


def _child(index: int) -> int:
    _, operand_type, skip = VARIANTS[index]
    print(build(operand_type, skip))
    return 0


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        return _child(int(sys.argv[2]))
    built = False
    for index, (label, _, _) in enumerate(VARIANTS):
        child = subprocess.run(
            [sys.executable, __file__, "--child", str(index)], capture_output=True, text=True, timeout=300
        )
        if child.returncode == 0:
            built = built or "vdpbf16ps" in child.stdout
            outcome = child.stdout.strip()
        elif child.returncode < 0:
            outcome = f"crashed (signal {-child.returncode})"
        else:
            errors = [line for line in child.stderr.splitlines() if line.strip()]
            lines = [line for line in errors if "Error" in line or "does not match" in line] or errors
            outcome = "failed: " + (lines[-1].strip() if lines else f"exit {child.returncode}")
        print(f"{label}: {outcome}", flush=True)
    print("vdpbf16ps: " + ("emitted by at least one variant" if built else "no variant emits it"))
    return 0 if built else 1


if __name__ == "__main__":
    sys.exit(main())
