"""cimphony hardware: Amaranth 0.5 components and Verilog export."""
