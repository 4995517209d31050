"""Adapters that let the public benchmark harnesses drive Curator DB.

- `annb_curator/`: an ann-benchmarks algorithm folder (module.py, config.yml, Dockerfile);
  unfiltered search, every vector owned by one tenant.
- `bigann_curator/`: a big-ann-benchmarks filter-track algorithm (labels = tenants).
Neither imports its harness at module import time; both run in-process by default (the
Database facade on a temporary directory) or against a Curator server over gRPC (`mode`).
"""
