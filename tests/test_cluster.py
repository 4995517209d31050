"""Cluster mode end to end: one etcd and three `python -m server --cluster` nodes on 127.0.0.1,
driven through the cluster SDK and through plain clients (any-node forwarding).

Skips when the etcd binary (Debian: etcd-server) or the aetcd client is missing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("aetcd", reason="the cluster extra (aetcd) is not installed")
if shutil.which("etcd") is None:
    pytest.skip(
        "no etcd binary on PATH (Debian: apt-get install etcd-server)", allow_module_level=True
    )

from client import Client, calls
from client.cluster import ClusterClient
from curator.cluster.etcd_control import EtcdControl
from curator.config import DatabaseConfig
from curator.database import Database
from curator.errors import (
    AlreadyExists,
    PermissionDenied,
    TenantMoved,
    Unauthenticated,
    Unavailable,
)
from server.health_probe import check
from tests.test_server_process import ADMIN_KEY

ROOT = Path(__file__).resolve().parents[1]
DIM = 16
GROUPS = {"n1": ["a1", "a2", "a3"], "n2": ["b1", "b2", "b3"], "n3": ["c1", "c2", "c3"]}
TENANTS = [t for ts in GROUPS.values() for t in ts]
PER_TENANT = 150


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURATOR_")}
    env["CURATOR_ADMIN_KEY"] = ADMIN_KEY  # the same admin key on every node
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@dataclass
class Cluster:
    tmp: Path
    etcd_port: int = 0
    peer_port: int = 0
    etcd: subprocess.Popen[bytes] | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    node_args: list[str] = field(default_factory=list)  # more flags for every node
    node_env: dict[str, str] = field(default_factory=dict)  # more environment for every node

    def start_etcd(self) -> None:
        if not self.etcd_port:
            self.etcd_port, self.peer_port = _free_port(), _free_port()
        peer = self.peer_port
        url, purl = f"http://127.0.0.1:{self.etcd_port}", f"http://127.0.0.1:{peer}"
        log = (self.tmp / "etcd.log").open("ab")
        self.etcd = subprocess.Popen(
            [
                *("etcd", "--name", "c1", "--data-dir", str(self.tmp / "etcd")),
                *("--listen-client-urls", url, "--advertise-client-urls", url),
                *("--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl),
                *("--initial-cluster", f"c1={purl}", "--auto-compaction-mode=revision"),
                "--auto-compaction-retention=1000",
            ],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.etcd_port), 0.2).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "etcd did not start"
                time.sleep(0.05)

    def stop_etcd(self) -> None:
        assert self.etcd is not None
        self.etcd.terminate()
        self.etcd.wait(10)

    def start_node(self, node: str, port: int = 0, extra: tuple[str, ...] = ()) -> None:
        port = port or self.ports.get(node) or _free_port()
        self.ports[node] = port
        log = (self.tmp / f"{node}.log").open("ab")
        self.procs[node] = subprocess.Popen(
            [
                *(sys.executable, "-m", "server", "--cluster", "--node-id", node),
                *("--etcd", f"127.0.0.1:{self.etcd_port}", "--address", f"127.0.0.1:{port}"),
                *("--data-dir", str(self.tmp / node), "--log-format", "text"),
                *self.node_args,
                *extra,
            ],
            stderr=log,
            cwd=ROOT,
            env={**_env(), **self.node_env},
        )

    def start_all(
        self, nodes: Iterable[str], extra: dict[str, tuple[str, ...]] | None = None
    ) -> None:
        """etcd, then `nodes` (each with its `extra` flags), until every one serves."""
        self.start_etcd()
        for n in nodes:
            self.start_node(n, extra=(extra or {}).get(n, ()))
        for n in nodes:
            self.wait_serving(n)

    def wait_serving(self, node: str, timeout: float = 120) -> float:
        """Seconds until the node's health is SERVING."""
        t0 = time.monotonic()
        while check(self.address(node), timeout=1) != "SERVING":
            assert self.procs[node].poll() is None, (self.tmp / f"{node}.log").read_text()
            assert time.monotonic() - t0 < timeout, f"{node} not SERVING"
            time.sleep(0.1)
        return time.monotonic() - t0

    def address(self, node: str) -> str:
        return f"127.0.0.1:{self.ports[node]}"

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.etcd is not None and self.etcd.poll() is None:
            self.etcd.kill()
            self.etcd.wait(10)


