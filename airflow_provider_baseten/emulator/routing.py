"""Routing of the emulator: the inverse of :mod:`airflow_provider_baseten.hooks.addressing`'s builder.

The hook only builds hosts and paths; parsing them back (``Host`` header to model or service, path to deployment
selector and action) is the emulator's job, with the same validation patterns the builder uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from airflow_provider_baseten.hooks.addressing import (
    _ENVIRONMENT,
    _ID,
    BASETEN_DOMAIN,
    MANAGEMENT_HOST,
    MODEL_APIS_HOST,
    TargetKind,
)

#: Host names the emulator (and any gateway) routes on; parsed with the same rules the builder uses.
_TARGET_HOST = re.compile(r"(?P<kind>model|chain)-(?P<id>[A-Za-z0-9]+)(?:-(?P<env>[a-z0-9][a-z0-9-]*))?")


#: How a path on a model or chain host picks its deployment (the first segments :attr:`Target.prefix` writes).
Selector = Literal["production", "development", "environment", "deployment", "none"]


@dataclass(frozen=True)
class ParsedPath:
    """A path on a model or chain host, split the way :class:`Target` joins it: deployment selector, then action.

    ``name`` is the environment name (``production`` for ``/production``, the name for ``/environments/{name}``) or
    the deployment id (``/deployment/{id}``); ``None`` for ``/development`` and for bare paths (``selector="none"``:
    regional hosts and ``/async_request/{id}``).
    """

    selector: Selector
    name: str | None
    action: tuple[str, ...]


def parse_target_path(path: str) -> ParsedPath | None:
    """Inverse of :attr:`Target.prefix` for routing: ``None`` when the prefix is malformed (``/environments/Bad``)."""
    segments = [segment for segment in path.split("/") if segment]
    head = segments[0] if segments else ""
    if head == "production":
        return ParsedPath("production", "production", tuple(segments[1:]))
    if head == "development":
        return ParsedPath("development", None, tuple(segments[1:]))
    if head in ("environments", "deployment"):
        pattern = _ENVIRONMENT if head == "environments" else _ID
        if len(segments) < 2 or not pattern.fullmatch(segments[1]):
            return None
        return ParsedPath("environment" if head == "environments" else "deployment", segments[1], tuple(segments[2:]))
    return ParsedPath("none", None, tuple(segments))


@dataclass(frozen=True)
class ParsedHost:
    """What a Baseten host name addresses: a model or chain (with its regional environment), or a service."""

    service: Literal["target", "management", "model_apis"]
    kind: TargetKind | None = None
    id: str | None = None
    regional_environment: str | None = None


def parse_host(host: str) -> ParsedHost | None:
    """Inverse of the builder: the emulator and gateways route on the ``Host`` header with it."""
    name = host.split(":", 1)[0].lower() if not host.startswith("[") else host
    if name == MANAGEMENT_HOST:
        return ParsedHost("management")
    if name == MODEL_APIS_HOST:
        return ParsedHost("model_apis")
    suffix = "." + BASETEN_DOMAIN
    if not name.endswith(suffix):
        return None
    match = _TARGET_HOST.fullmatch(host.split(":", 1)[0][: -len(suffix)])
    if not match:
        return None
    kind: TargetKind = "model" if match["kind"] == "model" else "chain"
    return ParsedHost("target", kind, match["id"], match["env"])
