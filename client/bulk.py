"""Bulk import from files (and export to JSON lines) through the SDK, in resumable chunks.

Formats (by extension, or `fmt`):
- `.npy`: an (n, d) float32 matrix of vectors; ids from `ids` (an (n,) .npy) or sequential
  from `id_start`; every row owned by `tenant`.
- `.jsonl`: one object per line: {"id": int, "vector": [float...], "document": any JSON
  (optional; or "document_b64": base64 of bytes), "owner": str (optional), "labels":
  [str...] (optional)}. `export_jsonl` writes this format.
- `.parquet` (needs pyarrow, the `parquet` extra): columns `id`, `vector` (list of floats)
  and optionally `document` (string or binary), `owner` (string), `labels` (list of strings).

Rows without an owner belong to `tenant` (the admin key must then give one; a tenant key
owns what it imports). Labels are tenants the row is shared with (`grant`). Each chunk is
committed (upserts, then grants) before the progress file records it, so a rerun after a
crash or Ctrl-C resumes at the first chunk not recorded; re-sending that chunk is harmless
(an upsert of the same id by the same owner replaces it, grants are idempotent).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from curator.api import VectorsAPI
from curator.errors import FailedPrecondition, InvalidArgument
from curator.results import Document

__all__ = ["Chunk", "ImportReport", "export_jsonl", "import_file", "read_chunks"]


@dataclass
class Chunk:
    """Rows of one chunk: ids (n,) uint64, vectors (n, d) float32, and per row (or None):
    documents, owners, labels."""

    ids: np.ndarray
    vectors: np.ndarray
    documents: list[Document] | None = None
    owners: list[str | None] | None = None
    labels: list[list[str]] | None = None


@dataclass(frozen=True)
class ImportReport:
    rows: int  # rows sent by this run
    chunks: int  # chunks committed by this run
    skipped_chunks: int  # chunks a previous run had committed
    seq: int  # write sequence number of the last write


def _format(path: Path, fmt: str | None) -> str:
    fmt = fmt or path.suffix.lstrip(".").lower()
    if fmt not in ("npy", "jsonl", "parquet"):
        raise InvalidArgument(f"expected a .npy, .jsonl or .parquet file, got {path.name!r}")
    return fmt


def count_rows(path: Path, fmt: str | None = None) -> int:
    fmt = _format(path, fmt)
    if fmt == "npy":
        return int(np.load(path, mmap_mode="r").shape[0])
    if fmt == "parquet":
        return int(_parquet().ParquetFile(path).metadata.num_rows)
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def read_chunks(
    path: Path,
    chunk_size: int,
    fmt: str | None = None,
    ids: Path | None = None,
    id_start: int = 0,
) -> Iterator[Chunk]:
    """The file's rows, `chunk_size` at a time (the last chunk may be smaller)."""
    fmt = _format(path, fmt)
    if fmt == "npy":
        yield from _npy(path, chunk_size, ids, id_start)
    elif fmt == "jsonl":
        yield from _jsonl(path, chunk_size)
    else:
        yield from _parquet_chunks(path, chunk_size)


def _npy(path: Path, size: int, ids_path: Path | None, id_start: int) -> Iterator[Chunk]:
    x = np.load(path, mmap_mode="r")
    if x.ndim != 2:
        raise InvalidArgument(f"expected an (n, d) matrix in {path.name}, got shape {x.shape}")
    ids = np.load(ids_path, mmap_mode="r") if ids_path else None
    if ids is not None and ids.shape != (len(x),):
        raise InvalidArgument(f"expected ({len(x)},) ids in {ids_path}, got shape {ids.shape}")
    for s in range(0, len(x), size):
        part = (
            np.asarray(ids[s : s + size], np.uint64)
            if ids is not None
            else np.arange(id_start + s, id_start + min(s + size, len(x)), dtype=np.uint64)
        )
        yield Chunk(part, np.asarray(x[s : s + size], np.float32))


