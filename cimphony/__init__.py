"""cimphony: the `cimphony` command and toolchain compatibility hooks."""
