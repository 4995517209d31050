"""Request bodies of the HTTP API (pydantic models: validated on arrival and described in
the OpenAPI document). Field names and defaults are the SDK's (curator.api)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AccessBody",
    "BackupBody",
    "CacheExamplesBody",
    "CacheFeedbackBody",
    "CacheInvalidateBody",
    "CacheLoadBody",
    "CachePolicyBody",
    "CacheLookupBody",
    "CacheStoreBody",
    "CollectionBody",
    "IdsBody",
    "KeyBody",
    "SearchBody",
    "SearchParamsBody",
    "SharingBody",
    "TenantBody",
    "UpsertBody",
]

Ids = list[int]
Rows = list[list[float]]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not ignored


class CollectionBody(_Body):
    name: str
    dim: int
    metric: str = "l2"
    index: dict[str, int | float] = Field(
        default_factory=dict, description="IndexConfig fields (branching, train_min_vectors...)"
    )


class TenantBody(_Body):
    name: str


class KeyBody(_Body):
    tenant: str = ""
    admin: bool = Field(False, description="an admin key (then no tenant)")
    description: str = ""


class BackupBody(_Body):
    name: str = Field(description="a new folder under the server's backup directory")


class UpsertBody(_Body):
    ids: Ids
    vectors: Rows
    documents: list[Any] | None = Field(
        None, description='one JSON value per id; bytes as {"$base64": "..."}'
    )
    tenant: str = Field("", description="owner (the admin key must name one)")


class IdsBody(_Body):
    ids: Ids
    tenant: str = ""
    owner: str = ""  # whose ids (ids are scoped per owner); default: the acting tenant


class AccessBody(_Body):
    ids: Ids
    to_tenant: str
    tenant: str = ""
    owner: str = ""  # whose ids; a grantee drops a received share naming the owner


class SearchParamsBody(_Body):
    search_ef: int | None = None
    beam_size: int | None = None
    variance_boost: float | None = None
    exact_search_threshold: int | None = None


class SearchBody(_Body):
    queries: Rows
    k: int = 10
    tenants: list[str] = Field(default_factory=list, description="admin: whose union to search")
    params: SearchParamsBody | None = None
    with_documents: bool = False
    with_vectors: bool = False
    require_all: bool = False
    where: dict[str, Any] | None = Field(
        None, description='labels: {"label": n}, {"not": P}, {"and": [P, ...]}, {"or": [P, ...]}'
    )
    explain: bool = False


class CacheLookupBody(_Body):
    prompt: str
    embedding: list[float] | None = Field(None, description="null: the server embeds the prompt")
    tenant: str = ""
    model: str
    fingerprint: str = ""
    category: str | None = None
    wait_s: float = 0.0


class CacheStoreBody(_Body):
    prompt: str
    embedding: list[float] | None = None
    response: str | None = Field(None, description="the answer as text (or response_b64)")
    response_b64: str | None = None
    tenant: str = ""
    model: str
    fingerprint: str = ""
    category: str | None = None
    ttl_s: float | None = None
    latency_s: float = 0.0
    tokens: int = 0


class SharingBody(_Body):
    with_tenant: str
    allowed: bool = True


class CacheFeedbackBody(_Body):
    tenant: str = ""
    lookup_id: int = 0
    entry_id: int = 0
    correct: bool


class CachePolicyBody(_Body):
    tenant: str = Field("", description="admin without a tenant: the database-wide default")
    policy: dict[str, float | int | bool] = Field(
        description="the CategoryPolicy fields to change (threshold, ttl_s, delta...)"
    )


class CacheExamplesBody(_Body):
    tenant: str = ""
    category: str
    embeddings: Rows


class CacheLoadBody(_Body):
    model: str
    load: float | None = Field(None, description="requests per second the model sees now")
    capacity_rps: float | None = None


class CacheInvalidateBody(_Body):
    tenant: str = ""
    category: str | None = None
    model: str | None = None
    fingerprint: str | None = None
