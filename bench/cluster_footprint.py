"""etcd's footprint of the cluster registry: N tenants, each registered (id from the CAS
counter), placed, and given one API-key digest, through EtcdControl as the nodes write them.

    python -m bench.cluster_footprint [--tenants 10000] [--nodes 3] [--threads 4]

Starts a throwaway etcd on 127.0.0.1 (free ports) in a temporary directory, writes the
records from `threads` concurrent writers (a create is one transaction on the id counter,
retried when it loses the race; a key is one put), and prints etcd's database
size as written and after compaction and defragmentation (the issue's bar: < 50 MB for 10k
tenants), the wall time, and the load average: the box is shared, re-run on a quiet machine.
Needs the `etcd` binary and the cluster extra (aetcd).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

from curator.cluster.etcd_control import EtcdControl


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_etcd(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    port, peer = _free_port(), _free_port()
    url, purl = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{peer}"
    log = (root / "etcd.log").open("ab")
    proc = subprocess.Popen(
        [
            *("etcd", "--name", "bench", "--data-dir", str(root / "etcd")),
            *("--listen-client-urls", url, "--advertise-client-urls", url),
            *("--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl),
            *("--initial-cluster", f"bench={purl}"),
        ],
        stdout=log,
        stderr=log,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("etcd did not start") from None
            time.sleep(0.05)


def _db_size(ctl: EtcdControl) -> int:
    return int(ctl.run(ctl.client.status()).db_size)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tenants", type=int, default=10_000)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()
    if shutil.which("etcd") is None:
        sys.exit("no etcd binary on PATH (Debian: apt-get install etcd-server)")
    root = Path(tempfile.mkdtemp(prefix="curator-etcd-footprint-"))
    proc, port = _start_etcd(root)
    ctl = EtcdControl(f"127.0.0.1:{port}", timeout=10.0)
    try:
        ctl.start()
        empty = _db_size(ctl)

        def register(i: int) -> None:
            name = f"tenant-{i:06d}"
            ctl.create_tenant(name, f"n{i % args.nodes + 1}", group=f"g{i // 10}")
            digest = hashlib.sha256(f"cdb_key_{i}".encode()).hexdigest()
            ctl.put_key(digest, {"key_id": digest[:12], "tenant": name})

        t0 = time.perf_counter()
        with futures.ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(register, range(args.tenants)))
        took = time.perf_counter() - t0
        written = _db_size(ctl)
        rev = ctl.run(ctl.client.status()).raft_index
        header = ctl.run(ctl.client.get(b"/curator/v1/counters/tenant_id"))
        assert header is not None and int(header.value) == args.tenants
        ctl.run(ctl.client.compact(header.mod_revision, physical=True))
        ctl.run(ctl.client.defragment())
        compacted = _db_size(ctl)
    finally:
        ctl.close()
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)
    mb = 1e6
    print(
        f"{args.tenants} tenants (registry + placement + 1 key digest each, {args.nodes} nodes, "
        f"{args.threads} writers): "
        f"etcd db {written / mb:.1f} MB as written, {compacted / mb:.1f} MB after compaction "
        f"and defrag (empty {empty / mb:.2f} MB); {took:.1f} s to write "
        f"({2 * args.tenants / took:.0f} etcd writes/s, raft index {rev}); "
        f"loadavg {open('/proc/loadavg').read().split()[0]}"
    )


if __name__ == "__main__":
    main()
