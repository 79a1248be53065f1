"""Model and chain hosts: ``model-{id}[-{env}].api.baseten.co`` and ``chain-{id}[-{env}].api.baseten.co``.

Paths are ``/{prefix}/{action}`` with the prefixes of :attr:`Target.prefix` (``/production``, ``/development``,
``/environments/{env}``, ``/deployment/{id}``); regional hosts take bare paths and reject prefixed ones;
``/async_request/{id}`` is bare everywhere (request ids are global). Every answer is one of the spec's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.responses import Response

from airflow_provider_baseten.emulator.limits import retry_hint
from airflow_provider_baseten.emulator.responses import Call, Handler, error, json_response, reply_response
from airflow_provider_baseten.emulator.routing import parse_target_path

if TYPE_CHECKING:
    from airflow_provider_baseten.emulator.async_queue import AsyncRecord
    from airflow_provider_baseten.emulator.lifecycle import DeploymentRuntime
    from airflow_provider_baseten.emulator.routing import ParsedHost

NOT_FOUND = "model_does_not_exist"


def route(call: Call, host: ParsedHost) -> Handler | Response:
    """Pick the handler (setting ``call.route``, ``call.deployment``, ...) or answer the routing error."""
    assert host.kind is not None
    assert host.id is not None
    call.target_id = host.id
    path = parse_target_path(call.path)
    if path is None:
        return error(404, f"No route for {call.path}.", NOT_FOUND)
    action = path.action
    if len(action) == 2 and action[0] == "async_request" and path.selector == "none":
        call.route, call.params = ("async_status" if call.method == "GET" else "async_cancel"), (action[1],)
        if call.method not in ("GET", "DELETE"):
            return error(405, "Method Not Allowed", "client_error")
        return _with_target(call, host) or (async_status if call.method == "GET" else async_cancel)
    name = action[0] if action else ""
    handler, allowed = _ACTIONS.get((host.kind, name), (None, ""))
    if handler is None or (name != "sync" and len(action) != 1):
        return error(404, f"No route for {call.path} on a {host.kind} host.", NOT_FOUND)
    call.route, call.params = name, action[1:]
    if allowed and call.method != allowed:
        return error(405, "Method Not Allowed", "client_error")
    if host.regional_environment is not None and path.selector != "none":
        return error(404, "Regional hosts take bare paths such as /predict; drop the environment prefix.", NOT_FOUND)
    if host.regional_environment is None and path.selector == "none":
        return error(404, f"No route for {call.path}: expected a prefix such as /production.", NOT_FOUND)
    missing = _with_target(call, host)
    if missing is not None:
        return missing
    assert call.target is not None
    selected = call.target.select(path, host.regional_environment)
    if isinstance(selected, str):
        return error(404, selected, NOT_FOUND)
    call.deployment = selected
    if name == "sync":
        from airflow_provider_baseten.emulator import bei

        return bei.routed(call) or handler
    return handler


def _with_target(call: Call, host: ParsedHost) -> Response | None:
    """Set ``call.target`` to the host's model or chain; a 404 if the world has none."""
    assert host.kind is not None
    call.target = call.state.targets.get((host.kind, call.target_id or ""))
    if call.target is None:
        return error(404, f"{host.kind.capitalize()} {call.target_id} not found.", NOT_FOUND)
    return None


def _unavailable(deployment: DeploymentRuntime) -> Response | None:
    problem = deployment.unavailable()
    return error(problem[0], problem[1], problem[2]) if problem else None


async def _park(call: Call) -> Response | None:
    """Hold a request while its deployment cold-starts (waking it); an error if it cannot be served in time."""
    deployment = call.deployment
    assert deployment is not None
    refused = _unavailable(deployment)
    if refused is not None or deployment.ready:
        return refused
    if await deployment.wait_ready(deployment.spec.predict_timeout):
        return None
    return _unavailable(deployment) or error(
        500,
        f"Deployment {deployment.spec.id} did not become ready within the {deployment.spec.predict_timeout:.0f} s "
        "predict timeout (cold start).",
        "model_not_ready",
    )


