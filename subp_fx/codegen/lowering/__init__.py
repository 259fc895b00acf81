"""Graph to Relax: a folded, converted torch.fx GraphModule -> one Relax ``main`` of ``call_tir``
calls to the scheduled kernels of ``codegen.kernels``.

``lower.lower_graph`` drives it: ``preconditions`` (what the graph must already be),
``graph_view`` (shapes), ``rules`` (the node -> handler table), ``fusion`` (epilogues), the handlers
(``conv``, ``depthwise``, ``linear``, ``ops``, ``channels``) with their shared ``context``, ``program`` (the
Relax builder) and ``weights`` (torch parameters as kernel arrays).
"""