def _load(db: ClusterClient | Database, rng_seed: int = 7) -> float:
    """The same seeded data into a cluster or a single database; returns the fraction of
    grants whose owner and grantee live on different nodes (by group)."""
    rng = np.random.default_rng(rng_seed)
    home = {t: n for n, ts in GROUPS.items() for t in ts}
    vectors = {t: rng.standard_normal((PER_TENANT, DIM)).astype(np.float32) for t in TENANTS}
    for t in TENANTS:
        db.upsert("docs", np.arange(PER_TENANT), vectors[t], tenant=t)
    grants = []
    for t in TENANTS:
        for _ in range(2):
            same = [u for u in GROUPS[home[t]] if u != t]
            other = [u for u in TENANTS if home[u] != home[t]]
            to = str(rng.choice(other if rng.random() < 0.3 else same))
            ids = rng.choice(PER_TENANT, 20, replace=False)
            db.allow_sharing(t, to)
            db.grant("docs", ids, to, tenant=t)
            grants.append((t, ids, to))
    return sum(home[o] != home[g] for o, _, g in grants) / len(grants)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start_all(GROUPS)
        yield c
    finally:
        c.stop()


@pytest.mark.timeout(120)
def test_correctness_against_one_node(cluster: Cluster, tmp_path: Path) -> None:
    single = Database(DatabaseConfig(data_dir=str(tmp_path / "single")))
    with ClusterClient([cluster.address("n1")], ADMIN_KEY, timeout=20) as cc:
        cc.create_collection("docs", DIM)
        single.create_collection("docs", DIM)
        for node, ts in GROUPS.items():
            for t in ts:  # the group's first tenant takes the least-loaded (empty) node
                cc.create_tenant(t, group=f"g-{node}")
                single.create_tenant(t)
        homes = {t: p.node for t, p in cc.placements.items()}
        for ts in GROUPS.values():
            assert len({homes[t] for t in ts}) == 1  # co-located by group
        assert len(set(homes.values())) == 3
        cross = _load(cc)
        _load(single)
        assert 0.2 <= cross <= 0.4, cross
        cc.refresh()
        assert any(cc.readsets.values())  # cross-node grants recorded read sets

        q = np.random.default_rng(1).standard_normal((20, DIM)).astype(np.float32)
        checks = [[t] for t in TENANTS] + [["a1", "b2"], ["a2", "b1", "c3"]]
        for tenants in checks:
            got = cc.search("docs", q, k=10, tenant=tenants)
            want = single.search("docs", q, k=10, tenant=tenants)
            hits = sum(
                len(
                    {(o, int(i)) for o, i in zip(go, gi, strict=True) if o}
                    & {(o, int(i)) for o, i in zip(wo, wi, strict=True) if o}
                )
                for go, gi, wo, wi in zip(got.owners, got.ids, want.owners, want.ids, strict=True)
            )
            total = int(want.found.sum())
            assert hits / total >= 0.99, (tenants, hits, total)
            np.testing.assert_allclose(np.sort(got.distances, 1), np.sort(want.distances, 1), 1e-4)
        for t in TENANTS:  # own vectors and those granted to it, wherever they live
            assert cc.count("docs", tenant=t) == single.count("docs", tenant=t)
        want_count = single.count("docs", tenant="b1")
    single.close()

    # forwarding: a plain client on a node that is not the tenant's home gets the same answer
    t = "b1"
    other = next(n for n in GROUPS if n != homes[t])
    with Client(cluster.address(other), ADMIN_KEY, timeout=20) as plain:
        with Client(cluster.address(homes[t]), ADMIN_KEY, timeout=20) as direct:
            a = plain.search("docs", q, k=10, tenant=t)
            b = direct.search("docs", q, k=10, tenant=t)
            np.testing.assert_array_equal(a.ids, b.ids)
            assert a.owners == b.owners
            assert plain.count("docs", tenant=t) == want_count
            w = plain.upsert("docs", [999], q[:1], tenant=t)  # acknowledged by the home
            assert w.count == 1 and direct.get("docs", [999], tenant=t).ids.tolist() == [999]

    # no forwarding asked: TENANT_MOVED naming the home node, its address and epoch
    with Client(
        cluster.address(other), ADMIN_KEY, metadata=(("x-curator-route", "direct"),)
    ) as nofwd:
        with pytest.raises(TenantMoved) as moved:
            nofwd.count("docs", tenant=t)
        assert moved.value.node == homes[t] and moved.value.epoch == 1
        assert moved.value.address == cluster.address(homes[t])


