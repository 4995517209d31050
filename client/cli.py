"""`curator`: administer a Curator DB server from the shell, through the SDK.

The server and key come from --address / --key / --key-file, else the environment
(CURATOR_ADDRESS, CURATOR_API_KEY, CURATOR_KEY_FILE), else 127.0.0.1:50051 and the admin key
file the server generated (<CURATOR_DATA_DIR or ./curator-data>/admin.key).

  curator collections create docs --dim 384 --metric cosine
  curator tenants create acme                               # --group g: cluster placement
  curator cluster placement                                 # cluster mode: where tenants live
  curator cluster move acme --to n2                         # live move (--resume, --abort)
  curator cluster drain n1                                  # move all of n1's tenants away
  curator keys issue acme --description "acme's app"       # prints the secret once
  curator keys rotate --write-key-file admin.key            # rotate the key in use
  curator import docs vectors.parquet --tenant acme         # resumable, with a progress bar
  curator search docs --vector 0.1,0.2,0.3,0.4 --tenant acme
  curator backup nightly                                    # on the server, under its backup dir
  curator restore curator-data/backups/nightly --data-dir restored   # then serve restored/

Exit status: 0 on success, 1 on an error of the server or of the input (printed as
"error: <ErrorClass>: <message>").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from client import bulk, calls
from client.client import Client
from curator.config import IndexConfig
from curator.errors import CuratorError, FailedPrecondition, InvalidArgument, Unauthenticated

__all__ = ["main"]

Handler = Callable[[Client, argparse.Namespace], Any]
_INDEX_FLAGS = ("branching", "max_leaf_size", "max_sl_size", "train_min_vectors", "seed")


def _key(a: argparse.Namespace) -> str:
    if a.key:
        return str(a.key)
    env_key = os.environ.get("CURATOR_API_KEY")
    if env_key and not a.key_file:
        return env_key
    data_dir = Path(os.environ.get("CURATOR_DATA_DIR", "curator-data"))
    for f in (a.key_file, os.environ.get("CURATOR_KEY_FILE"), data_dir / "admin.key"):
        if f and Path(f).is_file():
            return Path(f).read_text().strip()
        if f and f == a.key_file:
            raise InvalidArgument(f"expected a readable key file, got {str(f)!r}")
    raise Unauthenticated(
        "expected an API key: --key, --key-file, CURATOR_API_KEY or CURATOR_KEY_FILE, got none"
    )


def _plain(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, bytes):
        return x.decode(errors="replace")
    return x


def _emit(x: Any, as_json: bool) -> None:
    if x is None:
        return
    value = _plain(x)
    if as_json or isinstance(value, dict):
        sys.stdout.write(json.dumps(value, indent=None if as_json else 2, default=str) + "\n")
    elif isinstance(value, list):
        for v in value:
            sys.stdout.write((json.dumps(v) if isinstance(v, dict | list) else str(v)) + "\n")
    else:
        sys.stdout.write(f"{value}\n")


# -- verbs ---------------------------------------------------------------------------------
def _create_collection(c: Client, a: argparse.Namespace) -> Any:
    fields = {f: getattr(a, f) for f in _INDEX_FLAGS if getattr(a, f) is not None}
    return c.create_collection(a.name, a.dim, a.metric, IndexConfig(**fields))


def _rotate(c: Client, a: argparse.Namespace) -> Any:
    new = c.rotate_key(a.key_id or "")
    if a.write_key_file:
        path = Path(a.write_key_file)
        fd = os.open(
            path.with_name(path.name + ".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600
        )
        with os.fdopen(fd, "w") as f:
            f.write(new.secret + "\n")
        os.replace(path.with_name(path.name + ".tmp"), path)
        return {"key_id": new.key_id, "written_to": str(path)}
    return {"key_id": new.key_id, "secret": new.secret}


def _import(c: Client, a: argparse.Namespace) -> Any:
    return bulk.import_file(
        c,
        a.collection,
        Path(a.file),
        tenant=a.tenant,
        fmt=a.format,
        chunk_size=a.chunk_size,
        progress_file=Path(a.progress_file) if a.progress_file else None,
        ids=Path(a.ids) if a.ids else None,
        id_start=a.id_start,
        bar=not a.quiet,
    )


def _id_list(a: argparse.Namespace) -> np.ndarray | None:
    if a.ids:
        return np.asarray(np.load(a.ids), np.uint64).reshape(-1)
    if a.id_range is None:
        return None  # every id the owner holds
    lo, sep, hi = a.id_range.partition(":")
    if not sep or not lo.isdigit() or not hi.isdigit() or int(hi) < int(lo):
        raise InvalidArgument(
            f"expected --ids FILE.npy or --id-range START:END, got {a.id_range!r}"
        )
    return np.arange(int(lo), int(hi), dtype=np.uint64)


def _export(c: Client, a: argparse.Namespace) -> Any:
    n = bulk.export_jsonl(
        c,
        a.collection,
        Path(a.out),
        _id_list(a),
        tenant=a.tenant,
        owner=a.owner,
        bar=not a.quiet,
    )
    return {"rows": n, "file": a.out}


def _restore(a: argparse.Namespace) -> Any:
    """A backup is a data directory: copy it to a new one and start the server there."""
    src, dest = Path(a.backup), Path(a.data_dir)
    if not (src / "lmdb").is_dir():
        raise InvalidArgument(f"expected a backup folder holding lmdb/, got {str(src)!r}")
    if dest.exists() and any(dest.iterdir()):
        raise FailedPrecondition(f"expected a new or empty data directory, got {str(dest)!r}")
    shutil.copytree(src, dest, dirs_exist_ok=True)
    return {"restored": str(dest), "start": f"curator-server --data-dir {dest}"}


def _search(c: Client, a: argparse.Namespace) -> Any:
    if a.vector:
        try:
            q = np.array([[float(v) for v in a.vector.split(",")]], np.float32)
        except ValueError:
            raise InvalidArgument(
                f"expected --vector as comma-separated numbers, got {a.vector!r}"
            ) from None
    elif a.vectors_file:
        q = np.load(a.vectors_file)
    else:
        raise InvalidArgument("expected --vector or --vectors-file, got neither")
    res = c.search(a.collection, q, a.k, tenant=a.tenant, with_documents=a.documents)
    out = []
    for r in range(len(res.ids)):
        found = res.ids[r] >= 0
        hits = [
            {"id": int(i), "distance": float(d)}
            | ({"document": res.documents[r][j]} if res.documents is not None else {})
            for j, (i, d) in enumerate(zip(res.ids[r][found], res.distances[r][found], strict=True))
        ]
        out.append({"query": r, "seq": res.seq, "hits": hits})
    return out


def _placement(c: Client, a: argparse.Namespace) -> Any:
    nodes, places, readsets = c._run(calls.placement())
    if a.verb == "nodes":
        return {n.node_id: n.address for n in nodes.values()}
    return {
        t: {"node": p.node, "epoch": p.epoch, "state": p.state, "readset": sorted(readsets[t])}
        for t, p in sorted(places.items())
    }


def _move(c: Client, a: argparse.Namespace) -> Any:
    if not (a.to or a.resume or a.abort):
        raise InvalidArgument("expected --to NODE (or --resume / --abort), got none")
    return c._run(calls.move_tenant(a.tenant, a.to or "", resume=a.resume, abort=a.abort))


def _drain(c: Client, a: argparse.Namespace) -> Any:
    """Move every tenant homed on a.node, one at a time, each to the live node (not a.node)
    with the fewest tenants at that moment."""
    nodes, places, _ = c._run(calls.placement())
    if a.node not in {p.node for p in places.values()} | set(nodes):
        raise InvalidArgument(f"expected a node of the cluster, got {a.node!r}")
    todo = sorted(t for t, p in places.items() if p.node == a.node)
    reports = []
    with tqdm(total=len(todo), unit="tenant", desc=f"drain {a.node}", disable=a.quiet) as bar:
        for tenant in todo:
            nodes, places, _ = c._run(calls.placement())
            load = {n: 0 for n in nodes if n != a.node}
            if not load:
                raise FailedPrecondition(f"expected another live node than {a.node}, got none")
            for p in places.values():
                if p.node in load:
                    load[p.node] += 1
            target = min(load, key=lambda n: (load[n], n))
            bar.set_postfix_str(f"{tenant} -> {target}")
            reports.append(c._run(calls.move_tenant(tenant, target)))
            bar.update()
    return {"node": a.node, "moved": reports}


def _stats(c: Client, a: argparse.Namespace) -> Any:
    info = c.server_info()
    collections = {n: c.describe_collection(n) for n in c.list_collections()}
    return {"server": info, "collections": collections, "cache": c.cache_stats(tenant=a.tenant)}


# -- parser --------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="curator", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--address", default=os.environ.get("CURATOR_ADDRESS", "127.0.0.1:50051"))
    ap.add_argument("--key", help="API key (better: CURATOR_API_KEY or --key-file)")
    ap.add_argument("--key-file", help="file holding the API key")
    ap.add_argument("--tls", action="store_true", help="connect with TLS")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per call")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    groups = ap.add_subparsers(dest="group", required=True, metavar="COMMAND")

    def verb(sub: Any, name: str, fn: Handler | None, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
        p.set_defaults(fn=fn)
        # also after the verb; SUPPRESS keeps a --json given before it
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
        return p

    col = groups.add_parser("collections", help="create, list, describe, drop collections")
    cs = col.add_subparsers(dest="verb", required=True)
    p = verb(cs, "create", _create_collection, "create a collection")
    p.add_argument("name")
    p.add_argument("--dim", type=int, required=True)
    p.add_argument("--metric", default="l2", choices=("l2", "ip", "cosine"))
    for f in _INDEX_FLAGS:
        p.add_argument("--" + f.replace("_", "-"), dest=f, type=int, help="index parameter")
    verb(cs, "list", lambda c, a: c.list_collections(), "list collection names")
    verb(
        cs, "describe", lambda c, a: c.describe_collection(a.name), "a collection's info"
    ).add_argument("name")
    verb(
        cs, "drop", lambda c, a: c.drop_collection(a.name), "delete a collection and its vectors"
    ).add_argument("name")

    ten = groups.add_parser("tenants", help="create, list, drop tenants")
    ts = ten.add_subparsers(dest="verb", required=True)
    p = verb(
        ts,
        "create",
        lambda c, a: c._run(calls.create_tenant(a.name, a.group)),
        "create a tenant",
    )
    p.add_argument("name")
    p.add_argument("--group", default="", help="cluster: place it with this group's tenants")
    verb(ts, "list", lambda c, a: c.list_tenants(), "list tenant names")
    verb(
        ts,
        "drop",
        lambda c, a: c.drop_tenant(a.name),
        "delete a tenant, its vectors, keys and cache",
    ).add_argument("name")

    keys = groups.add_parser("keys", help="issue, list, revoke, rotate API keys (admin keys too)")
    ks = keys.add_subparsers(dest="verb", required=True)
    p = verb(
        ks,
        "issue",
        lambda c, a: c.issue_key(None if a.admin else a.tenant, a.description)._asdict(),
        "a new key (the secret is printed once)",
    )
    p.add_argument("tenant", nargs="?", default=None)
    p.add_argument("--admin", action="store_true", help="an admin key instead of a tenant's")
    p.add_argument("--description", default="")
    verb(
        ks, "list", lambda c, a: c.list_keys(a.tenant), "keys (admin keys have tenant null)"
    ).add_argument("--tenant")
    verb(
        ks, "revoke", lambda c, a: c.revoke_key(a.key_id), "revoke a key (not the last admin key)"
    ).add_argument("key_id")
    p = verb(ks, "rotate", _rotate, "replace a key by a new one (default: the key in use)")
    p.add_argument("key_id", nargs="?")
    p.add_argument(
        "--write-key-file", help="write the new secret here (mode 0600) instead of printing it"
    )

    clu = groups.add_parser("cluster", help="cluster mode: nodes and tenant placement")
    cl = clu.add_subparsers(dest="verb", required=True)
    verb(cl, "nodes", _placement, "live nodes and their addresses")
    verb(cl, "placement", _placement, "each tenant's home node, epoch, state and read set")
    p = verb(cl, "move", _move, "move a tenant to another node live (short write pause)")
    p.add_argument("tenant")
    p.add_argument("--to", metavar="NODE", help="the node id to move it to")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--resume", action="store_true", help="finish its interrupted move")
    how.add_argument("--abort", action="store_true", help="undo its move (before the flip)")
    p = verb(cl, "drain", _drain, "move every tenant off a node, to the least-loaded others")
    p.add_argument("node")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = verb(groups, "import", _import, "import vectors from .npy, .jsonl or .parquet (resumable)")
    p.add_argument("collection")
    p.add_argument("file")
    p.add_argument("--tenant", help="owner of rows without one")
    p.add_argument("--format", choices=("npy", "jsonl", "parquet"))
    p.add_argument("--chunk-size", type=int, default=5000)
    p.add_argument("--progress-file", help="default: <file>.progress.json")
    p.add_argument("--ids", help=".npy: ids (n,) for the rows (default sequential)")
    p.add_argument("--id-start", type=int, default=0, help=".npy without --ids: first id")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = verb(groups, "export", _export, "export vectors to JSON lines (the import format)")
    p.add_argument("collection")
    p.add_argument("out")
    p.add_argument("--ids", help="a .npy of the ids to export (default: every id it holds)")
    p.add_argument("--id-range", help="START:END (END excluded)")
    p.add_argument("--tenant", help="read as this tenant (default: the key's, or the admin)")
    p.add_argument("--owner", help="whose ids (ids are scoped per owner; default: --tenant)")
    p.add_argument("--quiet", action="store_true")

    verb(
        groups,
        "backup",
        lambda c, a: {"path": c.backup(a.name)},
        "a consistent copy of the live database, on the server",
    ).add_argument("name")
    p = verb(
        groups, "restore", None, "copy a backup folder into a new data directory (server stopped)"
    )
    p.add_argument("backup")
    p.add_argument("--data-dir", required=True)
    verb(groups, "stats", _stats, "server, collections and cache statistics").add_argument(
        "--tenant"
    )

    p = verb(groups, "search", _search, "nearest neighbours of one or more vectors")
    p.add_argument("collection")
    p.add_argument("--vector", help="comma-separated numbers")
    p.add_argument("--vectors-file", help="a .npy of shape (nq, d)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--tenant", action="append", help="tenant(s) to search (admin key)")
    p.add_argument("--documents", action="store_true")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    try:
        if a.fn is None:  # restore: local files only, no server
            _emit(_restore(a), a.json)
            return 0
        with Client(a.address, _key(a), tls=a.tls, timeout=a.timeout) as c:
            _emit(a.fn(c, a), a.json)
    except CuratorError as e:
        sys.stderr.write(f"error: {type(e).__name__}: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
