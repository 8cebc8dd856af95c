"""Workloads: model configs, real weights (MiniLM), quantisation, GEMM tiling onto the macro."""
