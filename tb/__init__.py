"""cimphony testbenches: Verilator environment, cocotb lockstep benches, C++ trace harness."""