@pytest.mark.timeout(60)
def test_tenant_keys_are_isolated_on_every_node(cluster: Cluster) -> None:
    with ClusterClient([cluster.address("n2")], ADMIN_KEY, timeout=20) as cc:
        cc.create_collection("iso", 4)
        cc.create_tenant("iso-x", group="gx")
        cc.create_tenant("iso-y")
        x = np.eye(4, dtype=np.float32)
        cc.upsert("iso", np.arange(4), x, tenant="iso-y")
        _, key = cc.issue_key("iso-x", "isolation test")
        home_y = cc.placements["iso-y"].node
    for node in GROUPS:  # a key issued on n2 works everywhere, and learns nothing of iso-y
        with Client(cluster.address(node), key, timeout=20) as kc:
            with pytest.raises(PermissionDenied):
                kc.search("iso", x, k=2, tenant="iso-y")
            with pytest.raises(PermissionDenied):
                kc.count("iso", tenant="iso-y")
            assert kc.search("iso", x, k=2).found.sum() == 0  # its own tenant: empty
            # forwarded to y's home, where it reads only what y granted it: nothing
            assert len(kc.get("iso", [0], owner="iso-y").ids) == 0
        with Client(cluster.address(node), key, metadata=(("x-curator-route", "direct"),)) as d:
            try:
                assert len(d.get("iso", [0], owner="iso-y").ids) == 0
            except TenantMoved:
                pytest.fail("a tenant key learned where another tenant lives")
    with ClusterClient([cluster.address("n3")], key, timeout=20) as kc2:
        assert set(kc2.placements) == {"iso-x"}  # its own placement only
        assert home_y and kc2.count("iso") == 0


@pytest.mark.timeout(120)
def test_kill9_of_a_data_node_under_writes(cluster: Cluster) -> None:
    with ClusterClient([cluster.address("n1")], ADMIN_KEY, timeout=5) as cc:
        cc.create_collection("k9", 8)
        for n in GROUPS:
            cc.create_tenant(f"k9-{n}", group=f"k9-{n}")
        victim = cc.placements["k9-n2"].node
        survivors = [t for t in (f"k9-{n}" for n in GROUPS) if cc.placements[t].node != victim]
        rng = np.random.default_rng(3)
        acked: list[int] = []
        stop = threading.Event()

        def writer() -> None:
            i = 0
            while not stop.is_set():
                try:
                    cc.upsert(
                        "k9", [i], rng.standard_normal((1, 8)).astype(np.float32), tenant="k9-n2"
                    )
                    acked.append(i)
                except Unavailable:
                    pass
                i += 1

        th = threading.Thread(target=writer)
        th.start()
        time.sleep(1.0)
        cluster.procs[victim].send_signal(signal.SIGKILL)
        cluster.procs[victim].wait(10)
        stop.set()
        th.join(10)
        assert len(acked) > 5
        q = np.ones((1, 8), np.float32)
        for t in survivors:  # other nodes' tenants: no errors
            cc.upsert("k9", [1], q, tenant=t)
            for _ in range(20):
                cc.search("k9", q, k=3, tenant=t)
        t0 = time.monotonic()
        with pytest.raises(Unavailable):
            cc.search("k9", q, k=3, tenant=[survivors[0], "k9-n2"], timeout=3)
        assert time.monotonic() - t0 < 5
        partial = cc.search("k9", q, k=3, tenant=[survivors[0], "k9-n2"], allow_partial=True)
        assert partial.found.sum() == 1 and cc.last_coverage[0] < cc.last_coverage[1]

        cluster.start_node(victim)
        took = cluster.wait_serving(victim)
        print(f"kill -9: {victim} back to SERVING in {took:.1f} s")
        cc.refresh()
        got = cc.get("k9", acked, tenant="k9-n2")
        assert sorted(got.ids.tolist()) == sorted(acked)  # every acknowledged write is there


