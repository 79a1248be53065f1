"""The management API subset on ``api.baseten.co``: models, deployments, environments, activate, users/me, chains.

Records have the shapes of ``management-openapi.json`` (``ModelV1``, ``DeploymentV1``, ``EnvironmentV1``, ...),
filled from the world and each deployment's live status. Invoke-only keys get 403 here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from airflow_provider_baseten.emulator.async_queue import iso
from airflow_provider_baseten.emulator.promotion import PromotionError, promotion_of, start_promotion
from airflow_provider_baseten.emulator.responses import Call, Handler, error, json_response
from airflow_provider_baseten.hooks.models import AUTOSCALING_FIELDS as _AUTOSCALING_FIELDS

if TYPE_CHECKING:
    from airflow_provider_baseten.emulator.lifecycle import DeploymentRuntime, TargetRuntime
    from airflow_provider_baseten.emulator.world import TargetKind

_GPU_MEMORY_MIB = {"L4": 24_576, "A10G": 24_576, "A100": 81_920, "H100": 81_920, "T4": 16_384}


def _instance_type(name: str) -> dict[str, Any]:
    """``InstanceTypeV1`` from a name such as ``L4:4x16`` (GPU, CPUs x GiB) or ``1x2`` (CPU only)."""
    gpu, _, shape = name.rpartition(":")
    cpus, _, memory = shape.partition("x")
    gpu_type = gpu or None
    return {
        "id": name,
        "name": name,
        "memory_limit_mib": int(memory or 2) * 1024,
        "millicpu_limit": int(cpus or 1) * 1000,
        "gpu_count": 1 if gpu_type else 0,
        "gpu_type": gpu_type,
        "gpu_memory_limit_mib": _GPU_MEMORY_MIB.get(gpu_type or "", 24_576) if gpu_type else None,
    }


def _autoscaling(deployment: DeploymentRuntime) -> dict[str, Any]:
    return deployment.autoscaler.settings()


def deployment_record(deployment: DeploymentRuntime) -> dict[str, Any]:
    """``DeploymentV1``."""
    spec = deployment.spec
    return {
        "id": spec.id,
        "created_at": iso(deployment.created_at),
        "name": spec.name or spec.id,
        "model_id": deployment.target.id,
        "is_production": spec.environment == "production",
        "is_development": spec.development,
        "status": deployment.status.value,
        "active_replica_count": deployment.active_replicas,
        "autoscaling_settings": _autoscaling(deployment),
        "instance_type_name": spec.instance_type,
        "environment": spec.environment,
        "labels": spec.labels,
    }


def environment_record(name: str, deployment: DeploymentRuntime, target: TargetRuntime | None = None) -> dict[str, Any]:
    """``EnvironmentV1``, with the environment's promotion (in progress, or the last one) when ``target`` is given."""
    promotion = promotion_of(target, name) if target is not None else None
    return {
        "name": name,
        "created_at": iso(deployment.created_at),
        "model_id": deployment.target.id,
        "current_deployment": deployment_record(deployment),
        "candidate_deployment": deployment_record(promotion.candidate) if promotion else None,
        "in_progress_promotion": promotion.record() if promotion else None,
        "autoscaling_settings": _autoscaling(deployment),
        "promotion_settings": {
            "redeploy_on_promotion": False,
            "rolling_deploy": False,
            "promotion_cleanup_strategy": "SCALE_TO_ZERO",
            "rolling_deploy_config": None,
            "ramp_up_while_promoting": False,
            "ramp_up_duration_seconds": 600,
        },
        "instance_type": _instance_type(deployment.spec.instance_type),
    }


def chain_deployment_record(deployment: DeploymentRuntime) -> dict[str, Any]:
    """``ChainDeploymentV1``: one chainlet (the entrypoint) carrying the deployment's status and replicas."""
    record = deployment_record(deployment)
    chainlet = {
        "id": f"{deployment.spec.id}entry",
        "name": deployment.target.display_name,
        "autoscaling_settings": record["autoscaling_settings"],
        "instance_type_name": record["instance_type_name"],
        "active_replica_count": record["active_replica_count"],
        "status": record["status"],
    }
    return {
        "id": record["id"],
        "created_at": record["created_at"],
        "chain_id": deployment.target.id,
        "environment": record["environment"],
        "chainlets": [chainlet],
        "status": record["status"],
    }


