"""SUBP itself: block importance and uniform masks (``masks``), the masked conv trained with them
(``modules``), the compact 1xN conv it becomes (``block_sparse``), the sparsity configuration
(``config``), and the small shared pieces (``conv_geometry``, ``seeding``). No fx, no TVM."""
