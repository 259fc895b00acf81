"""A design measured and not adopted: the fp32 1x1 block-sparse conv computed pixel-major.

Our NHWC kernel broadcasts one activation per pixel into the N=16 output channels of a block-row:
one broadcast load per FMA, and an Ice Lake server core issues one 512-bit load per cycle against
two FMAs (``load_ports.py``), so 1x1 convs run at about half the FMA rate. Pixel-major turns it
around: a tile of 48 output pixels is transposed into a scratch of [input channel][48 pixels]
(16x16 register transposes), and each kept channel's 3 pixel vectors are multiplied by the
broadcast weights of 8 output channels: 3 vector loads and 8 broadcasts per 24 FMAs. The 16
channels of a block-row are transposed back (again in registers) and written NHWC with bias and
ReLU.

This script builds that kernel as TIR, checks it against numpy, and times it beside our NHWC
kernel (heuristic tile) on ResNet-50's 1x1 shapes at 50% keep, 2 threads, interleaved; with
``--parts`` it also times the kernel without the transposition in, without the one out, and
without both. Measured 2026-11-30 (Intel Xeon Ice Lake server, 2 threads, two runs): without the
transpositions the loop ran 1.25-1.9x the NHWC kernel's rate on the 56-14 px layers (256->64 at
56x56: 146 against 80 GMAC/s; none at 7x7, whose 49 pixels fill two tiles of 48), but the
transpositions cost about as much (that layer 323 us whole, 176 us without them), so whole it was
0.77-1.22x the NHWC kernel. It would pay only with activations stored pixel-major between layers,
a change to every kernel of the model, not attempted.

    python benchmarks/pixel_major_1x1.py [--parts]
"""

from __future__ import annotations

import argparse
import math

import numpy as np

TILE_PIXELS = 48  # 3 vectors of 16 pixels
HALF = 8  # output channels per pass: 8 x 3 accumulators + 3 pixel vectors + 1 weight = 28 zmm
LANES = 16
FLOAT = "float32"
VECTOR = f"{FLOAT}x{LANES}"

# (height, C_in, C_out, kept per block-row, stride, residual): ResNet-50's 1x1 convs at 50% keep
SHAPES = [
    (56, 256, 64, 128, 1, False),
    (56, 64, 256, 32, 1, True),
    (28, 512, 128, 256, 1, False),
    (28, 128, 512, 64, 1, True),
    (14, 1024, 256, 512, 1, False),
    (14, 256, 1024, 128, 1, True),
    (7, 2048, 512, 1024, 1, False),
    (7, 512, 2048, 256, 1, True),
]


def _transpose16(rows, tirx):
    """16 float32x16 expressions (row i) -> (statements, 16 variables: column j), by four rounds
    of two-vector shuffles."""
    statements, current = [], []
    for index, row in enumerate(rows):
        var = tirx.Var(f"row{index}", VECTOR)
        statements.append(tirx.Bind(var, row))
        current.append(var)
    for bit in range(4):
        step, following = 1 << bit, [None] * 16
        for index in range(16):
            if index & step:
                continue
            low, high = [], []
            for lane in range(16):
                block, offset = divmod(lane, 2 * step)
                if offset < step:
                    low.append(block * 2 * step + offset)
                    high.append(block * 2 * step + offset + step)
                else:
                    low.append(16 + block * 2 * step + offset - step)
                    high.append(16 + block * 2 * step + offset)
            for target, lanes, name in ((index, low, "low"), (index | step, high, "high")):
                var = tirx.Var(f"{name}{bit}_{index}", VECTOR)
                pair = [current[index], current[index | step]]
                statements.append(tirx.Bind(var, tirx.Shuffle(pair, [tirx.const(lane, "int32") for lane in lanes])))
                following[target] = var
        current = following
    return statements, current