@pytest.mark.timeout(60)
def test_sdk_follows_a_placement_flip(cluster: Cluster) -> None:
    """After the epoch CAS of a move (simulated here without the copy), the old home refuses
    direct calls with TENANT_MOVED and the SDK re-routes with one refresh, no ping-pong."""
    with ClusterClient([cluster.address("n3")], ADMIN_KEY, timeout=10) as cc:
        cc.create_collection("flip", 4)
        cc.create_tenant("flip-t")
        old = cc.placements["flip-t"]
        target = next(n for n in sorted(cc.nodes) if n != old.node)
        ctl = EtcdControl(f"127.0.0.1:{cluster.etcd_port}")
        ctl.start()
        try:
            stored = ctl.placement("flip-t")
            assert stored is not None and stored.node == old.node
            flipped = dataclasses.replace(stored, node=target, epoch=stored.epoch + 1)
            assert ctl.cas_placement(stored, flipped) is not None
            assert ctl.cas_placement(stored, flipped) is None  # a stale swap loses
        finally:
            ctl.close()
        x = np.eye(4, dtype=np.float32)

        def seen_by(node: str) -> bool:
            with Client(cluster.address(node), ADMIN_KEY, timeout=5) as c:
                p = c._run(calls.placement())[1].get("flip-t")  # None: not watched yet
                return p is not None and p.node == target

        _eventually(lambda: seen_by(old.node) and seen_by(target))  # the nodes' watches
        assert cc.placements["flip-t"].node == old.node  # the SDK's cache is stale
        assert cc.upsert("flip", np.arange(4), x, tenant="flip-t").count == 4
        assert cc.placements["flip-t"].node == target and cc.placements["flip-t"].epoch == 2
        with Client(
            cluster.address(old.node), ADMIN_KEY, metadata=(("x-curator-route", "direct"),)
        ) as stale:
            with pytest.raises(TenantMoved) as moved:
                stale.upsert("flip", [9], x[:1], tenant="flip-t")  # never acknowledged there
            assert (moved.value.node, moved.value.epoch) == (target, 2)
        assert cc.count("flip", tenant="flip-t") == 4


