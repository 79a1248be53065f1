"""BasetenChatOperator and the hook's OpenAI SDK clients against the emulator over loopback."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from unittest import mock

import jsonschema
import pytest
from pydantic import BaseModel

from airflow_provider_baseten.exceptions import BasetenError, BasetenModelAPINotEnabledError
from airflow_provider_baseten.hooks.addressing import Target
from airflow_provider_baseten.hooks.baseten import BasetenHook
from airflow_provider_baseten.operators.chat import BasetenChatOperator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SLUG = "deepseek-ai/DeepSeek-V3.1"
REVIEW_SCHEMA = {
    "title": "Review",
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "confidence": {"type": "number"},
        "keywords": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["sentiment", "confidence", "keywords"],
    "additionalProperties": False,
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


class Review(BaseModel):
    sentiment: str
    confidence: float


@pytest.fixture
def context() -> dict[str, Any]:
    return {"ti": mock.MagicMock(name="ti")}


def run(context: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("task_id", "chat")
    if "model_id" not in kwargs:
        kwargs.setdefault("model", SLUG)
    op = BasetenChatOperator(**kwargs)
    op.hook = BasetenHook(customer_request_id="")
    return op.execute(context)


def test_json_schema_answer_is_validated_and_parsed(baseten_emulator: Any, context: dict[str, Any]) -> None:
    result = run(
        context,
        system_prompt="You grade product reviews.",
        prompt="Review: 'I love this blender, it is excellent.'",
        response_format=REVIEW_SCHEMA,
        max_tokens=200,
    )
    jsonschema.validate(result["parsed"], REVIEW_SCHEMA)
    assert result["parsed"] == json.loads(result["content"])
    assert result["finish_reason"] == "stop"
    assert result["model"] == SLUG
    assert result["usage"]["total_tokens"] == result["usage"]["prompt_tokens"] + result["usage"]["completion_tokens"]
    context["ti"].xcom_push.assert_called_once_with(key="usage", value=result["usage"])
    chat = baseten_emulator.journal.filter(route="chat")
    assert len(chat) == 1
    assert chat[0].host == "inference.baseten.co"


def test_pydantic_response_format(baseten_emulator: Any, context: dict[str, Any]) -> None:
    result = run(context, prompt="Review: 'terrible, broken on day one'", response_format=Review)
    Review.model_validate(result["parsed"])


def test_tool_call_comes_back(baseten_emulator: Any, context: dict[str, Any]) -> None:
    result = run(context, prompt="Use get_weather: what is the weather in Paris?", tools=[WEATHER_TOOL])
    assert result["finish_reason"] == "tool_calls"
    assert result["tool_calls"]
    call = result["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert isinstance(json.loads(call["function"]["arguments"]), dict)


def test_streaming_returns_what_a_plain_call_returns(baseten_emulator: Any, context: dict[str, Any]) -> None:
    prompt = "Summarize: Airflow schedules tasks.\nBaseten serves models.\nTogether they run inference."
    plain = run(context, prompt=prompt, seed=3)
    with mock.patch.object(BasetenChatOperator, "log", new_callable=mock.PropertyMock) as log:
        streamed = run(context, prompt=prompt, seed=3, stream=True)
    assert streamed["content"] == plain["content"]
    assert streamed["usage"] == plain["usage"]
    assert streamed["finish_reason"] == plain["finish_reason"]
    logged = [call.args[0] % call.args[1:] for call in log.return_value.info.call_args_list]
    assert "\n".join(line for line in logged if line in streamed["content"]).strip()


def test_deployed_model_llm01(baseten_emulator: Any, context: dict[str, Any]) -> None:
    result = run(context, model_id="llm01", prompt="What is 2 + 3?")
    assert result["content"]
    assert "5" in result["content"]
    sync = [e for e in baseten_emulator.journal if e.host == "model-llm01.api.baseten.co"]
    assert [e.path for e in sync] == ["/production/sync/v1/chat/completions"]


def test_max_total_tokens_guard(baseten_emulator: Any, context: dict[str, Any]) -> None:
    with pytest.raises(BasetenError, match="over max_total_tokens=5"):
        run(context, prompt="Tell me about the weather in spring and in autumn.", max_total_tokens=5)


def test_unknown_slug_is_a_clear_error(baseten_emulator: Any, context: dict[str, Any]) -> None:
    with pytest.raises(BasetenModelAPINotEnabledError):
        run(context, model="nobody/NoSuchModel", prompt="hi")


def test_openai_client_from_the_hook_completes_a_chat(baseten_emulator: Any) -> None:
    client = BasetenHook().get_openai_client()
    answer = client.chat.completions.create(model=SLUG, messages=[{"role": "user", "content": "What is 6 * 7?"}])
    assert "42" in answer.choices[0].message.content
    assert answer.usage.total_tokens > 0
    deployed = BasetenHook().get_openai_client(Target.of(model_id="llm01"))
    answer = deployed.chat.completions.create(model="llm01", messages=[{"role": "user", "content": "Say hello"}])
    assert answer.choices[0].message.content


def test_async_openai_client_from_the_hook_completes_a_chat(baseten_emulator: Any) -> None:
    async def ask() -> str:
        client = BasetenHook().get_async_openai_client()
        try:
            answer = await client.chat.completions.create(
                model=SLUG, messages=[{"role": "user", "content": "What is 10 + 5?"}]
            )
            return answer.choices[0].message.content
        finally:
            await client.close()

    assert "15" in asyncio.run(ask())