def chain_environment_record(
    name: str, deployment: DeploymentRuntime, target: TargetRuntime | None = None
) -> dict[str, Any]:
    """``ChainEnvironmentV1``; a promotion in progress shows as its ``candidate_deployment`` (the spec has no
    ``in_progress_promotion`` for chains)."""
    model_form = environment_record(name, deployment)
    promotion = promotion_of(target, name) if target is not None else None
    chainlet = chain_deployment_record(deployment)["chainlets"][0]
    return {
        "name": name,
        "created_at": model_form["created_at"],
        "chain_id": deployment.target.id,
        "promotion_settings": model_form["promotion_settings"],
        "chainlet_settings": [
            {
                "chainlet_name": chainlet["name"],
                "autoscaling_settings": chainlet["autoscaling_settings"],
                "instance_type": model_form["instance_type"],
            }
        ],
        "current_deployment": chain_deployment_record(deployment),
        "candidate_deployment": chain_deployment_record(promotion.candidate)
        if promotion and promotion.pending
        else None,
    }


def model_record(target: TargetRuntime, created_at: float) -> dict[str, Any]:
    """``ModelV1``."""
    production = target.by_environment.get("production")
    return {
        "id": target.spec.id,
        "created_at": iso(created_at),
        "name": target.spec.display_name,
        "deployments_count": len(target.deployments),
        "production_deployment_id": production.spec.id if production else None,
        "development_deployment_id": target.development.spec.id if target.development else None,
        "instance_type_name": production.spec.instance_type if production else "1x2",
        "team_name": "emulator",
    }


def chain_record(target: TargetRuntime, created_at: float) -> dict[str, Any]:
    """``ChainV1``."""
    return {
        "id": target.spec.id,
        "created_at": iso(created_at),
        "name": target.spec.display_name,
        "deployments_count": len(target.deployments),
        "team_name": "emulator",
    }


def route(call: Call) -> Handler | Response:
    """Pick the handler for a management path (setting ``call.route``/``call.params``) or answer 404/405."""
    parts = tuple(segment for segment in call.path.split("/") if segment)
    call.route = "management"
    if parts[:1] != ("v1",):
        return error(404, "Not found.")
    parts = parts[1:]
    if parts and parts[-1] in ("activate", "deactivate"):
        call.route = "activate"
    matching = [
        (pattern, method, handler)
        for pattern, method, handler in _ROUTES
        if len(pattern) == len(parts) and all(p in ("*", value) for p, value in zip(pattern, parts, strict=True))
    ]
    for pattern, method, handler in matching:
        if call.method == method:
            call.params = tuple(value for p, value in zip(pattern, parts, strict=True) if p == "*")
            if parts[0] in ("models", "chains") and len(parts) > 1:
                call.target_id = parts[1]
            return handler
    if matching:
        return error(405, "Method Not Allowed")
    return error(404, f"Not found: /v1/{'/'.join(parts)} (the emulator serves a subset of the management API).")


def _kind(call: Call) -> TargetKind:
    return "chain" if call.path.startswith("/v1/chains/") else "model"


def _target(call: Call) -> TargetRuntime | Response:
    kind = _kind(call)
    target = call.state.targets.get((kind, call.params[0]))
    return target if target is not None else error(404, f"{kind.capitalize()} {call.params[0]} not found.")


def _member(
    call: Call, what: str, pick: Callable[[TargetRuntime, str], DeploymentRuntime | None]
) -> DeploymentRuntime | Response:
    """The deployment (of a model or chain) that ``call.params[1]`` names, or the 404 saying what is missing."""
    target = _target(call)
    if isinstance(target, Response):
        return target
    name = call.params[1]
    found = pick(target, name)
    if found is None:
        return error(404, f"{target.spec.kind.capitalize()} {target.spec.id} has no {what} {name!r}.")
    return found


def _deployment(call: Call) -> DeploymentRuntime | Response:
    """By id, or ``production``/``development`` (model deployment routes)."""
    return _member(
        call,
        "deployment",
        lambda target, which: {
            "production": target.by_environment.get("production"),
            "development": target.development,
        }.get(which, target.deployments.get(which)),
    )


def _environment(call: Call) -> DeploymentRuntime | Response:
    return _member(call, "environment", lambda target, name: target.by_environment.get(name))


def _records(call: Call) -> tuple[Callable[[DeploymentRuntime], dict[str, Any]], Callable[..., dict[str, Any]]]:
    """``(deployment record, environment record)`` of the call's kind: ``DeploymentV1``/``EnvironmentV1`` or the
    chain forms."""
    if _kind(call) == "chain":
        return chain_deployment_record, chain_environment_record
    return deployment_record, environment_record


async def get_user(call: Call) -> Response:
    return json_response(call.state.world.user)