def _rows_to_chunk(rows: list[dict[str, Any]], where: str) -> Chunk:
    try:
        ids = np.array([int(r["id"]) for r in rows], np.uint64)
        x = np.array([r["vector"] for r in rows], np.float32)
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise InvalidArgument(
            f"expected rows with an integer 'id' >= 0 and a numeric 'vector' of one length, "
            f"got a bad row near {where} ({type(e).__name__}: {e})"
        ) from None
    docs = (
        [_document(r) for r in rows]
        if any("document" in r or "document_b64" in r for r in rows)
        else None
    )
    owners = [r.get("owner") for r in rows] if any(r.get("owner") for r in rows) else None
    labels = (
        [list(r.get("labels") or []) for r in rows] if any(r.get("labels") for r in rows) else None
    )
    return Chunk(ids, x, docs, owners, labels)


def _document(row: dict[str, Any]) -> Document:
    if "document_b64" in row:
        try:
            return base64.b64decode(row["document_b64"], validate=True)
        except (ValueError, TypeError):
            raise InvalidArgument(
                f"expected base64 in document_b64, got {row['document_b64']!r}"
            ) from None
    doc: Document = row.get("document")
    return doc


def _jsonl(path: Path, size: int) -> Iterator[Chunk]:
    rows: list[dict[str, Any]] = []
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InvalidArgument(
                    f"expected JSON on line {n} of {path.name}, got {e}"
                ) from None
            if not isinstance(row, dict):
                raise InvalidArgument(f"expected an object on line {n}, got {type(row).__name__}")
            rows.append(row)
            if len(rows) == size:
                yield _rows_to_chunk(rows, f"line {n}")
                rows = []
    if rows:
        yield _rows_to_chunk(rows, "the end")


def _parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise FailedPrecondition(
            "expected pyarrow for .parquet files (pip install 'curator-db[parquet]'), "
            "got no pyarrow"
        ) from None
    return pq


def _parquet_chunks(path: Path, size: int) -> Iterator[Chunk]:
    for batch in _parquet().ParquetFile(path).iter_batches(batch_size=size):
        cols = batch.to_pydict()
        n = batch.num_rows
        rows = [{k: cols[k][i] for k in cols if cols[k][i] is not None} for i in range(n)]
        yield _rows_to_chunk(rows, f"row batch of {n}")


