"""client/bulk.py in-process: the readers reject bad files with clear errors before sending
anything, and an import into the in-process Database (the same VectorsAPI as the SDK) commits
owners, documents and label grants chunk by chunk."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from client import bulk
from curator.config import DatabaseConfig
from curator.database import Database
from curator.errors import FailedPrecondition, InvalidArgument


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    d = Database(DatabaseConfig(data_dir=str(tmp_path / "db")), background=False)
    for t in ("acme", "beta", "lab"):
        d.create_tenant(t)
    d.create_collection("c", 3)
    yield d
    d.close()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"id": 1, "vector": [1, 2, 3]}\n{nope\n', "expected JSON on line 2"),
        ("[1, 2]\n", "expected an object on line 1"),
        ('{"id": 1}\n', "expected rows with an integer 'id'"),
        ('{"id": -1, "vector": [1, 2, 3]}\n', "expected rows with an integer 'id'"),
        ('{"id": 1, "vector": [1, 2, 3]}\n{"id": 2, "vector": [1]}\n', "of one length"),
        ('{"id": 1, "vector": [1, 2, 3], "document_b64": "!!"}\n', "expected base64"),
    ],
)
def test_bad_jsonl_is_rejected(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "f.jsonl").write_text(text)
    with pytest.raises(InvalidArgument, match=match):
        list(bulk.read_chunks(tmp_path / "f.jsonl", 10))


def test_bad_npy_and_unknown_formats(tmp_path: Path) -> None:
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2), np.float32))
    with pytest.raises(InvalidArgument, match="expected an"):
        list(bulk.read_chunks(tmp_path / "cube.npy", 10))
    np.save(tmp_path / "v.npy", np.zeros((3, 2), np.float32))
    np.save(tmp_path / "ids.npy", np.arange(2))
    with pytest.raises(InvalidArgument, match=r"expected \(3,\) ids"):
        list(bulk.read_chunks(tmp_path / "v.npy", 10, ids=tmp_path / "ids.npy"))
    (tmp_path / "v.csv").write_text("1,2\n")
    with pytest.raises(InvalidArgument, match=r"expected a \.npy, \.jsonl or \.parquet"):
        list(bulk.read_chunks(tmp_path / "v.csv", 10))


def test_parquet_without_pyarrow_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    (tmp_path / "f.parquet").write_bytes(b"PAR1")
    with pytest.raises(FailedPrecondition, match="curator-db\\[parquet\\]"):
        list(bulk.read_chunks(tmp_path / "f.parquet", 10))


def test_import_commits_owners_documents_and_labels(db: Database, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = [
        {
            "id": i,
            "vector": rng.standard_normal(3).tolist(),
            **({"owner": "beta"} if i >= 6 else {}),
            "labels": ["lab"] if i % 3 == 0 else [],
            **({"document_b64": "AAE="} if i == 1 else {"document": {"i": i}}),
        }
        for i in range(9)
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = bulk.import_file(db, "c", path, tenant="acme", chunk_size=4, bar=False)
    assert (report.rows, report.chunks, report.skipped_chunks) == (9, 3, 0)
    assert (db.count("c", tenant="acme"), db.count("c", tenant="beta")) == (6, 3)
    assert db.count("c", tenant="lab") == 3  # ids 0, 3, 6 granted
    a, b = db.get("c", [1, 7], owner="acme"), db.get("c", [1, 7], owner="beta")
    assert (a.owners, b.owners) == (["acme"], ["beta"])  # ids are scoped per owner
    assert (a.documents, b.documents) == ([b"\x00\x01"], [{"i": 7}])
    out = tmp_path / "out.jsonl"
    ids = np.arange(20, dtype=np.uint64)
    assert bulk.export_jsonl(db, "c", out, ids, owner="acme", bar=False) == 6
    everything = tmp_path / "all.jsonl"  # no id list: paged through list_ids
    assert bulk.export_jsonl(db, "c", everything, owner="acme", chunk_size=4, bar=False) == 6
    assert everything.read_text() == out.read_text()
    back = [json.loads(line) for line in out.read_text().splitlines()]
    assert back[1] == {**back[1], "id": 1, "owner": "acme", "document_b64": "AAE="}
