"""Per-node Bloom filters vs the exact per-tenant membership Curator DB keeps.

    python -m bench.membership [--synthetic-n 200000]

The paper gives every node of the shared tree a Bloom filter of the tenants with vectors under
it (sized for all tenants, 1% false positives: ~9.6 bits per tenant per node). This index
instead keeps, per tenant, the nodes of its sub-tree (shortlist holders and expanded nodes):
exact, and proportional to what tenants actually occupy. For each dataset this prints both
sizes: Bloom = nodes x ceil(9.59 x tenants / 8) bytes; exact = sub-tree entries x 8 bytes
(node id + tenant id, the compact encoding the snapshot uses) and the bytes of the Python
structures as built (dict/set entries, without the shortlists' slot arrays).
"""

from __future__ import annotations

import argparse
import math

from bench.baselines import CuratorBaseline
from bench.datasets import debian, synthetic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--synthetic-n", type=int, default=200_000)
    args = ap.parse_args()
    print(
        "| dataset | tree nodes | tenants | Bloom filters MiB | exact entries | exact, "
        "compact MiB | exact, as built MiB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for ds in (debian("tenant"), debian("label"), synthetic(args.synthetic_n)):
        m = CuratorBaseline()
        m.build(ds)
        idx = m.index
        nodes = len(idx._tree)
        tenants = len(idx.tenants())
        bloom = nodes * math.ceil(-math.log(0.01) / math.log(2) ** 2 * tenants / 8)
        trees = [t for t in idx._trees if t is not None]
        entries = sum(len(t.shortlists) + len(t.expanded) for t in trees)
        built = sum(t.nbytes - sum(a.nbytes for a in t.shortlists.values()) for t in trees)
        print(
            f"| {ds.name} | {nodes:,} | {tenants:,} | {bloom / 2**20:.1f} | {entries:,} | "
            f"{entries * 8 / 2**20:.2f} | {built / 2**20:.2f} |"
        )


if __name__ == "__main__":
    main()
