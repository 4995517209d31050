"""The HTTP/JSON API beside gRPC (FastAPI on uvicorn, its own port): the same calls, keys,
rules (server/rules.py), errors and limits; every handler decodes, makes one Database call
and encodes (curator_api/jsonwire.py). The OpenAPI document is at /openapi.json.

Auth: "Authorization: Bearer <key>" or "x-api-key: <key>". Errors: the HTTP status of
server/status.py's table and {"error": "<ErrorClass>", "message": "expected ..., got ..."}.
Needs the `http` extra (fastapi, uvicorn).
"""

from __future__ import annotations

import base64
import binascii
import logging
import socket
import threading
from typing import Any, Protocol

import numpy as np
import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from curator import __version__
from curator.auth import Principal
from curator.config import IndexConfig, SearchParams
from curator.database import Database
from curator.errors import CuratorError, InvalidArgument, ResourceExhausted, Unavailable
from curator_api import jsonwire as jw
from curator_api.predicates import predicate_from_json
from server import rules
from server.http_models import (
    AccessBody,
    BackupBody,
    CacheExamplesBody,
    CacheFeedbackBody,
    CacheInvalidateBody,
    CacheLoadBody,
    CacheLookupBody,
    CachePolicyBody,
    CacheStoreBody,
    CollectionBody,
    IdsBody,
    KeyBody,
    SearchBody,
    SharingBody,
    TenantBody,
    UpsertBody,
)
from server.status import HTTP_STATUS_OF

__all__ = ["HttpServer", "create_http_app", "serve_http"]

log = logging.getLogger(__name__)

JSON = dict[str, Any]


class ServerState(Protocol):
    """What the app needs of the running server (server.app's state)."""

    db: Database | None
    started: float

    def authenticate(self, key: str | None) -> Principal: ...


def _error(e: CuratorError) -> JSONResponse:
    body = {"error": type(e).__name__, "message": str(e)}
    return JSONResponse(body, status_code=HTTP_STATUS_OF.get(e.code, 500))


def _key(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None
    return request.headers.get("x-api-key")


def _bytes_from_b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"expected base64 in {what}, got {text[:40]!r}") from None


def _vector(v: list[float] | None) -> np.ndarray | None:
    return None if v is None else np.asarray(v, np.float32)


