"""ann-benchmarks algorithm folder for Curator DB (module.py holds the wrapper class)."""
