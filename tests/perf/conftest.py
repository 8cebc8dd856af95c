"""The perf tests' fixtures ``free_port`` and ``dask_cluster`` are in tests/conftest.py (shared
with tests/verif/test_regress.py)."""
