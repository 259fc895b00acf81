"""Training: the SUBP trainer (``trainer``), its checkpoint schema (``checkpoint``), distributed
helpers (``distributed``), optimiser and LR schedule (``optim``) and metrics (``metrics``)."""
