"""Where a Baseten call goes: validated targets and the one function that builds every host and path.

Nothing a user types reaches a URL unvalidated: ids must be ASCII alphanumerics, environment names lower-case
alphanumerics and dashes, routes plain path segments. Baseten's hosts are fixed strings; the hook turns an
:class:`Endpoint` into a real URL (HTTPS to Baseten, or the connection's gateway with the Baseten host in ``Host``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from airflow_provider_baseten.exceptions import BasetenConfigError

BASETEN_DOMAIN = "api.baseten.co"
MANAGEMENT_HOST = "api.baseten.co"
MODEL_APIS_HOST = "inference.baseten.co"

_ID = re.compile(r"[A-Za-z0-9]+")
_ENVIRONMENT = re.compile(r"[a-z0-9][a-z0-9-]*")
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_ROUTE_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

TargetKind = Literal["model", "chain"]
#: Actions under a target's path prefix (``/{prefix}/{action}``) or bare on a regional host.
Action = Literal["predict", "run_remote", "async_predict", "async_run_remote", "async_queue_status", "wake"]


def _config_error(message: str) -> BasetenConfigError:
    """The error for invalid addressing input, imported on first use.

    Keeps this module free of Airflow imports: the emulator routes with its patterns and must start in well under
    a second, while ``exceptions`` imports Airflow (seconds).
    """
    from airflow_provider_baseten.exceptions import BasetenConfigError

    return BasetenConfigError(message)


def _check(pattern: re.Pattern[str], value: object, what: str, rule: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _config_error(f"Invalid {what} {value!r}: {rule}.")
    return value


def validate_id(value: object, what: str = "id") -> str:
    """Return ``value`` if it is a Baseten model, chain or deployment id (ASCII letters and digits)."""
    return _check(_ID, value, what, "expected ASCII letters and digits only")


def validate_environment(value: object) -> str:
    """Return ``value`` if it is a valid environment name (lower-case letters, digits, dashes)."""
    return _check(_ENVIRONMENT, value, "environment", "expected lower-case letters, digits and dashes, e.g. 'staging'")


def validate_request_id(value: object) -> str:
    """Return ``value`` if it looks like an async request id (letters, digits, ``-``, ``_``; at most 128)."""
    return _check(_REQUEST_ID, value, "async request id", "expected letters, digits, '-' or '_'")


def join_path(*segments: str) -> str:
    """Join already-validated segments into an absolute path: ``join_path("a", "b/c")`` is ``/a/b/c``.

    Empty segments are dropped, so no path ever has ``//``.
    """
    parts = [piece for segment in segments for piece in segment.split("/") if piece]
    return "/" + "/".join(parts)


def validate_route(route: object) -> str:
    """Return a ``/sync/{route}`` route such as ``v1/chat/completions`` if every segment is a plain name."""
    if not isinstance(route, str) or not route.strip("/"):
        raise _config_error(f"Invalid sync route {route!r}: expected a path such as 'v1/chat/completions'.")
    for segment in route.strip("/").split("/"):
        if segment in {".", ".."} or not _ROUTE_SEGMENT.fullmatch(segment):
            raise _config_error(
                f"Invalid sync route {route!r}: segment {segment!r} must be letters, digits, '_', '-' or '.'."
            )
    return route.strip("/")


@dataclass(frozen=True)
class Endpoint:
    """A Baseten host and an absolute path on it; the hook decides scheme and base URL."""

    host: str
    path: str


@dataclass(frozen=True)
class Target:
    """A validated model or chain address: which deployment a call reaches.

    ``environment`` is ``production`` (default), ``development`` or a named environment; ``deployment_id`` pins one
    deployment and excludes a non-default environment; ``regional`` moves the environment into the host name
    (``model-{id}-{env}.api.baseten.co``) where paths are bare.
    """

    kind: TargetKind
    id: str
    environment: str = "production"
    deployment_id: str | None = None
    regional: bool = False

    @classmethod
    def of(
        cls,
        *,
        model_id: str | None = None,
        chain_id: str | None = None,
        environment: str | None = "production",
        deployment_id: str | None = None,
        regional: bool = False,
    ) -> Target:
        """Validate addressing parameters as every operator, sensor, trigger and hook call takes them."""
        if (model_id is None) == (chain_id is None):
            raise _config_error("Pass exactly one of model_id or chain_id.")
        kind: TargetKind = "model" if model_id is not None else "chain"
        target_id = validate_id(model_id if model_id is not None else chain_id, f"{kind}_id")
        # Only None means the default: an empty string (a template that rendered to nothing) must not silently
        # reach production.
        environment = validate_environment("production" if environment is None else environment)
        if deployment_id is not None:
            validate_id(deployment_id, "deployment_id")
            if environment != "production":
                raise _config_error(
                    f"deployment_id {deployment_id!r} and environment {environment!r} both pick a deployment; "
                    "pass only one."
                )
            if regional:
                raise _config_error("regional endpoints address an environment, not a deployment_id.")
        return cls(kind, target_id, environment, deployment_id, bool(regional))

    def to_kwargs(self) -> dict[str, Any]:
        """The JSON addressing kwargs that :meth:`of` (and the triggers' constructors) take back."""
        return {
            f"{self.kind}_id": self.id,
            "environment": self.environment,
            "deployment_id": self.deployment_id,
            "regional": self.regional,
        }

    @property
    def host(self) -> str:
        if self.regional:
            return f"{self.kind}-{self.id}-{self.environment}.{BASETEN_DOMAIN}"
        return f"{self.kind}-{self.id}.{BASETEN_DOMAIN}"

    @property
    def prefix(self) -> str:
        """The path prefix that selects the deployment (empty on regional hosts)."""
        if self.regional:
            return ""
        if self.deployment_id is not None:
            return join_path("deployment", self.deployment_id)
        if self.environment in ("production", "development"):
            return join_path(self.environment)
        return join_path("environments", self.environment)

    def endpoint(self, action: Action) -> Endpoint:
        return Endpoint(self.host, join_path(self.prefix, action))

    def sync_endpoint(self, route: str) -> Endpoint:
        """``/{prefix}/sync/{route}``: the passthrough to a custom server (e.g. ``v1/chat/completions``)."""
        if self.kind != "model":
            raise _config_error("sync routes exist on deployed models only, not on chains.")
        return Endpoint(self.host, join_path(self.prefix, "sync", validate_route(route)))

    def async_request_endpoint(self, request_id: str) -> Endpoint:
        """Status and cancel of an async request: global ids, so no prefix, on the target's own host."""
        return Endpoint(self.host, join_path("async_request", validate_request_id(request_id)))

    def deployment_status_endpoint(self) -> Endpoint:
        """Management API record whose ``status`` says whether this target is ready.

        Production, development and pinned deployments have a deployment record; a named environment has an
        environment record whose ``current_deployment`` carries the status.
        """
        self._require_model("deployment status")
        if self.deployment_id is not None:
            which = self.deployment_id
        elif self.environment in ("production", "development"):
            which = self.environment
        else:
            return management_endpoint("models", self.id, "environments", self.environment)
        return management_endpoint("models", self.id, "deployments", which)

    def activate_endpoint(self) -> Endpoint:
        """Management API ``activate`` for this target's deployment (or environment)."""
        status = self.deployment_status_endpoint()
        return Endpoint(status.host, join_path(status.path, "activate"))

    def _require_model(self, what: str) -> None:
        if self.kind != "model":
            raise _config_error(f"{what} is available for models only, not chains.")

    def describe(self) -> str:
        """A short human label: ``model abc123 (production)``."""
        where = f"deployment {self.deployment_id}" if self.deployment_id else self.environment
        return f"{self.kind} {self.id} ({where}{', regional' if self.regional else ''})"


def management_endpoint(*segments: str) -> Endpoint:
    """``api.baseten.co/v1/...``; every segment must already be validated."""
    return Endpoint(MANAGEMENT_HOST, join_path("v1", *segments))


def model_apis_endpoint(*segments: str) -> Endpoint:
    """``inference.baseten.co/v1/...`` (Model APIs, OpenAI-compatible)."""
    return Endpoint(MODEL_APIS_HOST, join_path("v1", *segments))
