"""The in-memory index: one shared clustering tree, per-tenant sub-trees, one vector store.

Modules: `curator_index` (CuratorIndex, the entry class), `tree` (shared clustering tree),
`tenant_tree` (a tenant's sub-tree of shortlists), `vector_store` (the vectors, stored once),
`sorted_map` (compact id and access maps), `kernels` (compiled search kernels), `snapshot`
(index state as named arrays), `graph` / `graph_kernels` (proximity graph over the store's
slots), `planner` (exact / tree / graph per query); predicates over labels are `curator.predicate`.
"""

from curator.index.curator_index import CuratorIndex

__all__ = ["CuratorIndex"]
