"""Keep XCom small: with a result location set, a result over a size threshold goes there and the task returns its URI.

Shared by the predict, chain-run and chat operators. The location is the operator's ``result_path``, else
``{[baseten] output_location}/baseten-results``; with neither, every result goes to XCom (nothing is written to a
local file unless asked). The file name is derived from the task instance
(``{base}/{dag_id}/{run_id}/{task_id}[-{map_index}].json``), so a retry overwrites its own earlier file instead of
leaving a second one, and mapped instances never collide.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_baseten.exceptions import BasetenConfigError
from airflow_provider_baseten.operators._storage import configured_location, storage_uri, warn_if_not_shared

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

log = logging.getLogger(__name__)

#: Default threshold: results above 1 MiB of JSON go to object storage.
DEFAULT_MAX_RESULT_BYTES = 1024 * 1024
RESULTS_FOLDER = "baseten-results"

_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")


def default_base_path(folder: str = RESULTS_FOLDER) -> ObjectStoragePath | None:
    """``{[baseten] output_location}/{folder}``, or ``None`` when the setting is empty."""
    location = configured_location()
    return None if location is None else to_storage_path(location) / folder


def as_storage_path(base_path: str | ObjectStoragePath | None) -> ObjectStoragePath | None:
    """Where large results go: ``base_path``, else the provider setting; ``None``: nowhere, XCom keeps them.

    Raises ``BasetenConfigError`` for a value that is not a path, a URI or an ``ObjectStoragePath``.
    """
    if base_path is None or base_path == "":
        return default_base_path()
    return to_storage_path(base_path)


def required_location(base_path: str | ObjectStoragePath | None, folder: str) -> ObjectStoragePath:
    """``base_path``, else ``{[baseten] output_location}/{folder}``; with neither, a ``BasetenConfigError``."""
    if base_path not in (None, ""):
        return to_storage_path(base_path)
    default = default_base_path(folder)
    if default is None:
        raise BasetenConfigError(
            "No output location: pass one to the operator (output_path=) or set [baseten] output_location "
            "(AIRFLOW__BASETEN__OUTPUT_LOCATION) to a URI every worker can reach, e.g. s3://bucket/prefix."
        )
    return default


def to_storage_path(base_path: str | ObjectStoragePath | None) -> ObjectStoragePath:
    """An ``ObjectStoragePath`` (keeps its ``conn_id``), a URI, or a local path, as an ``ObjectStoragePath``."""
    if isinstance(base_path, ObjectStoragePath):
        return base_path
    if not isinstance(base_path, str) or not base_path:
        raise BasetenConfigError(
            f"result path must be a URI string or an ObjectStoragePath, not {type(base_path).__name__}."
        )
    if "://" not in base_path:
        return ObjectStoragePath(f"file://{os.path.abspath(base_path)}")
    return ObjectStoragePath(base_path)


def check_threshold(threshold_bytes: object, name: str = "max_result_bytes") -> int | None:
    """Validate a size threshold: a non-negative int, or ``None`` (never spill)."""
    if threshold_bytes is None:
        return None
    if isinstance(threshold_bytes, bool) or not isinstance(threshold_bytes, int) or threshold_bytes < 0:
        raise BasetenConfigError(f"{name} must be a non-negative integer (bytes) or None, got {threshold_bytes!r}.")
    return threshold_bytes


def task_result_path(context: Context, base: ObjectStoragePath, *, suffix: str = ".json") -> ObjectStoragePath:
    """``{base}/{dag_id}/{run_id}/{task_id}[-{map_index}]{suffix}`` for the running task instance."""
    ti = context["ti"]
    name = _UNSAFE.sub("_", ti.task_id)
    map_index = getattr(ti, "map_index", -1)
    if map_index is not None and map_index >= 0:
        name = f"{name}-{map_index}"
    return base / _UNSAFE.sub("_", ti.dag_id) / _UNSAFE.sub("_", ti.run_id) / f"{name}{suffix}"


def encode_json(result: Any) -> bytes:
    """The bytes a result takes as JSON (objects JSON does not know are written with ``str``)."""
    return json.dumps(result, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def store_if_large(
    result: Any,
    context: Context,
    *,
    threshold_bytes: int | None = DEFAULT_MAX_RESULT_BYTES,
    base_path: str | ObjectStoragePath | None = None,
) -> Any:
    """Return ``result``, or, when its JSON is larger than ``threshold_bytes`` and a result location is set
    (``base_path`` or ``[baseten] output_location``), write it there and return the file's URI.

    ``threshold_bytes=None`` never writes. The write overwrites the same file on a task retry (idempotent). The
    URI opens as returned with ``ObjectStoragePath(uri)`` and ``fsspec.open(uri)``.
    """
    if threshold_bytes is None:
        return result
    data = encode_json(result)
    if len(data) <= threshold_bytes:
        return result
    base = as_storage_path(base_path)
    if base is None:
        log.warning(
            "The result is %d bytes (over max_result_bytes=%d) and goes to XCom: no result location is set "
            "(result_path, or [baseten] output_location).",
            len(data),
            threshold_bytes,
        )
        return result
    path = task_result_path(context, base)
    warn_if_not_shared(path, "The result", log)
    if path.protocol in ("file", "local"):
        # Object stores have no folders; a local file system needs them.
        path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.write(data)
    uri = storage_uri(path)
    log.info("The result is %d bytes (over %d): written to %s; returning its URI.", len(data), threshold_bytes, uri)
    return uri
