"""Defaults of the compile half, in one place, importable without TVM (the CLI reads them)."""

# "native" is resolved to this machine's CPU by ``target.parse_target``: TVM 0.27 itself would
# silently fall back to generic x86-64 code for it.
DEFAULT_TARGET = "llvm -mcpu=native"