def _list_targets(kind: TargetKind, record: Callable[[TargetRuntime, float], dict[str, Any]]) -> Handler:
    """``GET /v1/{kind}s``: every model (or chain) as ``{"{kind}s": [record, ...]}``."""

    async def handler(call: Call) -> Response:
        state = call.state
        found = [record(t, state.created_at) for (k, _), t in state.targets.items() if k == kind]
        return json_response({f"{kind}s": found})

    return handler


def _get_target(record: Callable[[TargetRuntime, float], dict[str, Any]]) -> Handler:
    """``GET /v1/{kind}s/{id}``: one record, or the 404 naming the missing id."""

    async def handler(call: Call) -> Response:
        target = _target(call)
        return target if isinstance(target, Response) else json_response(record(target, call.state.created_at))

    return handler


list_models = _list_targets("model", model_record)
get_model = _get_target(model_record)
list_chains = _list_targets("chain", chain_record)
get_chain = _get_target(chain_record)


async def list_deployments(call: Call) -> Response:
    target = _target(call)
    if isinstance(target, Response):
        return target
    record = _records(call)[0]
    return json_response({"deployments": [record(d) for d in target.deployments.values()]})


async def get_deployment(call: Call) -> Response:
    found = _deployment(call)
    return found if isinstance(found, Response) else json_response(_records(call)[0](found))


async def list_environments(call: Call) -> Response:
    target = _target(call)
    if isinstance(target, Response):
        return target
    record = _records(call)[1]
    return json_response({"environments": [record(name, d, target) for name, d in target.by_environment.items()]})


async def get_environment(call: Call) -> Response:
    found = _environment(call)
    if isinstance(found, Response):
        return found
    target = call.state.targets[(_kind(call), call.params[0])]
    return json_response(_records(call)[1](call.params[1], found, target))


def _invalid_autoscaling(body: Any) -> Response | None:
    if not isinstance(body, dict) or set(body) - set(_AUTOSCALING_FIELDS):
        return error(422, f"Invalid autoscaling settings: {body!r} (fields: {', '.join(_AUTOSCALING_FIELDS)}).")
    return None


def _autoscaling_answer(found: DeploymentRuntime, statuses: list[str]) -> Response:
    """``UpdateAutoscalingSettingsResponseV1``: ``ACCEPTED`` when any field changed, else ``UNCHANGED``."""
    status = "ACCEPTED" if "ACCEPTED" in statuses else "UNCHANGED"
    message = "No change." if status == "UNCHANGED" else f"Autoscaling settings of {found.spec.id} updated."
    return json_response({"status": status, "message": message})


async def _update(call: Call, found: DeploymentRuntime | Response, body: Any) -> Response:
    if isinstance(found, Response):
        return found
    return _invalid_autoscaling(body) or _autoscaling_answer(found, [found.autoscaler.update(body)])


async def update_deployment_autoscaling(call: Call) -> Response:
    return await _update(call, _deployment(call), await call.json())


async def update_environment(call: Call) -> Response:
    body = await call.json()
    if not isinstance(body, dict) or set(body) - {"autoscaling_settings", "promotion_settings"}:
        return error(422, f"Invalid environment update: {body!r}.")
    return await _update(call, _environment(call), body.get("autoscaling_settings") or {})


async def update_chainlet_autoscaling(call: Call) -> Response:
    """``PATCH .../chainlet_settings/autoscaling_settings``: every update names a chainlet of the environment's
    deployment (the emulator's chains have one, the entrypoint); all are checked before any applies."""
    found = _environment(call)
    if isinstance(found, Response):
        return found
    body = await call.json()
    updates = body.get("updates") if isinstance(body, dict) else None
    if not isinstance(updates, list) or not updates:
        return error(422, f"Invalid chainlet autoscaling update: {body!r} (needs a list of updates).")
    chainlet = found.target.display_name
    for update in updates:
        name = update.get("chainlet_name") if isinstance(update, dict) else None
        if name != chainlet:
            return error(404, f"Chain {found.target.id} has no chainlet {name!r} (chainlets: {chainlet}).")
        invalid = _invalid_autoscaling(update.get("autoscaling_settings"))
        if invalid is not None:
            return invalid
    return _autoscaling_answer(found, [found.autoscaler.update(u["autoscaling_settings"]) for u in updates])


