"""Model APIs on ``inference.baseten.co``: ``GET /v1/models`` and ``POST /v1/chat/completions`` (OpenAI-compatible)."""

from __future__ import annotations

from starlette.responses import Response

from airflow_provider_baseten.emulator import chat
from airflow_provider_baseten.emulator.responses import Call, Handler, error, json_response, reply_response


def route(call: Call) -> Handler | Response:
    path = call.path.rstrip("/")
    if path == "/v1/models":
        call.route = "model_apis_models"
        return list_models if call.method == "GET" else error(405, "Method Not Allowed")
    if path == "/v1/chat/completions":
        call.route = "chat"
        return chat_completions if call.method == "POST" else error(405, "Method Not Allowed")
    return error(404, f"Not found: {call.path} (Model APIs serve /v1/models and /v1/chat/completions).")


async def list_models(call: Call) -> Response:
    state = call.state
    return json_response(chat.models_list(state.world.model_apis, now=state.created_at))


async def chat_completions(call: Call) -> Response:
    state = call.state
    body = await call.json()
    if not isinstance(body, dict):
        return error(400, "Request body must be a JSON chat completion request.")
    model = body.get("model")
    if model not in state.world.model_apis:
        return error(
            404,
            f"Model {model!r} not found. It may not exist, or Model APIs may not be enabled for it in your "
            "workspace; GET https://inference.baseten.co/v1/models lists the models you can use.",
            "model_does_not_exist",
        )
    call.target_id = str(model)
    call.model_ran = True
    return reply_response(chat.complete(body, model=str(model), now=state.scheduler.now()), state.scheduler)
