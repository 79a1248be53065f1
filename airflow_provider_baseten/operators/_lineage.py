"""Lineage of the file-to-file operators (batch predict, embeddings): OpenLineage datasets and Airflow assets.

:class:`LineageMixin` gives an operator ``get_openlineage_facets_on_complete``: its input file (``input_path``) and
output (``_output_path``, the same path ``execute`` wrote) as OpenLineage datasets. Without the OpenLineage provider
installed it returns ``None`` (the OpenLineage packages are imported only when the listener asks, never at DAG
parse). :func:`output_asset` is the Airflow asset of an output path known at parse time, for ``outlets``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_baseten.operators._base import is_templated
from airflow_provider_baseten.operators._storage import as_path, storage_uri

if TYPE_CHECKING:
    from pathlib import Path

    from airflow.providers.common.compat.sdk import ObjectStoragePath


def dataset_name(uri: str) -> tuple[str, str]:
    """OpenLineage's ``(namespace, name)`` of a storage URI: ``s3://bucket/key`` -> ``("s3://bucket", "key")``.

    Local files are ``("file", "/abs/path")`` (the OpenLineage naming of a local file system).
    """
    parts = urlsplit(uri)
    if parts.scheme in ("", "file"):
        return "file", parts.path or uri
    return f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/") or "/"


def output_asset(path: object) -> Any | None:
    """The Airflow ``Asset`` of a literal output path (``None`` when it is templated, empty or not a path)."""
    if not isinstance(path, str) or not path or is_templated(path):
        return None
    from airflow.providers.common.compat.sdk import Asset

    return Asset(storage_uri(as_path(path)))


class LineageMixin:
    """``get_openlineage_facets_on_complete`` for an operator with ``input_path`` and ``_output_path(context)``."""

    def lineage_uris(self, task_instance: Any) -> tuple[list[str], list[str]]:
        """The URIs this task read and wrote (inputs given as a list have no dataset)."""
        inputs: list[str] = []
        source = getattr(self, "input_path", None)
        if source not in (None, ""):
            inputs.append(storage_uri(as_path(source)))
        output_path: Any = getattr(self, "_output_path", None)
        outputs: list[str] = []
        if output_path is not None:
            path: ObjectStoragePath | Path = output_path({"ti": task_instance})
            outputs.append(storage_uri(path))
        return inputs, outputs

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any | None:
        """The input and output datasets of this task; ``None`` without the OpenLineage provider."""
        try:
            from airflow.providers.common.compat.openlineage.facet import Dataset
            from airflow.providers.openlineage.extractors import OperatorLineage
        except ImportError:
            return None
        inputs, outputs = self.lineage_uris(task_instance)
        return OperatorLineage(
            inputs=[Dataset(*dataset_name(uri)) for uri in inputs],
            outputs=[Dataset(*dataset_name(uri)) for uri in outputs],
        )
