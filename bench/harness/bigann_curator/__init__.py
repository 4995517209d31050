"""big-ann-benchmarks (NeurIPS'23 filter track) algorithm for Curator DB."""
