"""Templates -> files: the backbone package, the benchmark YAML and every YAML derived from it."""