def build(height, in_channels, out_channels, kept, stride=1, residual=False, transpose_in=True, write_out=True):
    """The pixel-major kernel as a PrimFunc (data, values, indices, bias[, residual], out), ReLU."""
    from tvm import tirx
    from tvm.tirx import ForKind

    N, width = 16, height
    rows, out_height = out_channels // N, (height - 1) // stride + 1
    pixels, vectors = out_height * out_height, TILE_PIXELS // LANES
    data = tirx.decl_buffer((1, height, width, in_channels), FLOAT, "data")
    values = tirx.decl_buffer((rows, kept, 1, 1, N), FLOAT, "values")
    indices = tirx.decl_buffer((rows, kept), "int32", "indices")
    bias = tirx.decl_buffer((out_channels,), FLOAT, "bias")
    residual_buffer = tirx.decl_buffer((1, out_height, out_height, out_channels), FLOAT, "residual")
    out = tirx.decl_buffer((1, out_height, out_height, out_channels), FLOAT, "out")
    tile = tirx.Var("tile", "int32")
    first = tile * TILE_PIXELS
    scratch = tirx.decl_buffer((in_channels * TILE_PIXELS,), FLOAT, "scratch", scope="global")
    result = tirx.decl_buffer((N * TILE_PIXELS,), FLOAT, "result", scope="global")

    def pixel(index):  # clamped into the output: the last tile's spare pixels read real memory
        clamped = tirx.min(index, pixels - 1)
        return clamped // out_height, clamped % out_height

    block = tirx.Var("channel_block", "int32")
    statements = []
    for part in range(vectors):
        loads = []
        for row in range(16):
            oh, ow = pixel(first + part * 16 + row)
            loads.append(data[0, oh * stride, ow * stride, tirx.Ramp(block * 16, 1, 16)])
        shuffles, columns = _transpose16(loads, tirx)
        statements += shuffles
        for column in range(16):
            at = tirx.Ramp((block * 16 + column) * TILE_PIXELS + part * 16, 1, 16)
            statements.append(tirx.BufferStore(scratch, columns[column], [at]))
    transpose = tirx.For(block, 0, in_channels // 16, ForKind.SERIAL, tirx.SeqStmt(statements))

    row = tirx.Var("block_row", "int32")
    passes = []
    for half in range(N // HALF):
        sums = [tirx.decl_buffer((vectors * LANES,), FLOAT, f"sums{half}_{j}", scope="global") for j in range(HALF)]
        k, channel = tirx.Var("k", "int32"), tirx.Var("channel", "int32")
        steps = [tirx.Bind(channel, indices[row, k])]
        inputs = []
        for part in range(vectors):
            var = tirx.Var(f"x{part}", VECTOR)
            steps.append(tirx.Bind(var, scratch[tirx.Ramp(channel * TILE_PIXELS + part * LANES, 1, LANES)]))
            inputs.append(var)
        for j in range(HALF):
            weight = tirx.Var(f"w{j}", VECTOR)
            steps.append(tirx.Bind(weight, tirx.Broadcast(values[row, k, 0, 0, half * HALF + j], LANES)))
            for part in range(vectors):
                at = tirx.Ramp(part * LANES, 1, LANES)
                steps.append(tirx.BufferStore(sums[j], sums[j][at] + weight * inputs[part], [at]))
        zero = tirx.Broadcast(tirx.const(0, FLOAT), LANES)
        init = [tirx.BufferStore(s, zero, [tirx.Ramp(p * LANES, 1, LANES)]) for s in sums for p in range(vectors)]
        save = [
            tirx.BufferStore(
                result,
                sums[j][tirx.Ramp(part * LANES, 1, LANES)],
                [tirx.Ramp((half * HALF + j) * TILE_PIXELS + part * LANES, 1, LANES)],
            )
            for j in range(HALF)
            for part in range(vectors)
        ]
        reduction = tirx.For(k, 0, kept, ForKind.SERIAL, tirx.SeqStmt(steps))
        passes.append(tirx.SeqStmt([*[tirx.AllocBuffer(s) for s in sums], *init, reduction, *save]))

    def write(valid):
        statements = []
        channels = tirx.Ramp(row * N, 1, N)
        for part in range(vectors):
            loads = [result[tirx.Ramp(lane * TILE_PIXELS + part * 16, 1, 16)] for lane in range(16)]
            shuffles, columns = _transpose16(loads, tirx)
            statements += shuffles
            for index in range(min(16, valid - part * 16)):
                oh, ow = pixel(first + part * 16 + index)
                value = columns[index] + bias[channels]
                if residual:
                    value = value + residual_buffer[0, oh, ow, channels]
                value = tirx.max(value, tirx.Broadcast(tirx.const(0, FLOAT), N))
                statements.append(tirx.BufferStore(out, value, [0, oh, ow, channels]))
        return tirx.SeqStmt(statements)

    whole, rest = divmod(pixels, TILE_PIXELS)
    if not rest:
        write_back = write(TILE_PIXELS)
    elif not whole:
        write_back = write(rest)
    else:
        write_back = tirx.IfThenElse(tile < whole, write(TILE_PIXELS), write(rest))
    per_row = tirx.For(row, 0, rows, ForKind.SERIAL, tirx.SeqStmt(passes + ([write_back] if write_out else [])))
    body = tirx.SeqStmt(
        [tirx.AllocBuffer(scratch), tirx.AllocBuffer(result)] + ([transpose] if transpose_in else []) + [per_row]
    )
    arguments = [data, values, indices, bias] + ([residual_buffer] if residual else []) + [out]
    loop = tirx.For(tile, 0, math.ceil(pixels / TILE_PIXELS), ForKind.PARALLEL, body)
    return tirx.PrimFunc(arguments, loop).with_attr("tirx.noalias", True).with_attr("global_symbol", "pixel_major")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parts", action="store_true", help="also time the kernel without either transposition")
    args = parser.parse_args()

    import tvm

    from subp_fx.codegen.defaults import DEFAULT_TARGET
    from subp_fx.codegen.kernels.cache import l1_data_cache
    from subp_fx.codegen.kernels.isa import vector_isa
    from subp_fx.codegen.kernels.spec import BlockSparseConvSpec
    from subp_fx.codegen.kernels.tiling import heuristic_tile
    from subp_fx.codegen.target import parse_target
    from subp_fx.codegen.threads import set_num_threads
    from subp_fx.codegen.tuning.build import compile_block_sparse_conv

    set_num_threads(args.threads)
    target = parse_target(DEFAULT_TARGET)
    if vector_isa(target).name != "avx512":
        print(f"needs an AVX-512 target (16-lane vectors); {DEFAULT_TARGET} is {vector_isa(target).name}")
        return 0
    rng = np.random.default_rng(0)
    for height, c_in, c_out, kept, stride, residual in SHAPES:
        rows, out_height = c_out // 16, (height - 1) // stride + 1
        x = rng.standard_normal((1, height, height, c_in)).astype(np.float32)
        values = rng.standard_normal((rows, kept, 1, 1, 16)).astype(np.float32)
        indices = np.stack([np.sort(rng.choice(c_in, kept, replace=False)) for _ in range(rows)]).astype(np.int32)
        bias = rng.standard_normal(c_out).astype(np.float32)
        skip = rng.standard_normal((1, out_height, out_height, c_out)).astype(np.float32)
        weight = np.zeros((c_out, c_in), np.float32)
        for r in range(rows):
            weight[r * 16 : (r + 1) * 16, indices[r]] = values[r, :, 0, 0, :].T
        expected = np.maximum(x[:, ::stride, ::stride, :] @ weight.T + bias + (skip if residual else 0), 0)
        inputs = [x, values, indices, bias] + ([skip] if residual else [])
        arguments = [tvm.runtime.tensor(a) for a in inputs] + [tvm.runtime.empty(expected.shape, "float32")]
        variants = {"pixel-major": {}}
        if args.parts:
            variants |= {"no transpose in": {"transpose_in": False}, "no write": {"write_out": False}}
            variants |= {"compute only": {"transpose_in": False, "write_out": False}}
        timers = {}
        for name, options in variants.items():
            func = build(height, c_in, c_out, kept, stride, residual, **options)
            module = tvm.compile(tvm.IRModule({"pixel_major": func}), target=target)
            if not options:
                module["pixel_major"](*arguments)
                error = np.abs(arguments[-1].numpy() - expected).max() / np.abs(expected).max()
                assert error < 1e-5, f"pixel-major kernel differs from numpy by {error:.1e} of the max"
            timers[name] = module.mod.time_evaluator("pixel_major", tvm.cpu(), number=20, repeat=3)
        spec = BlockSparseConvSpec(
            1, height, height, c_in, c_out, 16, kept, 1, stride, 0, bias=True, residual=residual, activation="relu"
        )
        nhwc = compile_block_sparse_conv(spec, heuristic_tile(spec, vector_isa(target), l1_data_cache(target)), target)
        samples = {name: [] for name in timers} | {"NHWC kernel": []}
        for _ in range(4):  # interleaved blocks
            for name, timer in timers.items():
                samples[name] += timer(*arguments).results
            samples["NHWC kernel"] += [ms / 1e3 for ms in nhwc.time_ms(repeats=3, repeat_ms=20)]
        macs = out_height * out_height * c_out * kept
        cells = [
            f"{name} {np.median(s) * 1e6:.0f} us ({macs / np.median(s) / 1e9:.0f} GMAC/s)"
            for name, s in samples.items()
        ]
        ratio = np.median(samples["NHWC kernel"]) / np.median(samples["pixel-major"])
        print(f"1x1/{stride} {c_in}->{c_out} @{height} K={kept}: " + ", ".join(cells) + f"; pixel-major {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
