"""Where outputs go: local paths versus object stores, and the URIs the provider returns for them.

Every URI handed back to a user (a batch manifest, a spilled result) comes from :func:`storage_uri`, so it opens
as returned with ``ObjectStoragePath(uri)`` and ``fsspec.open(uri)``: no percent-encoding (``fsspec`` does not
decode it), no connection id in the authority.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import ObjectStoragePath


def as_path(value: str | ObjectStoragePath) -> ObjectStoragePath | Path:
    """A local ``Path`` for local files (appends, flush, fsync, truncate), else an ``ObjectStoragePath``."""
    if isinstance(value, str):
        if "://" not in value:
            return Path(os.path.abspath(os.path.expanduser(value)))
        if value.startswith("file://"):
            return Path(value[len("file://") :])
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        return ObjectStoragePath(value)
    if getattr(value, "protocol", None) in ("file", "local", ""):
        return Path(str(value.path))
    return value


def is_local(path: ObjectStoragePath | Path) -> bool:
    """A plain local path (on Airflow 3.1 an ``ObjectStoragePath`` is a ``pathlib.Path`` too: tell them apart)."""
    return isinstance(path, Path) and not hasattr(path, "protocol")


def storage_uri(path: ObjectStoragePath | Path) -> str:
    """The URI of ``path`` as the provider returns it: ``file:///abs/path`` or ``{protocol}://{bucket}/{key}``."""
    if is_local(path):
        return "file://" + str(path)
    protocol = getattr(path, "protocol", "") or "file"
    if protocol in ("file", "local"):
        return "file://" + str(path.path)  # type: ignore[union-attr]
    return f"{protocol}://{str(path.path).lstrip('/')}"  # type: ignore[union-attr]
