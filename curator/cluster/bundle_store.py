"""Where tenant bundles wait between two nodes: a directory, or object storage (S3 API).

Both implement curator.cluster.contracts.BundleStore. Keys are relative names of letters,
digits and `-_.` segments separated by `/` (no `..`, no leading `/`), so a key can never
escape the directory or the bucket prefix. Writes are atomic: a reader sees the whole
bundle or nothing (a temporary file, fsynced, renamed, the directory fsynced; S3 PUTs are
atomic by themselves).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from curator.errors import InvalidArgument, NotFound, Unavailable
from curator.storage.files import private_dir

__all__ = ["DirectoryStore", "S3Store", "check_key"]

_KEY = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")


def check_key(key: Any) -> str:
    if (
        not isinstance(key, str)
        or len(key) > 512
        or not _KEY.fullmatch(key)
        or any(part in (".", "..") for part in key.split("/"))
    ):
        raise InvalidArgument(f"expected a bundle key of [A-Za-z0-9_.-] segments, got {key!r:.80}")
    return key


class DirectoryStore:
    """Bundles as files under `root` (a local or shared file system)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        private_dir(self.root)

    def put(self, key: str, data: bytes) -> None:
        path = self.root / check_key(key)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the rename itself is durable
        finally:
            os.close(dfd)

    def get(self, key: str) -> bytes:
        try:
            return (self.root / check_key(key)).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"expected a stored bundle, got unknown key {key!r}") from None

    def delete(self, key: str) -> None:
        (self.root / check_key(key)).unlink(missing_ok=True)

    def size(self, key: str) -> int:
        try:
            return (self.root / check_key(key)).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"expected a stored bundle, got unknown key {key!r}") from None

    def keys(self, prefix: str = "") -> Iterable[str]:
        return sorted(k for k in self._walk() if k.startswith(prefix))

    def _walk(self) -> Iterator[str]:
        for p in self.root.rglob("*"):
            if p.is_file() and not p.name.startswith(".tmp-"):
                yield p.relative_to(self.root).as_posix()


class S3Store:
    """Bundles as objects under `prefix` in an S3 bucket (AWS, SeaweedFS, MinIO, moto).
    `client`: a boto3 S3 client (its endpoint, credentials and retries are the caller's)."""

    def __init__(self, client: Any, bucket: str, prefix: str = "curator/bundles") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = check_key(prefix) + "/" if prefix else ""

    def put(self, key: str, data: bytes) -> None:
        self._call("put", self.client.put_object, Key=self._key(key), Body=data)

    def get(self, key: str) -> bytes:
        r = self._call("get", self.client.get_object, Key=self._key(key), missing=key)
        body: bytes = r["Body"].read()
        return body

    def delete(self, key: str) -> None:
        self._call("delete", self.client.delete_object, Key=self._key(key))

    def size(self, key: str) -> int:
        r = self._call("head", self.client.head_object, Key=self._key(key), missing=key)
        return int(r["ContentLength"])

    def keys(self, prefix: str = "") -> Iterable[str]:
        out: list[str] = []
        token: dict[str, str] = {}
        while True:
            r = self._call(
                "list", self.client.list_objects_v2, Prefix=self.prefix + prefix, **token
            )
            out += [o["Key"][len(self.prefix) :] for o in r.get("Contents", [])]
            if not r.get("IsTruncated"):
                return sorted(out)
            token = {"ContinuationToken": r["NextContinuationToken"]}

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _call(self, what: str, fn: Any, missing: str = "", **kw: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kw)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if missing and code in ("NoSuchKey", "404"):
                raise NotFound(f"expected a stored bundle, got unknown key {missing!r}") from None
            raise Unavailable(f"expected the bundle store to {what}, got {code or e}") from e
        except BotoCoreError as e:
            raise Unavailable(f"expected the bundle store to {what}, got {e}") from e
