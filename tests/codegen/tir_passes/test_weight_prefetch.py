"""The weight prefetch: which kernels get it, what the rewrite inserts, and that outputs do not change."""

from __future__ import annotations

import re

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from tvm import tirx  # noqa: E402
from tvm.tirx import ForKind, compilation_pipeline  # noqa: E402

from subp_fx.codegen.kernels.bf16_spec import Bf16ConvSpec  # noqa: E402
from subp_fx.codegen.kernels.block_sparse_conv import (  # noqa: E402
    PREFETCH_MAX_PIXELS,
    block_sparse_conv2d_primfunc,
    prefetches_weights,
)
from subp_fx.codegen.kernels.block_sparse_conv_bf16 import block_sparse_conv2d_bf16_primfunc  # noqa: E402
from subp_fx.codegen.kernels.block_sparse_conv_int8 import block_sparse_conv2d_int8_primfunc, kernel_values  # noqa: E402
from subp_fx.codegen.kernels.int8_spec import Int8ConvSpec  # noqa: E402
from subp_fx.codegen.kernels.isa import int8_path, vector_isa  # noqa: E402
from subp_fx.codegen.kernels.spec import BlockSparseConvSpec, ConvTile  # noqa: E402
from subp_fx.codegen.target import parse_target  # noqa: E402
from subp_fx.codegen.tir_passes.dynamic_tasks import dynamic_tasks  # noqa: E402
from subp_fx.codegen.tir_passes.pipeline import tir_pipeline  # noqa: E402
from subp_fx.codegen.tir_passes.weight_prefetch import (  # noqa: E402
    PREFETCH_AHEAD,
    prefetch_next_block_row,
    weight_prefetch,
)
from subp_fx.codegen.tuning.build import KERNEL_NAME, BlockSparseConv, compile_block_sparse_conv  # noqa: E402

ZEN4 = parse_target("llvm -mcpu=znver4")
AVX2 = parse_target("llvm -mcpu=znver3")
_LOWERED: list[str] = []


def _capture(func, _mod, _ctx):
    _LOWERED.append(func.script())
    return func


def _pipeline(name: str, prefetch: bool) -> str:
    if name not in compilation_pipeline.PIPELINE_MAP:

        def factory(**_options):
            lowering, finalize_host, finalize_device = tvm.s_tir.pipeline.default_s_tir_pipeline()
            capture = tvm.tirx.transform.prim_func_pass(opt_level=0, name="capture")(_capture)
            passes = [lowering] + ([weight_prefetch()] if prefetch else []) + [capture, dynamic_tasks(2)]
            return tvm.transform.Sequential(passes), finalize_host, finalize_device

        compilation_pipeline.register_tir_pipeline(name, factory)
    return name


def _build(spec, tile, target, prefetch: bool) -> tuple[BlockSparseConv, str]:
    func = block_sparse_conv2d_primfunc(spec, tile, vector_isa(target)).with_attr("global_symbol", KERNEL_NAME)
    name = _pipeline(f"test.weight_prefetch.{prefetch}", prefetch)
    _LOWERED.clear()
    executable = tvm.compile(tvm.IRModule({KERNEL_NAME: func}), target=target, tir_pipeline=name)
    return BlockSparseConv(spec, tile, target, executable.jit()), _LOWERED[-1]


def _prefetched_offsets(lowered: str, buffer: str = "values_1") -> list[str]:
    return re.findall(rf'"llvm\.prefetch(?:\.p0)?", T\.address_of\({buffer}\[(.*?)\]\)', lowered)


