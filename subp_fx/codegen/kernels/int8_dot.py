"""The int8 kernel's inner step as TIR vector expressions, one form per :class:`Int8Path`.

One step: ``acc[j] += sum_{i<4} u8(x >> 8i) * s8(w[j] >> 8i)`` for the L int32 lanes j of a vector,
where ``x`` is one int32 word (4 uint8 activations of one pixel, broadcast to every lane) and
``w`` an int32xL vector (lane j: the 4 int8 weights of output channel j). A step is split in two
so that the weight work is done once per reduction step and shared by every pixel of the tile:
:func:`prepare_weights` (per weight vector) and :func:`accumulate` (per pixel).

- ``vpdpbusd`` (VNNI): the word and the vector go to the instruction as they are;
- ``pmaddwd``: weights as int16 pairs (bytes 0-1, bytes 2-3), sign-extended either per step by
  shifts (:func:`prepare_weights`) or, in the conv kernel, once when packed
  (:func:`pack_weight_pairs`, :func:`weights_in_pairs`) so that ``vpmaddwd`` reads them as loaded;
  activations broadcast as a word and zero-extended to int16 pairs by a byte shuffle against zeros
  (``vpshufb``); ``pmaddwd`` sums 2 int16 products per int32 lane, exactly
  (|255 * -128 * 2| < 2^31). Each step's sum is fenced (:func:`_fenced`, no instruction): LLVM
  otherwise reassociates the integer adds across the unrolled taps and keeps every product live.
  ResNet-18 60/128 int8 in haswell code (Ice Lake server, 2 threads, interleaved with its fp32
  build): scalar byte extraction 39.7 ms (fp32 18.4), the byte shuffle 26.3 (16.8), with packed pairs
  and the fence 0.94-1.65x the fp32 speed over six runs, 0.96x in ``benchmarks/int8_paths.py``;
- ``int32``: 4 widened products per lane in plain int32 arithmetic, which LLVM vectorises.

LLVM 22's ``vpdpbusd`` takes its byte operands as <4L x i8> (TVM 0.27's shipped tensor intrinsic
still passes <L x i32> and does not build with it; its ``tensorize`` also crashed here), so the
operands are reinterpreted to int8x(4L).
"""

from __future__ import annotations

import numpy as np
from tvm import tirx

from subp_fx.codegen.errors import KernelSpecError
from subp_fx.codegen.kernels.isa import Int8Path

WORD = "int32"


def _const(value: int, lanes: int = 1):
    scalar = tirx.const(value, WORD)
    return scalar if lanes == 1 else tirx.Broadcast(scalar, lanes)


def _signed_byte(word, index: int, lanes: int):
    """Byte ``index`` of each int32 lane, sign-extended (arithmetic shifts)."""
    return tirx.shift_right(tirx.shift_left(word, _const(24 - 8 * index, lanes)), _const(24, lanes))


def _unsigned_byte(word, index: int):
    return tirx.bitwise_and(tirx.shift_right(word, _const(8 * index)), _const(0xFF))


def _int16_pair(low, high, lanes: int):
    """Two values that fit int16 packed as the low / high half of each int32 lane."""
    return tirx.bitwise_or(tirx.bitwise_and(low, _const(0xFFFF, lanes)), tirx.shift_left(high, _const(16, lanes)))


def _fenced(acc, lanes: int):
    """``acc`` as it is, behind a fence LLVM's reassociation cannot see through (no instruction)."""
    as_float = tirx.reinterpret(f"float32x{lanes}", acc)
    fenced = tirx.call_llvm_pure_intrin(f"float32x{lanes}", "llvm.arithmetic.fence", as_float)
    return tirx.reinterpret(f"{WORD}x{lanes}", fenced)


def weights_in_pairs(path: Int8Path) -> bool:
    """Whether the conv kernel on ``path`` reads its weights already as the int16 pairs ``pmaddwd``
    takes (:func:`pack_weight_pairs`), rather than as 4 int8 bytes a lane to prepare each step."""
    return path.dot == "pmaddwd"


def pack_weight_pairs(values: np.ndarray) -> np.ndarray:
    """int8 weights (..., N, 4) as int16 (..., 2, N, 2): pair i of lane j is (w[j, 2i], w[j, 2i+1])."""
    *leading, lanes, group = values.shape
    pairs = values.astype(np.int16).reshape(*leading, lanes, 2, 2)
    return np.ascontiguousarray(np.moveaxis(pairs, -2, -3))


def prepare_weights(path: Int8Path, weights) -> list:
    """The per-step forms of an int32xL weight vector the path's :func:`accumulate` takes."""
    lanes = path.lanes
    if path.dot == "vpdpbusd":
        return [tirx.reinterpret(f"int8x{4 * lanes}", weights)]
    if path.dot == "pmaddwd":
        return [
            tirx.reinterpret(
                f"int16x{2 * lanes}",
                _int16_pair(_signed_byte(weights, 2 * pair, lanes), _signed_byte(weights, 2 * pair + 1, lanes), lanes),
            )
            for pair in (0, 1)
        ]
    if path.dot == "int32":
        return [_signed_byte(weights, index, lanes) for index in range(4)]
    raise KernelSpecError(f"unknown int8 dot product {path.dot!r}; valid are vpdpbusd, pmaddwd, int32")


def accumulate(path: Int8Path, acc, word, weights: list):
    """``acc`` (int32xL) plus the 4-byte dot products of the activation ``word`` (int32 scalar)
    with the weight vector prepared by :func:`prepare_weights`."""
    lanes = path.lanes
    vector = f"{WORD}x{lanes}"
    if path.dot == "vpdpbusd":
        (bytes_,) = weights
        broadcast = tirx.reinterpret(f"int8x{4 * lanes}", tirx.Broadcast(word, lanes))
        return tirx.call_llvm_pure_intrin(vector, path.intrinsic, acc, broadcast, bytes_)
    if path.dot == "pmaddwd":
        # The word broadcast once, then each pair's two bytes zero-extended to int16 in every lane by
        # one byte shuffle against zeros (vpshufb).
        bytes_ = tirx.reinterpret(f"uint8x{4 * lanes}", tirx.Broadcast(word, lanes))
        zeros = tirx.Broadcast(tirx.const(0, "uint8"), 4 * lanes)
        for pair, pair_weights in enumerate(weights):
            picks = [
                index
                for lane in range(lanes)
                for byte in (2 * pair, 2 * pair + 1)
                for index in (4 * lane + byte, 4 * lanes)  # the byte, then a zero byte above it
            ]
            pair_bytes = tirx.Shuffle([bytes_, zeros], [tirx.const(index, "int32") for index in picks])
            broadcast = tirx.reinterpret(f"int16x{2 * lanes}", pair_bytes)
            acc = acc + tirx.call_llvm_pure_intrin(vector, path.intrinsic, broadcast, pair_weights)
        return _fenced(acc, lanes)
    for index, lane_weights in enumerate(weights):
        acc = acc + lane_weights * tirx.Broadcast(_unsigned_byte(word, index), lanes)
    return acc
