"""The HTTP/JSON API (server/http.py): the README's curl examples run (twice) against a live
`python -m server --http-port 0` process; errors carry the SDK's class names with the table's
statuses; limits, auth and the OpenAPI document; results equal the gRPC SDK's."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the HTTP API needs the http extra")
pytest.importorskip("uvicorn", reason="the HTTP API needs the http extra")

from curator import errors
from curator.config import DatabaseConfig
from curator.database import Database
from server.app import create_server
from server.config import ServerConfig
from server.status import HTTP_STATUS_OF
from tests.test_server import ADMIN

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def call(
    base: str,
    method: str,
    path: str,
    body: Any = None,
    key: str | None = ADMIN,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers or {})
    if key is not None:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


class Live:
    """An in-process server with the HTTP API on an ephemeral port."""

    def __init__(self, tmp: Path, **kw: Any) -> None:
        self.db = Database(DatabaseConfig(data_dir=str(tmp)), background=False)
        self.db.keys.ensure(ADMIN, None, "test")
        cfg = ServerConfig(address="127.0.0.1:0", http_address="127.0.0.1:0", **kw)
        self.server = create_server(self.db, cfg)
        self.base = f"http://127.0.0.1:{self.server.http_port}"
        self.grpc = f"127.0.0.1:{self.server.port}"

    def close(self) -> None:
        self.server.stop(1)
        self.db.close()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    s = Live(tmp_path, max_message_bytes=1 << 16)
    yield s
    s.close()


def test_every_error_class_has_an_http_status() -> None:
    for cls in errors.CuratorError.__subclasses__():
        assert cls.code in HTTP_STATUS_OF, cls.__name__


def test_errors_auth_and_limits(live: Live) -> None:
    b = live.base
    assert call(b, "POST", "/v1/tenants", {"name": "a"}) == (200, {"name": "a"})
    call(b, "POST", "/v1/tenants", {"name": "b"})
    call(b, "POST", "/v1/collections", {"name": "c", "dim": 2})
    _, key = call(b, "POST", "/v1/keys", {"tenant": "a"})
    cases = [
        (call(b, "GET", "/v1/tenants", key=None), 401, "Unauthenticated"),
        (call(b, "GET", "/v1/tenants", key="wrong"), 401, "Unauthenticated"),
        (call(b, "GET", "/v1/tenants", key=key["secret"]), 403, "PermissionDenied"),
        (
            call(b, "POST", "/v1/collections/c/upsert",
                 {"tenant": "b", "ids": [1], "vectors": [[1, 2]]}, key=key["secret"]),
            403, "PermissionDenied",
        ),
        (call(b, "GET", "/v1/collections/nope"), 404, "NotFound"),
        (call(b, "GET", "/v2/nothing"), 404, "NotFound"),
        (call(b, "POST", "/v1/tenants", {"name": "a"}), 409, "AlreadyExists"),
        (call(b, "POST", "/v1/collections", {"name": "x", "dim": 0}), 400, "InvalidArgument"),
        (call(b, "POST", "/v1/tenants", {"name": "z", "typo": 1}), 400, "InvalidArgument"),
        (call(b, "POST", "/v1/tenants", raw=b"{not json"), 400, "InvalidArgument"),
        (
            call(b, "POST", "/v1/collections/c/upsert",
                 {"tenant": "a", "ids": [1], "vectors": [[float("nan"), 1]]}),
            400, "InvalidArgument",
        ),
        (
            call(b, "POST", "/v1/collections/c/upsert", {"ids": [1], "vectors": [[1, 2]]}),
            400, "InvalidArgument",  # the admin must name an owner
        ),
        (
            call(b, "POST", "/v1/collections/c/search",
                 {"tenants": ["a"], "queries": [[1, 2]], "k": 100000}),
            400, "InvalidArgument",
        ),
        (call(b, "DELETE", f"/v1/keys/{_admin_id(b)}"), 400, "FailedPrecondition"),
        (call(b, "POST", "/v1/tenants", raw=b" " * (1 << 17)), 429, "ResourceExhausted"),
        (
            call(b, "POST", "/v1/tenants", raw=b" " * (1 << 17),
                 headers={"Transfer-Encoding": "chunked"}),
            429, "ResourceExhausted",
        ),
    ]  # fmt: skip
    for i, ((status, body), want_status, want_error) in enumerate(cases):
        assert (status, (body or {}).get("error")) == (want_status, want_error), (i, body)
        assert body["message"].startswith("expected"), body
    assert call(b, "GET", "/v1/tenants") == (200, {"tenants": ["a", "b"]})  # nothing changed
    assert call(b, "GET", "/v1/collections/c/count")[1] == {"count": 0}


def test_tenant_keys_rotate_themselves_and_use_the_cache(live: Live) -> None:
    b = live.base
    call(b, "POST", "/v1/tenants", {"name": "a"})
    _, k1 = call(b, "POST", "/v1/keys", {"tenant": "a", "description": "app"})
    _, k2 = call(b, "POST", "/v1/keys", {"tenant": "a"})
    status, other = call(b, "POST", f"/v1/keys/{k2['key_id']}/rotate", key=k1["secret"])
    assert (status, other["error"]) == (403, "PermissionDenied")
    status, new = call(b, "POST", "/v1/keys/self/rotate", key=k1["secret"])
    assert status == 200 and new["key_id"] != k1["key_id"]
    assert call(b, "GET", "/v1/info", key=k1["secret"])[0] == 401
    assert call(b, "GET", "/v1/info", key=new["secret"])[1]["principal"] == "tenant:a"
    keys = call(b, "GET", "/v1/keys")[1]["keys"]
    assert [k["description"] for k in keys if k["key_id"] == new["key_id"]] == ["app"]
    e = [1.0, 0.0, 0.0, 0.0]
    body = {"prompt": "q", "embedding": e, "model": "m", "category": "chat", "response": "r"}
    assert call(b, "POST", "/v1/cache/store", body, key=new["secret"])[1]["stored"]
    _, stats = call(b, "GET", "/v1/cache/stats", key=new["secret"])
    assert stats["entries"] == 1 and stats["categories"]["chat"]["entries"] == 1
    _, pol = call(b, "GET", "/v1/cache/policies?model=m", key=new["secret"])
    chat = pol["categories"]["chat"]  # no load reported for m: the policy's own threshold
    assert (chat["threshold"], chat["pressure"]) == (chat["policy"]["threshold"], 0.0)
    status, gone = call(b, "POST", "/v1/cache/invalidate", {"category": "chat"}, key=new["secret"])
    assert (status, gone) == (200, {"removed": 1})
    assert call(b, "GET", "/v1/cache/stats?tenant=a", key=ADMIN)[1]["entries"] == 0


def _admin_id(base: str) -> str:
    keys = call(base, "GET", "/v1/keys")[1]["keys"]
    return str(next(k["key_id"] for k in keys if k["tenant"] is None))


def test_same_results_as_the_grpc_sdk(live: Live) -> None:
    from client import Client

    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    with Client(live.grpc, ADMIN) as c:
        c.create_tenant("a")
        c.create_collection("c", 8, "cosine")
        c.upsert("c", np.arange(300), x, [{"i": i} for i in range(300)], tenant="a")
        res = c.search("c", x[:3], 5, tenant="a", with_documents=True)
        rec = c.get("c", [3, 7, 999], owner="a")
        info = c.describe_collection("c")
    status, got = call(
        live.base,
        "POST",
        "/v1/collections/c/search",
        {"tenants": ["a"], "queries": x[:3].tolist(), "k": 5, "with_documents": True},
    )
    assert status == 200
    assert got["ids"] == res.ids.tolist() and got["seq"] == res.seq
    np.testing.assert_array_equal(np.array(got["distances"], np.float32), res.distances)
    assert got["documents"] == res.documents
    _, g = call(live.base, "POST", "/v1/collections/c/get", {"ids": [3, 7, 999], "owner": "a"})
    assert g["ids"] == rec.ids.tolist() and g["owners"] == rec.owners
    np.testing.assert_array_equal(np.array(g["vectors"], np.float32), rec.vectors)
    _, d = call(live.base, "GET", "/v1/collections/c")
    assert (d["vectors"], d["tenants"], d["index"]["branching"]) == (300, 1, info.index.branching)


def test_openapi_document_lists_every_call(live: Live) -> None:
    status, doc = call(live.base, "GET", "/openapi.json", key=None)
    assert status == 200 and doc["info"]["title"] == "Curator DB"
    paths = set(doc["paths"])
    for verb in ("upsert", "get", "delete", "grant", "revoke", "search"):
        assert f"/v1/collections/{{collection}}/{verb}" in paths
    for path in ("/v1/collections", "/v1/tenants", "/v1/keys", "/v1/cache/lookup", "/healthz"):
        assert path in paths
    assert "SearchBody" in doc["components"]["schemas"]


# -- the README's curl examples, against a real server process ------------------------------
def _blocks() -> list[str]:
    section = re.search(r"\n## HTTP API\n(.*?)\n## ", README, re.S)
    assert section is not None
    found = re.findall(r"```bash\n(.*?)```", section.group(1), re.S)
    assert len(found) >= 3
    return found


def _objects(text: str) -> list[Any]:
    """The JSON values curl printed back to back."""
    dec, out, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        value, i = dec.raw_decode(text, i)
        out.append(value)
    return out


@pytest.mark.timeout(180)
def test_readme_curl_examples(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURATOR_")}
    env["CURATOR_ADMIN_KEY"] = ADMIN
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--data-dir", str(tmp_path / "data"),
         "--address", "127.0.0.1:0", "--http-port", "0"],
        stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            found = re.search(r"HTTP API on http://127\.0\.0\.1:(\d+)", proc.stderr.readline())
            port = int(found.group(1)) if found else None
        assert port is not None, "the server did not report its HTTP port"
        base = f"http://127.0.0.1:{port}"
        while call(base, "GET", "/healthz", key=None)[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        shell_env = {**env, "CURATOR_HTTP": base, "CURATOR_API_KEY": ADMIN}
        for run in (1, 2):  # every block works again on a second run
            printed: list[Any] = []
            for block in _blocks():
                out = subprocess.run(
                    ["bash", "-euo", "pipefail", "-c", block],
                    capture_output=True, text=True, env=shell_env, cwd=tmp_path, timeout=60,
                )  # fmt: skip
                assert out.returncode == 0, out.stderr
                printed.extend(_objects(out.stdout))
            failed = [o for o in printed if "error" in o]
            assert all(o["error"] == "AlreadyExists" for o in failed), failed
            assert len(failed) == (0 if run == 1 else 3)
            search = next(o for o in printed if "distances" in o)
            assert search["ids"][0] == [1, None] and search["documents"][0][0] == "first"
            assert search["distances"][0][1] is None  # padding: partner reads one vector
            lookup = next(o for o in printed if "hit" in o)
            assert lookup["hit"] and lookup["response"] == "A multi-tenant vector database."
            got = next(o for o in printed if "owners" in o and "distances" not in o)
            assert got["ids"] == [1, 2] and got["documents"] == ["first", {"title": "second"}]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_cache_admin_calls_sharing_train_and_where(live: Live) -> None:
    b = live.base
    for t in ("a", "lang:en"):
        call(b, "POST", "/v1/tenants", {"name": t})
    _, key = call(b, "POST", "/v1/keys", {"tenant": "a"})
    ka = key["secret"]
    # policies: a tenant sets and resets its own; the admin sets the database-wide default
    status, pol = call(b, "PUT", "/v1/cache/policies/chat", {"policy": {"threshold": 0.97}}, ka)
    assert status == 200 and pol["threshold"] == 0.97
    _, pols = call(b, "GET", "/v1/cache/policies", key=ka)
    assert pols["categories"]["chat"]["policy"]["threshold"] == 0.97
    assert call(b, "DELETE", "/v1/cache/policies/chat", key=ka) == (200, {"reset": True})
    status, err = call(b, "PUT", "/v1/cache/policies/chat", {"policy": {"threshold": 7}}, ka)
    assert (status, err["error"]) == (400, "InvalidArgument")
    status, err = call(b, "PUT", "/v1/cache/policies/chat", {"policy": {"bogus": 1}}, ka)
    assert (status, err["error"]) == (400, "InvalidArgument")
    # examples, feedback, load
    ex = {"category": "code", "embeddings": [[1.0, 0.0, 0.0, 0.0], [0.9, 0.1, 0.0, 0.0]]}
    assert call(b, "POST", "/v1/cache/examples", ex, ka) == (200, {"count": 2})
    status, err = call(b, "POST", "/v1/cache/feedback", {"lookup_id": 12345, "correct": False}, ka)
    assert (status, err["error"]) == (404, "NotFound")
    assert call(b, "POST", "/v1/cache/load", {"model": "m", "load": 5.0}, ka)[0] == 403
    status, load = call(b, "POST", "/v1/cache/load", {"model": "m", "capacity_rps": 10.0})
    assert status == 200 and load["model"] == "m"
    status, err = call(b, "POST", "/v1/cache/load", {"model": "never-reported"})
    assert (status, err["error"]) == (404, "NotFound")
    # sharing (admin), training, a search filtered by a label and explained
    assert call(b, "POST", "/v1/tenants/a/sharing", {"with_tenant": "lang:en"}, ka)[0] == 403
    status, sharing = call(b, "POST", "/v1/tenants/a/sharing", {"with_tenant": "lang:en"})
    assert (status, sharing) == (200, {"sharing": ["lang:en"]})
    call(b, "POST", "/v1/collections", {"name": "c", "dim": 4})
    x = np.random.default_rng(5).standard_normal((40, 4)).round(3).tolist()
    call(b, "POST", "/v1/collections/c/upsert", {"ids": list(range(40)), "vectors": x}, ka)
    grant = {"ids": list(range(0, 40, 2)), "to_tenant": "lang:en"}
    assert call(b, "POST", "/v1/collections/c/grant", grant, ka)[0] == 200
    assert call(b, "POST", "/v1/collections/c/train")[1] == {"trained": True}
    body = {"queries": x[:2], "k": 5, "where": {"not": {"label": "lang:en"}}, "explain": True}
    status, res = call(b, "POST", "/v1/collections/c/search", body, ka)
    assert status == 200 and all(i % 2 == 1 for row in res["ids"] for i in row)
    assert res["plan"]["filter_size"] == 20 and res["plan"]["queries"] == 2
    deep: dict[str, Any] = {"label": "lang:en"}
    for _ in range(200):
        deep = {"not": deep}
    status, err = call(b, "POST", "/v1/collections/c/search", {**body, "where": deep}, ka)
    assert (status, err["error"]) == (400, "InvalidArgument")
    body["where"] = {"label": "b"}  # not a tenant a may filter by (nor a tenant at all)
    status, err = call(b, "POST", "/v1/collections/c/search", body, ka)
    assert (status, err["error"]) == (403, "PermissionDenied")
