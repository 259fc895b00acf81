"""Hand-scheduled TIR kernels. For now: the uniform 1xN block-sparse conv2d (NHWC)."""

from subp_fx.codegen.kernels.block_sparse_conv import ACTIVATIONS, BlockSparseConvSpec, block_sparse_conv2d_primfunc
from subp_fx.codegen.kernels.build import (
    BlockSparseConv,
    build_block_sparse_conv,
    choose_tile,
    compile_block_sparse_conv,
)
from subp_fx.codegen.kernels.tiling import ConvTile, VectorISA, heuristic_tile, tile_candidates, vector_isa

__all__ = [
    "ACTIVATIONS",
    "BlockSparseConv",
    "BlockSparseConvSpec",
    "ConvTile",
    "VectorISA",
    "block_sparse_conv2d_primfunc",
    "build_block_sparse_conv",
    "choose_tile",
    "compile_block_sparse_conv",
    "heuristic_tile",
    "tile_candidates",
    "vector_isa",
]