async def _run_model(call: Call, route_name: str) -> Response:
    deployment = call.deployment
    assert deployment is not None
    arrived = call.arrived if deployment.ready else None  # a cold start's wait is not the model's time
    parked = await _park(call)
    if parked is not None:
        return parked
    payload = await call.json()
    call.model_ran = True
    reply = await deployment.invoke(
        payload, route=route_name, time_limit=deployment.spec.predict_timeout, arrived=arrived
    )
    if reply is None:
        return error(
            504,
            f"The prediction exceeded the {deployment.spec.predict_timeout:.0f} s request timeout.",
            "timeout",
            detail="Use async inference for long predictions.",
        )
    return reply_response(reply, call.state.scheduler)


async def predict(call: Call) -> Response:
    """``POST /{prefix}/predict`` (models) and ``/run_remote`` (chains): the body goes to the model verbatim."""
    return await _run_model(call, call.route)


async def sync_route(call: Call) -> Response:
    """``ANY /{prefix}/sync/{route}``: passthrough to the deployment's own server (e.g. an OpenAI-compatible engine)."""
    return await _run_model(call, "/".join(call.params))


async def wake(call: Call) -> Response:
    """``POST /{prefix}/wake``: 202 at once. Starts a cold start if scaled to zero; never revives ``INACTIVE``."""
    assert call.deployment is not None
    call.deployment.wake()
    return Response(status_code=202)


async def async_submit(call: Call) -> Response:
    """``POST /{prefix}/async_predict`` and ``/async_run_remote``: validate, size-check, queue; 201 ``{request_id}``."""
    from pydantic import ValidationError

    from airflow_provider_baseten.hooks.models import AsyncPredictRequest

    deployment = call.deployment
    assert deployment is not None
    state = call.state
    raw = await call.body()
    limit = state.limits.async_payload_bytes
    if len(raw) > limit:
        return error(
            413, f"payload size of {len(raw)} bytes exceeds maximum size of {limit} bytes", "payload_too_large"
        )
    body = await call.json()
    if not isinstance(body, dict):
        return error(400, "Request body must be a JSON object with a 'model_input' field.", "client_error")
    try:
        request = AsyncPredictRequest.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        return error(400, f"Invalid async request: {where}: {first['msg']}", "client_error")
    refused = _unavailable(deployment)
    if refused is not None and refused.status_code != 503:
        return refused
    limits = state.limits
    if state.queue.pending >= limits.org_queue_limit:
        headers, extra = retry_hint(limits.retry_after, limits.org_queue_retry_after)
        message = (
            f"Your organization has {state.queue.pending} queued or in-progress async requests, the limit is "
            f"{limits.org_queue_limit}."
        )
        return error(429, message, "rate_limited", headers=headers, extra=extra)
    record = state.queue.submit(deployment, request)
    call.model_ran = True
    return json_response({"request_id": record.request_id}, 201)


async def async_queue_status(call: Call) -> Response:
    assert call.deployment is not None
    return json_response(call.state.queue.queue_status(call.deployment))


def _record(call: Call) -> AsyncRecord | Response:
    """The async request of ``call.params[0]`` if it belongs to this host's model or chain, else a 404."""
    record = call.state.queue.get(call.params[0])
    if (
        record is None
        or call.target is None
        or (record.kind, record.target_id) != (call.target.spec.kind, call.target_id)
    ):
        return error(404, f"Async request {call.params[0]} not found.", NOT_FOUND)
    return record


async def async_status(call: Call) -> Response:
    """``GET /async_request/{id}``: status only, kept one hour after completion."""
    record = _record(call)
    return record if isinstance(record, Response) else json_response(record.as_json())


async def async_cancel(call: Call) -> Response:
    """``DELETE /async_request/{id}``: cancels only ``QUEUED`` requests; 200 either way with ``canceled``."""
    record = _record(call)
    if isinstance(record, Response):
        return record
    canceled, message = call.state.queue.cancel(record)
    return json_response({"request_id": record.request_id, "canceled": canceled, "message": message})


#: ``(host kind, action) -> (handler, required method)``; ``""`` accepts any method.
_ACTIONS: dict[tuple[str, str], tuple[Handler, str]] = {
    ("model", "predict"): (predict, "POST"),
    ("chain", "run_remote"): (predict, "POST"),
    ("model", "async_predict"): (async_submit, "POST"),
    ("chain", "async_run_remote"): (async_submit, "POST"),
    ("model", "async_queue_status"): (async_queue_status, "GET"),
    ("chain", "async_queue_status"): (async_queue_status, "GET"),
    ("model", "wake"): (wake, "POST"),
    ("model", "sync"): (sync_route, ""),
}
