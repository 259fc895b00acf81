"""A compiled model at run time: ``compiled`` (run, export, load), ``manifest`` (what an exported
directory holds) and ``kernel_table`` (what each layer runs). numpy and the TVM runtime only:
nothing here imports torch."""