def _promote(call: Call, environment: str, candidate: DeploymentRuntime | Response, scale_down: Any) -> Response:
    target = _target(call)
    if isinstance(candidate, Response) or isinstance(target, Response):
        return candidate if isinstance(candidate, Response) else target  # type: ignore[return-value]
    if environment not in target.by_environment:
        return error(404, f"{target.spec.kind.capitalize()} {target.spec.id} has no environment {environment!r}.")
    try:
        start_promotion(target, environment, candidate, scale_down_previous=scale_down is not False)
    except PromotionError as err:
        return error(400, str(err))
    return json_response(_records(call)[0](candidate))


async def promote_deployment(call: Call) -> Response:
    body = await call.json() or {}
    return _promote(call, "production", _deployment(call), body.get("scale_down_previous_production"))


async def promote_to_environment(call: Call) -> Response:
    body = await call.json()
    target = _target(call)
    if isinstance(target, Response):
        return target
    if not isinstance(body, dict) or not isinstance(body.get("deployment_id"), str):
        return error(422, "The promote request needs a deployment_id.")
    candidate = target.deployments.get(body["deployment_id"])
    if candidate is None:
        return error(
            404, f"{target.spec.kind.capitalize()} {target.spec.id} has no deployment {body['deployment_id']!r}."
        )
    return _promote(call, call.params[1], candidate, body.get("scale_down_previous_deployment"))


async def signal_promotion(call: Call) -> Response:
    target = _target(call)
    if isinstance(target, Response):
        return target
    action = call.path.rsplit("/", 1)[-1]
    promotion = promotion_of(target, call.params[1])
    if promotion is None:
        return error(400, f"Environment {call.params[1]!r} of model {target.spec.id} has no promotion.")
    try:
        if action == "cancel_promotion":
            return json_response({"status": promotion.cancel(), "message": "The promotion was canceled."})
        (promotion.pause if action == "pause_promotion" else promotion.resume)()
    except PromotionError as err:
        return error(400, str(err))
    return json_response({"success": True})


def _switch(found: DeploymentRuntime | Response, activate: bool) -> Response:
    if isinstance(found, Response):
        return found
    if not activate:
        found.deactivate()
        return json_response({"success": True})
    if not found.activate():
        return error(400, f"Deployment {found.spec.id} is {found.status.value} and cannot be activated.")
    return json_response({"success": True})


async def activate_deployment(call: Call) -> Response:
    return _switch(_deployment(call), call.path.endswith("/activate"))


async def activate_environment(call: Call) -> Response:
    return _switch(_environment(call), call.path.endswith("/activate"))


#: ``(path pattern after /v1, method, handler)``; ``*`` captures a segment into ``call.params``.
_ROUTES: list[tuple[tuple[str, ...], str, Handler]] = [
    (("users", "me"), "GET", get_user),
    (("models",), "GET", list_models),
    (("models", "*"), "GET", get_model),
    (("models", "*", "deployments"), "GET", list_deployments),
    (("models", "*", "deployments", "*"), "GET", get_deployment),
    (("models", "*", "deployments", "*", "activate"), "POST", activate_deployment),
    (("models", "*", "deployments", "*", "deactivate"), "POST", activate_deployment),
    (("models", "*", "environments"), "GET", list_environments),
    (("models", "*", "environments", "*"), "GET", get_environment),
    (("models", "*", "environments", "*", "activate"), "POST", activate_environment),
    (("models", "*", "environments", "*", "deactivate"), "POST", activate_environment),
    (("models", "*", "deployments", "*", "autoscaling_settings"), "PATCH", update_deployment_autoscaling),
    (("models", "*", "deployments", "*", "promote"), "POST", promote_deployment),
    (("models", "*", "environments", "*"), "PATCH", update_environment),
    (("models", "*", "environments", "*", "promote"), "POST", promote_to_environment),
    (("models", "*", "environments", "*", "cancel_promotion"), "POST", signal_promotion),
    (("models", "*", "environments", "*", "pause_promotion"), "POST", signal_promotion),
    (("models", "*", "environments", "*", "resume_promotion"), "POST", signal_promotion),
    (("chains",), "GET", list_chains),
    (("chains", "*"), "GET", get_chain),
    (("chains", "*", "deployments"), "GET", list_deployments),
    (("chains", "*", "deployments", "*"), "GET", get_deployment),
    (("chains", "*", "environments"), "GET", list_environments),
    (("chains", "*", "environments", "*"), "GET", get_environment),
    (("chains", "*", "environments", "*", "promote"), "POST", promote_to_environment),
    (
        ("chains", "*", "environments", "*", "chainlet_settings", "autoscaling_settings"),
        "PATCH",
        update_chainlet_autoscaling,
    ),
]
