"""Tools on top of the two halves: FLOP counts (``flops``), the load-balance simulation
(``load_balance``), the latency harness (``latency``), and the compiled artefact with its
``eval`` and ``bench`` (``artifact``, ``evaluate``, ``benchmark``)."""
