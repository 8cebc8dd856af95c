"""The ``cimphony`` command (placeholder; being rewritten)."""
import sys
def main(argv=None):
    print("cimphony: not yet"); return 2
