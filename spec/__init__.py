"""Shared specification: macro parameters and packed field layouts (params), the ISA (isa). Imported by every level."""
