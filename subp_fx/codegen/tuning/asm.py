"""Reading the assembly LLVM emitted for a kernel: vector FMAs used? accumulators kept in registers?

Why: a target that silently degrades (``-mcpu=native`` with the wrong triple) or a register tile
too big for the register file still gives correct numbers, only 2-5x slower. The assembly says
which. ``vfmadd...ps %ymm``/``%zmm`` shows FMA on 256/512-bit vectors. For spills we cannot rely
on LLVM's ``# Spill`` comments (TVM's assembly has none), so :func:`analyse_asm` finds the hot
loop -- the innermost loop (a backward jump) with the most packed FMAs -- and counts, inside it, vector
accesses to the stack (spills and reloads) and vector stores anywhere (accumulators living in
memory). A good register tile has neither: the partial sums are stored once, after the loop.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

# Register prefix -> vector width in bits.
_VECTOR_REGISTER_BITS = {"xmm": 128, "ymm": 256, "zmm": 512}
_PACKED_FMA = re.compile(r"^\s*vfn?m(?:add|sub)\w*ps\s+.*%([xyz]mm)\d+\s*(?:\{[^}]*\}\s*)*$")
_VECTOR_STORE = re.compile(r"^\s*v\w*mov\w*\s+%[xyz]mm\d+,\s*[^%\s][^,]*\(")
_STACK_VECTOR_ACCESS = re.compile(r"%[xyz]mm\d+.*\(%rsp\)|\(%rsp\).*%[xyz]mm\d+")
_LABEL = re.compile(r"^([.\w$]+):")
_JUMP = re.compile(r"^\s*j\w+\s+([.\w$]+)\s*$")
_FUNCTION_TYPE = re.compile(r"^\s*\.type\s+([.\w$]+),@function", re.MULTILINE)


@dataclass
class LoopAsm:
    """One loop of a function: the lines from its head label to its backward jump."""

    first_line: int
    last_line: int
    packed_fma_by_bits: Counter = field(default_factory=Counter)
    stack_vector_accesses: int = 0  # spills and reloads
    vector_stores: int = 0

    @property
    def packed_fmas(self) -> int:
        return sum(self.packed_fma_by_bits.values())


@dataclass
class FunctionAsm:
    """One function's packed FMAs, and its hot loop (None when it has no loop with FMAs)."""

    name: str
    packed_fma_by_bits: Counter = field(default_factory=Counter)
    hot_loop: LoopAsm | None = None


@dataclass
class AsmReport:
    functions: dict[str, FunctionAsm]

    @property
    def packed_fma_by_bits(self) -> Counter:
        total: Counter = Counter()
        for function in self.functions.values():
            total.update(function.packed_fma_by_bits)
        return total

    @property
    def widest_fma_bits(self) -> int:
        return max(self.packed_fma_by_bits, default=0)

    def hot_loops(self) -> list[LoopAsm]:
        return [function.hot_loop for function in self.functions.values() if function.hot_loop is not None]

    @property
    def hot_loop_spills(self) -> int:
        """Vector spills/reloads to the stack inside the hot loops (0 for a tile that fits)."""
        return sum(loop.stack_vector_accesses for loop in self.hot_loops())

    @property
    def hot_loop_vector_stores(self) -> int:
        """Vector stores inside the hot loops (0 when the accumulators stay in registers)."""
        return sum(loop.vector_stores for loop in self.hot_loops())


def _split_functions(text: str) -> dict[str, list[str]]:
    names = set(_FUNCTION_TYPE.findall(text))
    functions: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        label = _LABEL.match(line)
        if label and label.group(1) in names:
            current = functions.setdefault(label.group(1), [])
            continue
        if current is not None:
            current.append(line.split("#", 1)[0].rstrip())
    return functions


def _loop(lines: list[str], first: int, last: int) -> LoopAsm:
    loop = LoopAsm(first, last)
    for line in lines[first : last + 1]:
        fma = _PACKED_FMA.match(line)
        if fma:
            loop.packed_fma_by_bits[_VECTOR_REGISTER_BITS[fma.group(1)]] += 1
        loop.stack_vector_accesses += bool(_STACK_VECTOR_ACCESS.search(line))
        loop.vector_stores += bool(_VECTOR_STORE.match(line))
    return loop


def _analyse_function(name: str, lines: list[str]) -> FunctionAsm:
    function = FunctionAsm(name)
    for line in lines:
        fma = _PACKED_FMA.match(line)
        if fma:
            function.packed_fma_by_bits[_VECTOR_REGISTER_BITS[fma.group(1)]] += 1
    labels = {match.group(1): index for index, line in enumerate(lines) if (match := _LABEL.match(line))}
    loops = [
        _loop(lines, labels[jump.group(1)], index)
        for index, line in enumerate(lines)
        if (jump := _JUMP.match(line)) and labels.get(jump.group(1), index + 1) <= index
    ]
    with_fmas = [loop for loop in loops if loop.packed_fmas]
    innermost = [loop for loop in with_fmas if not any(_strictly_contains(loop, other) for other in with_fmas)]
    if innermost:
        function.hot_loop = max(innermost, key=lambda loop: loop.packed_fmas)
    return function


def _strictly_contains(outer: LoopAsm, inner: LoopAsm) -> bool:
    return (
        outer.first_line <= inner.first_line
        and inner.last_line <= outer.last_line
        and (outer.first_line, outer.last_line) != (inner.first_line, inner.last_line)
    )


def analyse_asm(text: str) -> AsmReport:
    """Per-function packed FMA counts and the hot loop's spills and stores, from x86 AT&T assembly."""
    return AsmReport({name: _analyse_function(name, lines) for name, lines in _split_functions(text).items()})
