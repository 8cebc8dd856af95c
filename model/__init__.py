"""cimphony golden models, shared specifications and workloads (pure Python / numpy)."""
