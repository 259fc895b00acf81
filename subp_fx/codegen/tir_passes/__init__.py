"""TIR passes subp-fx adds to TVM's lowering of every kernel (``pipeline.tir_pipeline``)."""
