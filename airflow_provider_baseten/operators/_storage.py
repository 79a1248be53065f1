"""Where outputs go: local paths versus object stores, and the URIs the provider returns for them.

Every URI handed back to a user (a batch manifest, a spilled result) comes from :func:`storage_uri`, so it opens
as returned with ``ObjectStoragePath(uri)`` and ``fsspec.open(uri)``: no percent-encoding (``fsspec`` does not
decode it), no connection id in the authority.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    """The URI of ``path`` as the provider returns it: ``file:///abs/path`` or ``{protocol}://{bucket}/{key}``.

    A connection id is not part of it: ``ObjectStoragePath(uri, conn_id=...)`` opens it with other credentials.
    """
    if is_local(path):
        return "file://" + str(path)
    if getattr(path, "protocol", None) in ("file", "local", ""):
        return "file://" + str(path.path)  # type: ignore[union-attr]
    return str(path)


#: ``[baseten] output_location``: the base URI of everything a task writes for another task or its own retry.
SECTION, OPTION = "baseten", "output_location"
#: Executors whose tasks (and retries) may run on another machine than the one that wrote a local file.
_DISTRIBUTED_EXECUTORS = ("celery", "kubernetes", "edge")


def configured_location() -> str | None:
    """``[baseten] output_location`` (``AIRFLOW__BASETEN__OUTPUT_LOCATION``), or ``None`` when unset."""
    from airflow.providers.common.compat.sdk import conf

    value = conf.get(SECTION, OPTION, fallback="") or ""
    return value.strip() or None


def distributed_executor() -> str | None:
    """The configured executor when it runs tasks on other machines (Celery, Kubernetes, Edge), else ``None``."""
    from airflow.providers.common.compat.sdk import conf

    executors = conf.get("core", "executor", fallback="") or ""
    for name in executors.split(","):
        if any(kind in name.lower() for kind in _DISTRIBUTED_EXECUTORS):
            return name.strip()
    return None


def warn_if_not_shared(path: ObjectStoragePath | Path, what: str, log: Any) -> None:
    """A warning in the task log when a local path is used where the next task may run on another machine."""
    local = is_local(path) or getattr(path, "protocol", None) in ("file", "local", "")
    executor = distributed_executor() if local else None
    if executor:
        log.warning(
            "%s goes to the local path %s, but the executor %s runs tasks on other machines: a downstream task or "
            "a retry elsewhere will not find it. Set [baseten] %s (AIRFLOW__BASETEN__OUTPUT_LOCATION) to a shared "
            "URI such as s3://bucket/prefix.",
            what,
            storage_uri(path),
            executor,
            OPTION,
        )