def _eventually(check_fn: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check_fn():
        assert time.monotonic() < deadline, "not propagated to every node in time"
        time.sleep(0.05)


def _works(address: str, key: str) -> bool:
    with Client(address, key, timeout=5) as c:
        try:
            c.server_info()
            return True
        except Unauthenticated:
            return False


@pytest.mark.timeout(60)
def test_keys_and_drops_reach_every_node(cluster: Cluster) -> None:
    addresses = [cluster.address(n) for n in GROUPS]
    with ClusterClient([addresses[0]], ADMIN_KEY, timeout=10) as cc:
        cc.create_tenant("kd-1")
        with Client(addresses[0], ADMIN_KEY) as n1:
            key_id, key = n1.issue_key("kd-1", "issued on n1")
        _eventually(lambda: all(_works(a, key) for a in addresses))  # each node's watch
        with Client(addresses[2], ADMIN_KEY) as n3:
            n3.revoke_key(key_id)  # revoked through another node: gone everywhere
        _eventually(lambda: not any(_works(a, key) for a in addresses))

        _, key2 = cc.issue_key("kd-1", "dropped with its tenant")
        _eventually(lambda: all(_works(a, key2) for a in addresses))
        cc.drop_tenant("kd-1")
        cc.create_tenant("kd-1")  # the same name again: a new tenant, none of the old keys
        _eventually(lambda: not any(_works(a, key2) for a in addresses))
        for a in addresses:
            with Client(a, ADMIN_KEY) as c:
                _eventually(lambda c=c: "kd-1" in c.list_tenants())


@pytest.mark.timeout(60)
def test_routing_overhead_is_reported(cluster: Cluster) -> None:
    """p50 of one search: to the home (SDK, direct), through another node (forwarded), and a
    union over three nodes against the same union on one node. Printed, not asserted: this
    machine is shared and contended; bench/RESULTS.md needs a quiet run."""
    with ClusterClient([cluster.address("n1")], ADMIN_KEY, timeout=10) as cc:
        cc.create_collection("ro", 8)
        names = [f"ro-{n}" for n in GROUPS]
        for t in names:
            cc.create_tenant(t, group=f"ro-{t}")
            x = np.random.default_rng(5).standard_normal((200, 8)).astype(np.float32)
            cc.upsert("ro", np.arange(200), x, tenant=t)
        assert len({cc.placements[t].node for t in names}) == 3
        q = np.ones((1, 8), np.float32)
        t = names[0]
        home = cc.placements[t].node
        other = next(n for n in GROUPS if n != home)

        def p50(fn: Callable[[], object], n: int = 200) -> float:
            for _ in range(20):
                fn()
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return float(np.median(times)) * 1e3

        with Client(cluster.address(other), ADMIN_KEY) as fwd:
            direct = p50(lambda: cc.search("ro", q, k=10, tenant=t))
            forwarded = p50(lambda: fwd.search("ro", q, k=10, tenant=t))
            union3 = p50(lambda: cc.search("ro", q, k=10, tenant=names))
            assert cc.search("ro", q, k=10, tenant=names).found.sum() == 10
    print(
        f"\nrouting p50 (ms): direct {direct:.2f}, forwarded {forwarded:.2f} "
        f"(+{forwarded - direct:.2f}), 3-node union {union3:.2f}; "
        f"loadavg {open('/proc/loadavg').read().split()[0]}"
    )


@pytest.mark.timeout(60)
def test_concurrent_creates_get_unique_ids(cluster: Cluster) -> None:
    """Two control-plane clients racing on the id counter: every tenant gets its own id, a
    name is registered once (AlreadyExists for the loser)."""
    controls = [EtcdControl(f"127.0.0.1:{cluster.etcd_port}") for _ in range(2)]
    for c in controls:
        c.start()
    try:
        results: list[list[int]] = [[], []]
        lost: list[int] = [0, 0]

        def create(i: int) -> None:
            for j in range(15):
                for name in (f"race-{i}-{j}", f"race-both-{j}"):
                    try:
                        results[i].append(controls[i].create_tenant(name, "n1").tenant_id)
                    except AlreadyExists:
                        lost[i] += 1

        threads = [threading.Thread(target=create, args=(i,)) for i in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        ids = results[0] + results[1]
        assert len(ids) == len(set(ids)) == 45  # 30 own names + 15 shared ones, once each
        assert sum(lost) == 15
    finally:
        for c in controls:
            c.close()


@pytest.mark.timeout(60)
def test_semantic_cache_lives_on_the_tenants_home(cluster: Cluster) -> None:
    with ClusterClient([cluster.address("n1")], ADMIN_KEY, timeout=10) as cc:
        cc.create_tenant("sc-t")
        home = cc.placements["sc-t"].node
        ask = {"tenant": "sc-t", "model": "m", "category": "code"}
        emb = np.random.default_rng(2).standard_normal(32).astype(np.float32)
        assert not cc.cache_lookup("reverse a list", emb, **ask).hit
        cc.cache_store("reverse a list", emb, "xs[::-1]", **ask)
        again = cc.cache_lookup("reverse a list", emb, **ask)
        assert again.hit and again.response == b"xs[::-1]"
    other = next(n for n in GROUPS if n != home)
    with Client(cluster.address(home), ADMIN_KEY) as h:
        assert h.cache_lookup("reverse a list", emb, **ask).hit  # stored on the home node
    with Client(cluster.address(other), ADMIN_KEY, metadata=(("x-curator-route", "direct"),)) as o:
        with pytest.raises(TenantMoved):
            o.cache_lookup("reverse a list", emb, **ask)


@pytest.mark.timeout(60)
def test_grantee_key_reads_vectors_granted_on_another_node(cluster: Cluster) -> None:
    with ClusterClient([cluster.address("n2")], ADMIN_KEY, timeout=10) as admin:
        admin.create_collection("gr", 4)
        admin.create_tenant("gr-owner", group="gr-o")
        admin.create_tenant("gr-reader", group="gr-r")
        assert admin.placements["gr-owner"].node != admin.placements["gr-reader"].node
        _, key = admin.issue_key("gr-reader", "grantee")
        x = np.eye(4, dtype=np.float32)
        admin.upsert("gr", np.arange(4), x, tenant="gr-owner")
        admin.upsert("gr", [7], x[:1] * 2, tenant="gr-reader")
        with ClusterClient([cluster.address("n3")], key, placement_ttl=0.0) as reader:
            assert set(reader.placements) == {"gr-reader"}
            before = reader.search("gr", x[:1], k=5)
            assert before.owners[0][:1] == ["gr-reader"] and before.found.sum() == 1
            admin.allow_sharing("gr-owner", "gr-reader")
            admin.grant("gr", [0, 1], "gr-reader", tenant="gr-owner")  # across nodes
            after = reader.search("gr", x[:1], k=5)  # home and read set, merged
            got = {(o, int(i)) for o, i in zip(after.owners[0], after.ids[0], strict=True) if o}
            assert got == {("gr-owner", 0), ("gr-owner", 1), ("gr-reader", 7)}
            assert after.owners[0][0] == "gr-owner"  # distance 0 first
            assert reader.count("gr") == 3


@pytest.mark.timeout(60)
def test_cli_shows_nodes_and_placement(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    from client.cli import main as cli

    base = ["--address", cluster.address("n2"), "--key", ADMIN_KEY, "--json"]
    assert cli([*base, "tenants", "create", "cli-t", "--group", "cli-g"]) == 0
    capsys.readouterr()
    assert cli([*base, "cluster", "nodes"]) == 0
    nodes = json.loads(capsys.readouterr().out)
    assert nodes == {n: cluster.address(n) for n in GROUPS}
    assert cli([*base, "cluster", "placement"]) == 0
    place = json.loads(capsys.readouterr().out)
    assert place["cli-t"]["node"] in GROUPS and place["cli-t"]["epoch"] == 1


@pytest.mark.timeout(30)
def test_readsets_of_names_with_slashes_stay_apart(cluster: Cluster) -> None:
    ctl = EtcdControl(f"127.0.0.1:{cluster.etcd_port}")
    ctl.start()
    try:
        ctl.create_tenant("sl", "n1")
        ctl.create_tenant("sl/x", "n1")
        ctl.add_readset("sl/x", "n2")
        ctl.add_readset("sl", "n3")
        assert ctl.readset("sl") == {"n3"} and ctl.readset("sl/x") == {"n2"}
        ctl.delete_tenant("sl")
        assert ctl.readset("sl") == set() and ctl.readset("sl/x") == {"n2"}
        assert ctl.placement("sl") is None and ctl.placement("sl/x") is not None
    finally:
        ctl.close()
