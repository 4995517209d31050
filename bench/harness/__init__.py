"""Adapters that let the public benchmark harnesses drive Curator DB.

- `annb_curator/`: an ann-benchmarks algorithm folder (module.py, config.yml, Dockerfile);
  unfiltered search, every vector owned by one tenant.
- `bigann_curator/`: a big-ann-benchmarks filter-track algorithm (labels = tenants).
- `engine.py`: the Curator side both share; `stage.py`: puts a folder, with Curator's
  sources, into a harness checkout so that the harness's installer builds its image.
Neither adapter imports its harness at module import time; both run in-process by default
(the Database facade on a temporary directory) or against a Curator server over gRPC
(`mode`). Each folder's README.md has the install steps and what the harness measures.
"""
