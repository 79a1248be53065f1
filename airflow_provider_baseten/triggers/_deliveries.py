"""The webhook receiver's stored deliveries, as the async batch trigger reads them.

:class:`~airflow_provider_baseten.webhooks.WebhookReceiver` writes each verified delivery to
``{store}/{prefix}/{request_id}.json`` (a whole object, or a rename on local disk: never half a file). A delivery's
body is Baseten's ``{request_id, model_id, deployment_id, type, time, data, errors}``: ``errors`` empty or ``null``
means the request succeeded, else it failed with them. :class:`DeliveryListing` lists the folder and returns only the
ids the caller still waits on, so each interval costs a listing, not a read per request, and the listing keeps no
state of its own (the names stream past; nothing grows with the folder).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from airflow_provider_baseten.exceptions import BasetenConfigError

_SUFFIX = ".json"


def check_outputs_location(location: Any) -> str:
    """``location`` as a folder URI or path (``URI[/prefix]``); a clear error for anything else."""
    if not isinstance(location, str) or not location.strip():
        raise BasetenConfigError(
            f"webhook_outputs must be the webhook receiver's store folder as a URI or path (e.g. "
            f"'s3://bucket/outputs/run-1' or '/data/outputs'), got {type(location).__name__} {location!r}."
        )
    if "://" in location and not location.split("://", 1)[1].strip("/"):
        raise BasetenConfigError(f"webhook_outputs {location!r} names a scheme but no folder.")
    return location.rstrip("/")


@dataclass
class Delivery:
    """A stored delivery: the request's terminal status, its errors and the output's URI."""

    request_id: str
    status: str
    errors: list[Any]
    uri: str


@dataclass
class DeliveryListing:
    """The request ids with a delivery in ``location`` (see :meth:`delivered`)."""

    location: str

    def __post_init__(self) -> None:
        from airflow_provider_baseten.operators._storage import as_path, is_local, storage_uri

        self._path = as_path(self.location)
        self._local = is_local(self._path)
        self.uri = storage_uri(self._path)

    def _names(self) -> Iterator[str]:
        try:
            if self._local:
                with os.scandir(str(self._path)) as entries:
                    for entry in entries:
                        yield entry.name
            else:
                for child in self._path.iterdir():
                    yield child.name
        except FileNotFoundError:
            return  # nothing delivered yet: the receiver makes the folder with its first write

    def delivered(self, wanted: Callable[[str], bool]) -> list[str]:
        """The ids with a delivery for which ``wanted(id)`` holds (hidden ``.tmp`` partials and other files are
        not deliveries). One listing; a caller that stops wanting an id (it ended) is not given it again."""
        found: list[str] = []
        for name in self._names():
            if name.endswith(_SUFFIX) and not name.startswith("."):
                request_id = name[: -len(_SUFFIX)]
                if wanted(request_id):
                    found.append(request_id)
        return found

    def read(self, request_id: str) -> Delivery:
        """The delivery of ``request_id``; ``ValueError`` naming the file when it is not a Baseten delivery."""
        from airflow_provider_baseten.hooks.models import AsyncRequestStatus
        from airflow_provider_baseten.webhooks import output_uri

        uri = output_uri(self.uri, request_id)
        raw = (self._path / f"{request_id}{_SUFFIX}").read_bytes()
        try:
            payload = json.loads(raw)
        except ValueError as err:
            raise ValueError(f"the delivery {uri} is not JSON ({err})") from None
        if not isinstance(payload, dict):
            raise ValueError(f"the delivery {uri} is a JSON {type(payload).__name__}, not an object")
        if payload.get("request_id", request_id) != request_id:
            raise ValueError(f"the delivery {uri} is for request {payload.get('request_id')!r}")
        errors = payload.get("errors")
        if errors is not None and not isinstance(errors, list):
            raise ValueError(f"the delivery {uri} has errors that are not a list: {type(errors).__name__}")
        status = AsyncRequestStatus.FAILED if errors else AsyncRequestStatus.SUCCEEDED
        return Delivery(request_id, status.value, list(errors or []), uri)
