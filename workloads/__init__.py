"""Workloads: model configs (``configs/``), real weights (MiniLM), quantisation, GEMM tiling
onto the macro, request-length mixes (``mix``)."""
