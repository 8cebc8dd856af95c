"""Verification closure (issue 14): code and functional coverage, formal proofs, 4-state X
checks and an area/timing proxy, each behind ``cimphony verify`` (``docs/verification.md``)."""