# -- committing ------------------------------------------------------------------------------
def _signature(path: Path, collection: str, chunk_size: int, **options: Any) -> dict[str, Any]:
    """What must match for a progress file to apply: the file, its size and time, the
    target and the chunking (and the options that change what is sent)."""
    st = path.stat()
    return {
        "file": str(path.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "collection": collection,
        "chunk_size": chunk_size,
        **{k: v for k, v in options.items() if v is not None},
    }


def _load_progress(progress: Path, signature: dict[str, Any]) -> int:
    """Chunks already committed by an earlier run of the same import (0 if none)."""
    if not progress.exists():
        return 0
    try:
        saved = json.loads(progress.read_text())
    except (OSError, json.JSONDecodeError):
        return 0
    if {k: saved.get(k) for k in signature} != signature:
        raise FailedPrecondition(
            f"expected {progress} to record this import, got one of another file, collection, "
            "chunk size or owner (delete it to start over)"
        )
    return int(saved.get("chunks_done", 0))


def _save_progress(progress: Path, signature: dict[str, Any], done: int, rows: int) -> None:
    tmp = progress.with_name(progress.name + ".tmp")
    tmp.write_text(json.dumps({**signature, "chunks_done": done, "rows_done": rows}))
    os.replace(tmp, progress)  # atomic: the file always names a committed chunk count


def commit_chunk(db: VectorsAPI, collection: str, chunk: Chunk, tenant: str | None) -> int:
    """Upsert the chunk (grouped by owner), then grant each label; returns the last seq."""
    owners = chunk.owners or [None] * len(chunk.ids)
    by_owner: dict[str | None, list[int]] = {}
    for i, o in enumerate(owners):
        by_owner.setdefault(o or tenant, []).append(i)
    seq = 0
    for owner, rows in by_owner.items():
        idx = np.array(rows)
        docs = [chunk.documents[i] for i in rows] if chunk.documents is not None else None
        seq = db.upsert(collection, chunk.ids[idx], chunk.vectors[idx], docs, tenant=owner).seq
        if chunk.labels is not None:
            by_label: dict[str, list[int]] = {}
            for i in rows:
                for label in chunk.labels[i]:
                    by_label.setdefault(label, []).append(int(chunk.ids[i]))
            for label, ids in sorted(by_label.items()):
                # the owner's ids (ids are scoped per owner); the caller acts as itself (an
                # admin key grants freely, a tenant key only to tenants it may share with)
                seq = db.grant(collection, ids, label, owner=owner).seq or seq
    return seq


def import_file(
    db: VectorsAPI,
    collection: str,
    path: Path,
    *,
    tenant: str | None = None,
    fmt: str | None = None,
    chunk_size: int = 5000,
    progress_file: Path | None = None,
    ids: Path | None = None,
    id_start: int = 0,
    bar: bool = True,
) -> ImportReport:
    """Import `path` into `collection`, resuming from `progress_file` (default
    `<path>.progress.json`)."""
    if chunk_size < 1:
        raise InvalidArgument(f"expected chunk_size >= 1, got {chunk_size}")
    progress = progress_file or path.with_name(path.name + ".progress.json")
    signature = _signature(
        path,
        collection,
        chunk_size,
        tenant=tenant,
        ids=str(ids.resolve()) if ids else None,
        id_start=id_start or None,
    )
    skip = _load_progress(progress, signature)
    total = count_rows(path, fmt)
    done_rows, chunks, seq = 0, 0, 0
    with tqdm(total=total, unit="row", desc=f"import {path.name}", disable=not bar) as pbar:
        pbar.update(min(total, skip * chunk_size))
        for n, chunk in enumerate(read_chunks(path, chunk_size, fmt, ids, id_start)):
            if n < skip:
                continue
            seq = commit_chunk(db, collection, chunk, tenant)
            chunks += 1
            done_rows += len(chunk.ids)
            _save_progress(progress, signature, n + 1, min(total, (n + 1) * chunk_size))
            pbar.update(len(chunk.ids))
    return ImportReport(done_rows, chunks, skip, seq)


def export_jsonl(
    db: VectorsAPI,
    collection: str,
    out: Path,
    ids: np.ndarray | None = None,
    *,
    tenant: str | None = None,
    owner: str | None = None,
    chunk_size: int = 5000,
    bar: bool = True,
) -> int:
    """Write `owner`'s vectors (default: `tenant`'s) among `ids` that exist (and `tenant` may
    read) to `out` as JSON lines that `import_file` reads back; returns the rows written.
    ids None: every id the owner holds, paged in id order (`list_ids`)."""
    written = 0
    tmp = out.with_name(out.name + ".tmp")
    total = len(ids) if ids is not None else db.count(collection, tenant=owner or tenant)
    with tmp.open("w") as f, tqdm(total=total, unit="id", desc="export", disable=not bar) as pb:
        for part in _id_chunks(db, collection, ids, tenant, owner, chunk_size):
            rec = db.get(collection, part, tenant=tenant, owner=owner)
            for i, v, o, d in zip(rec.ids, rec.vectors, rec.owners, rec.documents, strict=True):
                row: dict[str, Any] = {"id": int(i), "vector": v.tolist(), "owner": o}
                if isinstance(d, bytes):
                    row["document_b64"] = base64.b64encode(d).decode()
                elif d is not None:
                    row["document"] = d
                f.write(json.dumps(row, separators=(",", ":")) + "\n")
            written += len(rec.ids)
            pb.update(len(part))
    os.replace(tmp, out)
    return written


def _id_chunks(
    db: VectorsAPI,
    collection: str,
    ids: np.ndarray | None,
    tenant: str | None,
    owner: str | None,
    size: int,
) -> Iterator[np.ndarray]:
    if ids is not None:
        for s in range(0, len(ids), size):
            yield ids[s : s + size]
        return
    after = None
    while True:
        page = db.list_ids(collection, tenant=tenant, owner=owner, after=after, limit=size)
        if len(page.ids):
            yield page.ids
        if page.next_after is None:
            return
        after = page.next_after
