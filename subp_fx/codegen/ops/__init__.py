"""Scheduled TIR kernels for the ops around the block-sparse convs, one module per kind of op.

Every function here returns a ``tirx.PrimFunc`` that is already scheduled (parallel outer loop,
vectorised inner loop over the NHWC channel axis or the flattened tensor) and whose last buffer
argument is its output, ready for a Relax ``call_tir``. Nothing here knows about torch.fx: the
whole-model lowering (``subp_fx.codegen.lower``) reads the graph and calls these builders.

- ``depthwise``: depthwise conv2d (NHWC, bias and activation fused);
- ``linear``: fully connected layer on a prepacked weight (bias and activation fused);
- ``pooling``: max pool, average pool, global average pool;
- ``elementwise``: add, relu/relu6/hardswish, per-channel affine (an unfolded batch norm);
- ``layout``: NCHW <-> NHWC transposes, channel slice (drops a padded conv's extra channels),
  channel concat.
"""