class _JsonBodies:
    """ASGI middleware: every body is JSON (so `curl -d`, which labels it a form, works), and
    a body past `limit` bytes is ResourceExhausted (as gRPC's message limit), whether or not
    it declares its length."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
        scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.limit:
            return await _error(self._too_big(int(declared)))(scope, receive, send)
        body, more = b"", True  # read it all first: the app never sees a partial body
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await _error(self._too_big(len(body)))(scope, receive, send)
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    def _too_big(self, n: int) -> ResourceExhausted:
        return ResourceExhausted(f"expected a request body of at most {self.limit} bytes, got {n}")


def create_http_app(state: ServerState, max_body_bytes: int = 64 << 20) -> FastAPI:
    app = FastAPI(
        title="Curator DB",
        version=__version__,
        description=__doc__,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.add_middleware(_JsonBodies, limit=max_body_bytes)

    @app.exception_handler(CuratorError)
    async def curator_error(request: Request, e: CuratorError) -> JSONResponse:
        return _error(e)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        """The framework's own errors (no such path or method) in the API's shape."""
        name = "NotFound" if e.status_code == 404 else "InvalidArgument"
        body = {"error": name, "message": f"expected a path and method of the API, got {e.detail}"}
        return JSONResponse(body, status_code=e.status_code)

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        got = repr(first.get("input"))[:80]
        return _error(InvalidArgument(f"expected {where}: {first.get('msg', 'valid')}, got {got}"))

    def principal(request: Request) -> Principal:
        return state.authenticate(_key(request))

    def db() -> Database:
        if state.db is None:
            raise Unavailable("expected a loaded database, it is still starting")
        return state.db

    P = Depends(principal)

    @app.get("/healthz", tags=["server"])
    def healthz() -> JSONResponse:
        """No key needed: 200 SERVING once the database has loaded, else 503."""
        serving = state.db is not None
        body = {"status": "SERVING" if serving else "NOT_SERVING"}
        return JSONResponse(body, status_code=200 if serving else 503)

    # -- administration ---------------------------------------------------------------------
    @app.get("/v1/info", tags=["admin"])
    def server_info(p: Principal = P) -> JSON:
        return jw.to_json(rules.server_info(db(), p, state.started))

    @app.post("/v1/collections", tags=["admin"])
    def create_collection(body: CollectionBody, p: Principal = P) -> JSON:
        rules.require_admin(p)
        try:
            config = IndexConfig(**body.index)  # type: ignore[arg-type]
        except TypeError as e:
            raise InvalidArgument(f"expected IndexConfig fields, got {body.index} ({e})") from None
        info = db().create_collection(body.name, body.dim, body.metric, config)
        return jw.to_json(info)

    @app.get("/v1/collections", tags=["admin"])
    def list_collections(p: Principal = P) -> JSON:
        names = db().list_collections()
        return {"collections": [jw.to_json(rules.collection_view(db(), n, p)) for n in names]}

    @app.get("/v1/collections/{name}", tags=["admin"])
    def describe_collection(name: str, p: Principal = P) -> JSON:
        return jw.to_json(rules.collection_view(db(), name, p))

    @app.post("/v1/collections/{name}/train", tags=["admin"])
    def train(name: str, p: Principal = P) -> JSON:
        """Retrain the shared tree now (searches and writes go on meanwhile)."""
        rules.require_admin(p)
        return {"trained": db().train(name)}

    @app.delete("/v1/collections/{name}", tags=["admin"])
    def drop_collection(name: str, p: Principal = P) -> JSON:
        rules.require_admin(p)
        db().drop_collection(name)
        return {}

    @app.post("/v1/tenants", tags=["admin"])
    def create_tenant(body: TenantBody, p: Principal = P) -> JSON:
        rules.require_admin(p)
        db().create_tenant(body.name)
        return {"name": body.name}

    @app.get("/v1/tenants", tags=["admin"])
    def list_tenants(p: Principal = P) -> JSON:
        rules.require_admin(p)
        return {"tenants": db().list_tenants()}

    @app.delete("/v1/tenants/{name}", tags=["admin"])
    def drop_tenant(name: str, p: Principal = P) -> JSON:
        rules.require_admin(p)
        db().drop_tenant(name)
        return {}

    @app.post("/v1/tenants/{name}/sharing", tags=["admin"])
    def allow_sharing(name: str, body: SharingBody, p: Principal = P) -> JSON:
        """Let `name`'s key grant its vectors to `with_tenant` (allowed false: withdraw)."""
        rules.require_admin(p)
        db().allow_sharing(name, body.with_tenant, body.allowed)
        return {"sharing": db().sharing(name)}

    @app.post("/v1/keys", tags=["admin"])
    def issue_key(body: KeyBody, p: Principal = P) -> JSON:
        """The secret is in this response only."""
        key = rules.issue_key(db(), p, body.tenant, body.admin, body.description)
        return {"key_id": key.key_id, "secret": key.secret}

    @app.get("/v1/keys", tags=["admin"])
    def list_keys(tenant: str = "", p: Principal = P) -> JSON:
        rules.require_admin(p)
        return {"keys": jw.to_json(db().list_keys(tenant or None))}

    @app.delete("/v1/keys/{key_id}", tags=["admin"])
    def revoke_key(key_id: str, p: Principal = P) -> JSON:
        rules.require_admin(p)
        db().revoke_key(key_id)
        return {}

    @app.post("/v1/keys/{key_id}/rotate", tags=["admin"])
    def rotate_key(key_id: str, p: Principal = P) -> JSON:
        """key_id "self": the key of this request."""
        key = rules.rotate_key(db(), p, "" if key_id == "self" else key_id)
        return {"key_id": key.key_id, "secret": key.secret}

    @app.post("/v1/backups", tags=["admin"])
    def backup(body: BackupBody, p: Principal = P) -> JSON:
        rules.require_admin(p)
        return {"path": db().backup(body.name)}

    # -- vectors --------------------------------------------------------------------------------
    @app.post("/v1/collections/{collection}/upsert", tags=["vectors"])
    def upsert(collection: str, body: UpsertBody, p: Principal = P) -> JSON:
        tenant = rules.acting_tenant(p, body.tenant, required=True)
        docs = (
            None if body.documents is None else [jw.document_from_json(d) for d in body.documents]
        )
        x = jw.matrix_from_json(body.vectors)
        return jw.to_json(db().upsert(collection, body.ids, x, docs, tenant=tenant))

    @app.post("/v1/collections/{collection}/get", tags=["vectors"])
    def get(collection: str, body: IdsBody, p: Principal = P) -> JSON:
        tenant = rules.acting_tenant(p, body.tenant, required=False)
        return jw.records_to_json(
            db().get(collection, body.ids, tenant=tenant, owner=body.owner or None)
        )

    @app.post("/v1/collections/{collection}/delete", tags=["vectors"])
    def delete(collection: str, body: IdsBody, p: Principal = P) -> JSON:
        tenant = rules.acting_tenant(p, body.tenant, required=False)
        return jw.to_json(
            db().delete(collection, body.ids, tenant=tenant, owner=body.owner or None)
        )

    @app.post("/v1/collections/{collection}/grant", tags=["vectors"])
    def grant(collection: str, body: AccessBody, p: Principal = P) -> JSON:
        tenant = rules.acting_tenant(p, body.tenant, required=False)
        res = db().grant(
            collection, body.ids, body.to_tenant, tenant=tenant, owner=body.owner or None
        )
        return jw.to_json(res)

    @app.post("/v1/collections/{collection}/revoke", tags=["vectors"])
    def revoke(collection: str, body: AccessBody, p: Principal = P) -> JSON:
        tenant = rules.acting_tenant(p, body.tenant, required=False)
        res = db().revoke(
            collection, body.ids, body.to_tenant, tenant=tenant, owner=body.owner or None
        )
        return jw.to_json(res)

    @app.get("/v1/collections/{collection}/count", tags=["vectors"])
    def count(collection: str, tenant: str = "", p: Principal = P) -> JSON:
        acting = rules.acting_tenant(p, tenant, required=False)
        return {"count": db().count(collection, tenant=acting)}

    @app.get("/v1/collections/{collection}/ids", tags=["vectors"])
    def list_ids(
        collection: str,
        tenant: str = "",
        owner: str = "",
        after: int | None = None,
        limit: int = 1000,
        p: Principal = P,
    ) -> JSON:
        """A page of a tenant's ids, ascending; next_after (null: the last page)."""
        page = db().list_ids(
            collection,
            tenant=rules.acting_tenant(p, tenant, required=False),
            owner=owner or None,
            after=after,
            limit=limit,
        )
        return {"ids": page.ids.tolist(), "next_after": page.next_after}

    @app.post("/v1/collections/{collection}/search", tags=["vectors"])
    def search(collection: str, body: SearchBody, p: Principal = P) -> JSON:
        """ids and distances are nq rows of k (padded with -1 / null)."""
        fields = body.params.model_dump(exclude_none=True) if body.params else {}
        res = db().search(
            collection,
            jw.matrix_from_json(body.queries, "queries"),
            body.k,
            tenant=rules.search_tenants(p, body.tenants),
            params=SearchParams(**fields) if fields else None,
            with_documents=body.with_documents,
            with_vectors=body.with_vectors,
            require_all=body.require_all,
            where=predicate_from_json(body.where) if body.where is not None else None,
            explain=body.explain,
        )
        return jw.search_result_to_json(res)

    # -- semantic cache ---------------------------------------------------------------------
    @app.post("/v1/cache/lookup", tags=["cache"])
    def cache_lookup(body: CacheLookupBody, p: Principal = P) -> JSON:
        res = db().cache_lookup(
            body.prompt,
            _vector(body.embedding),
            tenant=rules.acting_tenant(p, body.tenant, required=True),
            model=body.model,
            fingerprint=body.fingerprint,
            category=body.category,
            wait_s=body.wait_s,
        )
        return jw.lookup_to_json(res)

    @app.post("/v1/cache/store", tags=["cache"])
    def cache_store(body: CacheStoreBody, p: Principal = P) -> JSON:
        if (body.response is None) == (body.response_b64 is None):
            raise InvalidArgument("expected one of response or response_b64, got both or neither")
        response = (
            body.response.encode()
            if body.response is not None
            else _bytes_from_b64(body.response_b64 or "", "response_b64")
        )
        res = db().cache_store(
            body.prompt,
            _vector(body.embedding),
            response,
            tenant=rules.acting_tenant(p, body.tenant, required=True),
            model=body.model,
            fingerprint=body.fingerprint,
            category=body.category,
            ttl_s=body.ttl_s,
            latency_s=body.latency_s,
            tokens=body.tokens,
        )
        return jw.to_json(res)

    @app.post("/v1/cache/invalidate", tags=["cache"])
    def cache_invalidate(body: CacheInvalidateBody, p: Principal = P) -> JSON:
        tenant = rules.acting_tenant(p, body.tenant, required=True)
        fields = body.model_dump(exclude_none=True, exclude={"tenant"})
        return {"removed": db().cache_invalidate(tenant=tenant, **fields)}

    @app.get("/v1/cache/policies", tags=["cache"])
    def cache_policies(tenant: str = "", model: str = "", p: Principal = P) -> JSON:
        """Admin without a tenant: the database-wide defaults."""
        acting = rules.acting_tenant(p, tenant, required=False)
        return {"categories": jw.to_json(db().cache_policies(tenant=acting, model=model))}

    @app.post("/v1/cache/feedback", tags=["cache"])
    def cache_feedback(body: CacheFeedbackBody, p: Principal = P) -> JSON:
        """Was the lookup `lookup_id` (or the entry `entry_id`) right? Calibrates thresholds."""
        res = db().cache_feedback(
            tenant=rules.acting_tenant(p, body.tenant, required=True),
            lookup_id=body.lookup_id,
            entry_id=body.entry_id,
            correct=body.correct,
        )
        return jw.to_json(res)

    @app.put("/v1/cache/policies/{category}", tags=["cache"])
    def cache_set_policy(category: str, body: CachePolicyBody, p: Principal = P) -> JSON:
        acting = rules.acting_tenant(p, body.tenant, required=False)
        return jw.to_json(db().cache_set_policy(category, tenant=acting, **body.policy))

    @app.delete("/v1/cache/policies/{category}", tags=["cache"])
    def cache_reset_policy(category: str, tenant: str = "", p: Principal = P) -> JSON:
        acting = rules.acting_tenant(p, tenant, required=False)
        return {"reset": db().cache_reset_policy(category, tenant=acting)}

    @app.post("/v1/cache/examples", tags=["cache"])
    def cache_add_examples(body: CacheExamplesBody, p: Principal = P) -> JSON:
        """Example prompt embeddings of a category (for the category classifier)."""
        acting = rules.acting_tenant(p, body.tenant, required=True)
        x = jw.matrix_from_json(body.embeddings, "embeddings")
        return {"count": db().cache_add_examples(body.category, x, tenant=acting)}

    @app.post("/v1/cache/load", tags=["cache"])
    def cache_report_load(body: CacheLoadBody, p: Principal = P) -> JSON:
        """Admin: a model's current load and/or capacity; answers the model's load state."""
        state = rules.report_load(db(), p, body.model, body.load, body.capacity_rps)
        return {"model": body.model, **jw.to_json(state)}

    @app.get("/v1/cache/stats", tags=["cache"])
    def cache_stats(tenant: str = "", p: Principal = P) -> JSON:
        acting = rules.acting_tenant(p, tenant, required=False)
        return jw.to_json(db().cache_stats(tenant=acting))

    return app


class HttpServer:
    """uvicorn serving the app in a thread; `port` is the bound port."""

    def __init__(self, app: FastAPI, sock: socket.socket, max_concurrency: int) -> None:
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            limit_concurrency=max_concurrency,  # past it: 503, as gRPC's concurrent-RPC cap
        )
        self._server = uvicorn.Server(config)
        self._sock = sock
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="curator-http", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()


def serve_http(
    state: ServerState, host: str, port: int, max_body_bytes: int, max_concurrency: int = 128
) -> HttpServer:
    """Bind host:port (0: any free port) and serve the HTTP API in the background."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"could not bind the HTTP API to {host}:{port}: {e.strerror}") from None
    sock.listen(128)
    return HttpServer(create_http_app(state, max_body_bytes), sock, max_concurrency)
