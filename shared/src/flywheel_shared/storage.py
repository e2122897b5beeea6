"""A URI-addressed object store: a local directory by default, S3-compatible through fsspec.

Keys are relative slash paths (``datasets/transactions/manifest.json``). Writes are atomic:
readers see the old object or the new one, never a torn one.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import fsspec


class ObjectStore:
    """Put/get whole objects under a root URI (``/data``, ``file:///data``, ``s3://b/p``)."""

    def __init__(self, root: str) -> None:
        fs, path = fsspec.core.url_to_fs(root)
        self.fs = fs
        self.local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
        self.root = str(Path(path).resolve()) if self.local else path.rstrip("/")
        self.root_uri = f"file://{self.root}" if self.local else f"{fs.protocol[0]}://{self.root}"
        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid object key {key!r}")
        return f"{self.root}/{key}"

    def uri(self, key: str) -> str:
        """The full URI of ``key``."""
        return f"{self.root_uri}/{key}"

    def put(self, key: str, data: bytes) -> str:
        """Write ``data`` at ``key`` atomically (and durably, locally); return its URI."""
        path = self._path(key)
        if self.local:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            dir_fd = os.open(Path(path).parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        else:
            # An S3 PUT is atomic: the object appears whole or not at all.
            self.fs.pipe_file(path, data)
        return self.uri(key)

    def get(self, key: str) -> bytes:
        """Read the object at ``key``; ``FileNotFoundError`` if absent."""
        data: bytes = self.fs.cat_file(self._path(key))
        return data

    def delete(self, key: str) -> None:
        """Remove the object at ``key`` (nothing if absent)."""
        path = self._path(key)
        if self.fs.exists(path):
            self.fs.rm_file(path)

    def exists(self, key: str) -> bool:
        """True if an object is stored at ``key``."""
        return bool(self.fs.exists(self._path(key)))

    def list(self, prefix: str) -> list[str]:
        """Keys directly under the folder ``prefix``."""
        path = self._path(prefix.rstrip("/"))
        if not self.fs.exists(path):
            return []
        return sorted(
            p[len(self.root) + 1 :] if p.startswith(self.root) else p
            for p in self.fs.ls(path, detail=False)
        )
