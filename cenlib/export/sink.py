"""Where an export goes: a local directory or any fsspec URL (``s3://bucket/ds``, ``gs://``,
``file://``, ``memory://`` ...).

A :class:`Sink` is made from a URL string, so Dask tasks get the string and open their own
(filesystem objects with credentials are never pickled). Local files are written by rename, so a
reader never sees part of one; object stores write whole objects anyway.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec  # type: ignore[import-untyped]
from fsspec.implementations.local import LocalFileSystem  # type: ignore[import-untyped]


@dataclass
class Sink:
    url: str
    fs: Any = field(init=False, repr=False)
    root: str = field(init=False)

    def __post_init__(self) -> None:
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.root = self.root.rstrip("/")

    @property
    def local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def href(self, rel: str) -> str:
        """``rel`` as a full URL (a plain path for local exports)."""
        return self.path(rel) if self.local else self.fs.unstrip_protocol(self.path(rel))

    def makedirs(self, rel: str) -> None:
        self.fs.makedirs(self.path(rel), exist_ok=True)

    def write(self, rel: str, data: bytes) -> int:
        path = self.path(rel)
        if self.local:
            tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.tmp-{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, data)
        return len(data)

    def read(self, rel: str) -> bytes:
        return bytes(self.fs.cat_file(self.path(rel)))

    def glob(self, pattern: str) -> Iterator[str]:
        """Files matching ``pattern`` (relative), as relative names, sorted."""
        n = len(self.root) + 1
        for p in sorted(self.fs.glob(self.path(pattern))):
            yield str(p)[n:]

    def files(self) -> Iterator[str]:
        """Every file under the root, as relative names, sorted."""
        n = len(self.root) + 1
        for p in sorted(self.fs.find(self.root)):
            yield str(p)[n:]
