"""Level 2, golden models: cycle- and bit-exact Python models of the macro, channel and module."""
