"""An in-memory file system that behaves like an object store: no append, whole-object writes, no network.

Registered under the scheme ``objtest`` with fsspec (so ``fsspec.open(uri)`` works) and with Airflow's
``ObjectStoragePath`` registry (as a provider's ``filesystems`` entry would), for the ``object_store`` fixture.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

SCHEME = "objtest"


class ObjectStoreFileSystem(MemoryFileSystem):
    """``MemoryFileSystem`` that refuses append and read-write modes, as S3 and GCS do."""

    protocol = SCHEME
    root_marker = ""  # keys are "bucket/key", as on S3 and GCS
    store: dict[str, Any] = {}  # fsspec keeps the objects on the class
    pseudo_dirs = [""]

    @classmethod
    def _strip_protocol(cls, path: Any) -> str:
        text = str(path)
        if text.startswith(f"{SCHEME}://"):
            text = text[len(SCHEME) + 3 :]
        return text.strip("/")

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if "a" in mode or "+" in mode:
            raise NotImplementedError(f"{SCHEME}:// is an object store: it cannot open {path} in mode {mode!r}")
        return super()._open(path, mode, **kwargs)


@pytest.fixture
def object_store() -> Iterator[str]:
    """The URI of an empty bucket on the test object store (``objtest://bucket``)."""
    from airflow.sdk.io import fs as airflow_fs

    fsspec.register_implementation(SCHEME, ObjectStoreFileSystem, clobber=True)
    registry = airflow_fs._register_filesystems()
    registry[SCHEME] = lambda conn_id, options=None: ObjectStoreFileSystem()  # type: ignore[index]
    ObjectStoreFileSystem.store.clear()
    ObjectStoreFileSystem.pseudo_dirs[:] = [""]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*filesystem not explicitly implemented.*")
        yield f"{SCHEME}://bucket"
    ObjectStoreFileSystem.store.clear()
    registry.pop(SCHEME, None)  # type: ignore[attr-defined]
