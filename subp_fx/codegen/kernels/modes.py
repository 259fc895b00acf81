"""The schedule modes of the block-sparse conv kernel: how padding is read, what one parallel task
computes. One table for the kernel generator, the tiling cost model and the load-balance
simulation (``subp_fx.tools.load_balance``), so the simulation cannot drift from the kernel.
Pure Python.
"""

PADDING_INLINE = "inline"
PADDING_STAGE = "stage"
PADDING_MODES = (PADDING_INLINE, PADDING_STAGE)

# What one parallel task computes. "block_rows": one block-row (N output channels) of one tile
# row of the output; a thread's run of tasks reuses that block-row's weights while the input
# streams past. "pixels": one tile row of the output for every block-row; the input tile stays in
# L1 while all the weights stream past. The first suits layers whose weights are large next to
# their input (deep 3x3 layers), the second layers with a large input and few block-rows (1x1
# layers at high resolution), which the first reads R times.
PARALLEL_BLOCK_ROWS = "block_rows"
PARALLEL_PIXELS = "pixels"
PARALLEL_MODES = (PARALLEL_BLOCK_ROWS, PARALLEL_PIXELS)
