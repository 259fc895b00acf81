"""Every hand-scheduled TIR kernel of the compiler, and what they share.

- ``spec`` / ``modes`` / ``isa``: what a block-sparse conv kernel is (its static shape, a schedule
  choice, the padding and parallel modes) and the SIMD unit it is scheduled for;
- ``block_sparse_conv`` (the 1xN kernel, dense convs included) and ``tiling`` (its register
  tiles and cost model);
- ``block_sparse_conv_int8`` (+ ``int8_spec``, ``int8_dot``): the int8 1xN kernel (uint8 x int8,
  VNNI ``vpdpbusd`` where the target has it, ``isa.int8_path`` picks), and ``quantize`` (float32
  <-> uint8, per tensor);
- ``depthwise``, ``linear``, ``pooling``, ``elementwise``, ``layout``: the kernels of the other ops;
- ``loops``: the loop-nest helpers they share (parallel + vector splits, bounds conditions);
- ``packing``: the numpy weight layout the block-sparse kernel reads.

Every builder returns a scheduled ``tirx.PrimFunc`` whose last buffer argument is its output,
ready for a Relax ``call_tir``. Nothing here reads a torch.fx graph (that is ``lowering``).
"""
