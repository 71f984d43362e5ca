"""The check ladder: its types, one module per check, the benchmark run last."""
