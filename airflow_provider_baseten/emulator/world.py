"""The emulator's world: models and chains with their deployments, Model APIs slugs, the user, webhook secrets.

A world is plain data (dataclasses) built in Python or loaded from JSON (:meth:`World.from_json`). It says how each
deployment starts (status, cold start, scale-down delay, replicas, predict concurrency) and what its model does
(a :mod:`behaviour <airflow_provider_baseten.emulator.behaviours>`); the running state (status changes, queues,
calls) lives in :mod:`~airflow_provider_baseten.emulator.lifecycle` and is rebuilt from the world on every reset.

World file (JSON)::

    {
      "models": [
        {"id": "echo01", "name": "Echo", "behaviour": "echo",
         "regional_environments": ["prod-us"],
         "deployments": [
           {"id": "echoprod01", "environment": "production", "status": "ACTIVE", "min_replicas": 1},
           {"id": "echous01", "environment": "prod-us"},
           {"id": "echodev01", "environment": null, "development": true, "status": "SCALED_TO_ZERO",
            "cold_start_seconds": 120, "behaviour": {"kind": "sleep", "seconds": 2, "then": "echo"}}]}],
      "chains": [{"id": "summarize01", "behaviour": "summarize", "deployments": [{"id": "sumprod01"}]}],
      "model_apis": ["deepseek-ai/DeepSeek-V3.1"],
      "api_keys": {"invoke-only-key": "invoke"},
      "webhook_secrets": ["whsec-1"],
      "user": {"user_id": "u1", "email": "dev@example.com"}
    }
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from airflow_provider_baseten.emulator.behaviours import Behaviour, Flaky, Sleep, behaviour_from_spec
from airflow_provider_baseten.hooks.models import DeploymentStatus

#: The key ``python -m airflow_provider_baseten.emulator`` and the pytest fixture accept unless told otherwise.
DEMO_API_KEY = "emulator-demo-key"
#: Secret the default world signs webhooks with (``X-BASETEN-SIGNATURE: v1=<hmac-sha256>``).
DEMO_WEBHOOK_SECRET = "emulator-webhook-secret"

KeyScope = Literal["full", "invoke"]
TargetKind = Literal["model", "chain"]


@dataclass
class DeploymentSpec:
    """One deployment and how it starts.

    ``environment`` is the environment it serves (``production``, a named one, a regional one) or ``None``;
    ``development=True`` makes it the model's development deployment (``/development/...``). Times are emulated
    seconds. ``min_replicas >= 1`` keeps it up forever; with 0 it scales to zero ``scale_down_delay`` seconds after
    its last request. ``predict_timeout`` bounds both parking on a cold start (500 beyond) and a sync predict's run
    (504 beyond). ``behaviour`` overrides the model's. ``inactive_after``: seconds without traffic after which a
    deployment with ``min_replicas=0`` becomes ``INACTIVE`` (``None``: never). Promoting this deployment takes
    ``promotion_seconds`` once it is ``ACTIVE``, and ends ``FAILED`` with ``promotion_failure`` as Baseten's message
    when that is set.
    """

    id: str
    environment: str | None = "production"
    development: bool = False
    status: str = DeploymentStatus.ACTIVE.value
    name: str | None = None
    cold_start_seconds: float = 60.0
    scale_down_delay: float = 900.0
    min_replicas: int = 0
    max_replicas: int = 1
    predict_concurrency: int = 1
    predict_timeout: float = 1200.0
    behaviour: Behaviour | None = None
    instance_type: str = "L4:4x16"
    labels: dict[str, Any] | None = None
    inactive_after: float | None = 14 * 86400.0
    promotion_seconds: float = 120.0
    promotion_failure: str | None = None

    def __post_init__(self) -> None:
        from airflow_provider_baseten.hooks.addressing import validate_environment, validate_id

        validate_id(self.id, "deployment id")
        if self.environment is not None:
            validate_environment(self.environment)
        self.status = DeploymentStatus(self.status).value
        if self.behaviour is not None:
            self.behaviour = behaviour_from_spec(self.behaviour)
        if self.predict_concurrency < 1:
            raise ValueError(f"deployment {self.id}: predict_concurrency must be at least 1")


@dataclass
class ModelSpec:
    """A model (or, with ``kind="chain"``, a chain) and its deployments."""

    id: str
    behaviour: Behaviour | Callable[..., Any] | str | Mapping[str, Any] = "echo"
    deployments: list[DeploymentSpec] = field(default_factory=list)
    name: str | None = None
    regional_environments: tuple[str, ...] = ()
    kind: TargetKind = "model"

    def __post_init__(self) -> None:
        from airflow_provider_baseten.hooks.addressing import validate_environment, validate_id

        validate_id(self.id, f"{self.kind} id")
        self.behaviour = behaviour_from_spec(self.behaviour)
        self.deployments = [d if isinstance(d, DeploymentSpec) else DeploymentSpec(**d) for d in self.deployments]
        self.regional_environments = tuple(validate_environment(env) for env in self.regional_environments)
        environments = [d.environment for d in self.deployments if d.environment]
        duplicates = {env for env in environments if environments.count(env) > 1}
        if duplicates:
            raise ValueError(f"{self.kind} {self.id}: several deployments serve environment(s) {sorted(duplicates)}")
        if sum(d.development for d in self.deployments) > 1:
            raise ValueError(f"{self.kind} {self.id}: more than one development deployment")

    @property
    def display_name(self) -> str:
        return self.name or self.id


@dataclass
class ChainSpec(ModelSpec):
    """A chain: served on ``chain-{id}`` hosts, called with ``run_remote``/``async_run_remote``."""

    kind: TargetKind = "chain"


@dataclass
class World:
    """Everything the emulator serves. ``models`` and ``chains`` are keyed by id."""

    models: dict[str, ModelSpec] = field(default_factory=dict)
    chains: dict[str, ModelSpec] = field(default_factory=dict)
    model_apis: list[str] = field(default_factory=list)
    api_keys: dict[str, KeyScope] = field(default_factory=dict)
    webhook_secrets: list[str] = field(default_factory=list)
    user: dict[str, Any] = field(
        default_factory=lambda: {
            "user_id": "emulator-user",
            "email": "developer@example.com",
            "name": "Emulator Developer",
            "workspace_name": "emulator",
        }
    )

    def add(self, *specs: ModelSpec) -> World:
        """Add models and chains (by their ``kind``); returns the world for chaining."""
        for spec in specs:
            (self.chains if spec.kind == "chain" else self.models)[spec.id] = spec
        return self

    def target(self, kind: TargetKind, target_id: str) -> ModelSpec | None:
        return (self.chains if kind == "chain" else self.models).get(target_id)

    # --- loading ---------------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> World:
        unknown = set(data) - {"models", "chains", "model_apis", "api_keys", "webhook_secrets", "user"}
        if unknown:
            raise ValueError(f"unknown world keys {sorted(unknown)}")
        world = cls(
            model_apis=list(data.get("model_apis", [])),
            api_keys=dict(data.get("api_keys", {})),
            webhook_secrets=list(data.get("webhook_secrets", [])),
        )
        if "user" in data:
            world.user = dict(data["user"])
        for scope in world.api_keys.values():
            if scope not in ("full", "invoke"):
                raise ValueError(f"api key scope must be 'full' or 'invoke', got {scope!r}")
        world.add(*(_spec(entry, "model") for entry in data.get("models", [])))
        world.add(*(_spec(entry, "chain") for entry in data.get("chains", [])))
        return world

    @classmethod
    def from_json(cls, source: str | Path) -> World:
        """Load a world file (see the module docstring for its format)."""
        return cls.from_dict(json.loads(Path(source).read_text()))

    @classmethod
    def default(cls) -> World:
        """The demo world every test, example DAG and the CLI use (ids are part of the contract)."""
        echo, sentiment = "echo", "sentiment"
        world = cls(
            model_apis=[
                "deepseek-ai/DeepSeek-V3.1",
                "zai-org/GLM-5.2",
                "meta-llama/Llama-4-Maverick-17B-128E-Instruct",
            ],
            webhook_secrets=[DEMO_WEBHOOK_SECRET],
        )
        always_on: dict[str, Any] = {"min_replicas": 1, "predict_concurrency": 8}
        world.add(
            ModelSpec(
                "sentiment01",
                sentiment,
                name="Sentiment",
                regional_environments=("prod-us",),
                deployments=[
                    DeploymentSpec("sentprod01", "production", **always_on),
                    DeploymentSpec("sentdev01", None, development=True, **always_on),
                    DeploymentSpec("sentstage01", "staging", **always_on),
                    DeploymentSpec("sentus01", "prod-us", **always_on),
                ],
            ),
            ModelSpec(
                "echo01",
                echo,
                name="Echo",
                deployments=[DeploymentSpec("echoprod01", min_replicas=1, predict_concurrency=64)],
            ),
            ModelSpec(
                "textstats01",
                "textstats",
                name="Text statistics",
                deployments=[DeploymentSpec("statsprod01", **always_on)],
            ),
            ModelSpec(
                "coldstart01",
                sentiment,
                name="Cold start",
                deployments=[
                    DeploymentSpec(
                        "coldprod01",
                        status="SCALED_TO_ZERO",
                        cold_start_seconds=180,
                        scale_down_delay=900,
                        predict_concurrency=4,
                    )
                ],
            ),
            ModelSpec(
                "inactive01",
                echo,
                name="Inactive",
                deployments=[DeploymentSpec("inactprod01", status="INACTIVE", cold_start_seconds=60)],
            ),
            ModelSpec(
                "buildfail01",
                echo,
                name="Build failed",
                deployments=[DeploymentSpec("bfprod01", status="BUILD_FAILED")],
            ),
            ModelSpec(
                "unhealthy01", echo, name="Unhealthy", deployments=[DeploymentSpec("unhprod01", status="UNHEALTHY")]
            ),
            ModelSpec(
                "slow01",
                Sleep(5.0, behaviour_from_spec(sentiment)),
                name="Slow",
                deployments=[DeploymentSpec("slowprod01", min_replicas=1, predict_concurrency=2)],
            ),
            ModelSpec(
                "flaky01",
                Flaky(probability=0.2, status=503, seed=7),
                name="Flaky",
                deployments=[DeploymentSpec("flakyprod01", **always_on)],
            ),
            ModelSpec(
                "llm01",
                {"kind": "chat", "model_name": "llm01"},
                name="Deployed LLM",
                deployments=[DeploymentSpec("llmprod01", **always_on)],
            ),
            ModelSpec(
                "embed01",
                "bei",
                name="Embeddings (BEI)",
                deployments=[DeploymentSpec("embedprod01", min_replicas=1, predict_concurrency=32)],
            ),
            ChainSpec(
                "summarize01",
                behaviour="summarize",
                name="Summarize",
                deployments=[DeploymentSpec("sumprod01", **always_on)],
            ),
        )
        return world


def _spec(entry: Mapping[str, Any], kind: TargetKind) -> ModelSpec:
    options = dict(entry)
    options["regional_environments"] = tuple(options.get("regional_environments", ()))
    options["deployments"] = [DeploymentSpec(**d) for d in options.get("deployments", [])]
    options.setdefault("kind", kind)
    if options["kind"] != kind:
        raise ValueError(f"{kind} {entry.get('id')!r} declares kind {options['kind']!r}")
    return ModelSpec(**options)


def keys_of(world: World, api_key: str | None, extra: Mapping[str, KeyScope] | None = None) -> dict[str, KeyScope]:
    """Every accepted key and its scope: the emulator's own key (full), the world's keys, explicit extras."""
    keys: dict[str, KeyScope] = dict(world.api_keys)
    if api_key:
        keys[api_key] = "full"
    keys.update(extra or {})
    return keys


def iter_targets(world: World) -> Iterable[ModelSpec]:
    yield from world.models.values()
    yield from world.chains.values()