@pytest.mark.parametrize(("kernel", "block_size", "lines_per_step"), [(1, 16, 1), (3, 16, 9), (3, 32, 18), (1, 8, 1)])
def test_one_prefetch_per_weight_line_of_a_step_one_block_row_ahead(kernel, block_size, lines_per_step):
    kept = 5
    spec = BlockSparseConvSpec(1, 7, 7, 24, 64, block_size, kept, kernel, 1, kernel // 2, bias=True)
    _, lowered = _build(spec, ConvTile(1, 7, parallel="block_rows"), ZEN4, prefetch=True)
    offsets = _prefetched_offsets(lowered)
    distance = kept * kernel * kernel * block_size
    assert len(offsets) == lines_per_step
    assert all(offset.endswith(f" + {distance}") for offset in offsets)
    assert PREFETCH_AHEAD not in lowered


def test_large_outputs_get_no_prefetch():
    small = BlockSparseConvSpec(1, 28, 28, 16, 32, 16, 4, 1, 1, 0)
    large = BlockSparseConvSpec(1, 29, 29, 16, 32, 16, 4, 1, 1, 0)
    assert prefetches_weights(small) and not prefetches_weights(large)
    assert small.out_height * small.out_width == PREFETCH_MAX_PIXELS
    _, lowered = _build(large, ConvTile(1, 4, parallel="pixels"), ZEN4, prefetch=True)
    assert not _prefetched_offsets(lowered)


@pytest.mark.parametrize("target", [ZEN4, AVX2], ids=["avx512", "avx2"])
@pytest.mark.parametrize("parallel", ["block_rows", "pixels"])
def test_prefetching_changes_no_output(target, parallel):
    spec = BlockSparseConvSpec(2, 9, 9, 40, 48, 16, 7, 3, 2, 1, bias=True, residual=True, activation="relu")
    tile = ConvTile(1, 3, parallel=parallel)
    plain, _ = _build(spec, tile, target, prefetch=False)
    prefetching = compile_block_sparse_conv(spec, tile, target)  # the pipeline every kernel is built with
    assert "prefetcht1" in prefetching.asm()
    arguments = plain.random_arguments(seed=3)
    arrays = [argument.numpy() for argument in arguments[:-1]]
    names = [name for name in spec.argument_names() if name != "out"]
    np.testing.assert_array_equal(plain(**dict(zip(names, arrays))), prefetching(**dict(zip(names, arrays))))


def _lowered(func, target) -> str:
    name = _pipeline("test.weight_prefetch.True", True)
    _LOWERED.clear()
    tvm.compile(tvm.IRModule({"conv": func.with_attr("global_symbol", "conv")}), target=target, tir_pipeline=name)
    return _LOWERED[-1]


def test_the_int8_and_bf16_nests_prefetch_their_weight_words_one_block_row_ahead():
    int8 = Int8ConvSpec(1, 7, 7, 64, 32, 16, 4, 1, 1, 0, activation="relu")
    offsets = _prefetched_offsets(_lowered(block_sparse_conv2d_int8_primfunc(int8, None, ZEN4), ZEN4), "value_words")
    assert offsets and all(offset.endswith(" + 64") for offset in offsets)  # 4 kept words x 16 lanes
    bf16 = Bf16ConvSpec(1, 7, 7, 64, 32, 16, 8, 3, 1, 1)
    lowered = _lowered(block_sparse_conv2d_bf16_primfunc(bf16, None, ZEN4), ZEN4)
    offsets = _prefetched_offsets(lowered, "value_words")
    assert offsets and all(offset.endswith(f" + {8 * 9 * 16}") for offset in offsets)
    large = Int8ConvSpec(1, 56, 56, 64, 32, 16, 4, 1, 1, 0)
    assert not _prefetched_offsets(_lowered(block_sparse_conv2d_int8_primfunc(large, None, ZEN4), ZEN4), "value_words")


def test_the_grouped_pointwise_kernels_prefetch_too():
    from subp_fx.codegen.kernels.grouped_pointwise import grouped_pointwise_primfunc
    from subp_fx.codegen.kernels.grouped_pointwise_int8 import grouped_pointwise_int8_primfunc

    fp32 = BlockSparseConvSpec(1, 7, 7, 12, 32, 16, 8, 1, 1, 0)
    lowered = _lowered(grouped_pointwise_primfunc(fp32), ZEN4)
    assert _prefetched_offsets(lowered) and all(o.endswith(" + 128") for o in _prefetched_offsets(lowered))
    int8 = Int8ConvSpec(1, 7, 7, 64, 32, 16, 8, 1, 1, 0)
    lowered = _lowered(grouped_pointwise_int8_primfunc(int8, int8_path(ZEN4)), ZEN4)
    assert _prefetched_offsets(lowered, "value_words")


def test_prefetching_changes_no_int8_output():
    host = parse_target("llvm -mcpu=native")
    path = int8_path(host)
    spec = Int8ConvSpec(1, 7, 7, 64, 32, 16, 5, 3, 1, 1, activation="relu")
    func = block_sparse_conv2d_int8_primfunc(spec, None, path).with_attr("global_symbol", "conv")
    rng = np.random.default_rng(0)
    arrays = {
        "data": rng.integers(0, 256, spec.data_shape, dtype=np.uint8),
        "values": kernel_values(rng.integers(-128, 128, spec.values_shape, dtype=np.int8), path),
        "group_starts": np.stack([np.sort(rng.choice(16, 5, replace=False)) * 4 for _ in range(2)]).astype(np.int32),
        "scale": np.full(32, 1e-3, np.float32),
        "bias": rng.standard_normal(32).astype(np.float32),
    }
    outputs = []
    for pipeline in ("default", tir_pipeline(host, 2)):
        lib = tvm.compile(tvm.IRModule({"conv": func}), target=host, tir_pipeline=pipeline)
        out = tvm.runtime.empty(spec.out_shape, spec.out_dtype)
        lib["conv"](*[tvm.runtime.tensor(arrays[name]) for name in spec.argument_names()[:-1]], out)
        outputs.append(out.numpy())
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert np.abs(outputs[0]).max() > 0


def test_the_rewrite_appends_after_the_body_and_drops_the_annotation():
    """A hand-built loop: two loads in one line, one in the next, one of another buffer."""
    values = tirx.decl_buffer((256,), "float32", "values_1")
    other = tirx.decl_buffer((256,), "float32", "data_1")
    out = tirx.decl_buffer((64,), "float32", "out")
    k = tirx.Var("k", "int32")

    def ramp(buffer, offset):
        return tirx.BufferLoad(buffer, [tirx.Ramp(k * 32 + offset, 1, 8)])

    stores = [
        tirx.BufferStore(out, ramp(values, 0) + ramp(other, 0), [tirx.Ramp(0, 1, 8)]),
        tirx.BufferStore(out, ramp(values, 8), [tirx.Ramp(8, 1, 8)]),
        tirx.BufferStore(out, ramp(values, 16), [tirx.Ramp(16, 1, 8)]),
    ]
    plan = {"buffer": "values", "distance": 128, "line": 16}
    loop = tirx.For(k, 0, 4, ForKind.SERIAL, tirx.SeqStmt(stores), None, {PREFETCH_AHEAD: plan})
    rewritten = prefetch_next_block_row(loop)
    assert PREFETCH_AHEAD not in rewritten.annotations
    body = list(rewritten.body.seq)
    assert [str(statement) for statement in body[:3]] == [str(statement) for statement in stores]
    prefetches = body[3:]
    assert len(prefetches) == 2 and all("llvm.prefetch" in str(statement) for statement in prefetches)
    assert "k * 32 + 128" in str(prefetches[0]) and "k * 32 + 16 + 128" in str(prefetches[1])
