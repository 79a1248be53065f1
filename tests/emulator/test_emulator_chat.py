"""The chat engine, and the official ``openai`` SDK against Model APIs and a deployed model on the emulator."""

from __future__ import annotations

import json

import jsonschema
import pytest

from airflow_provider_baseten.emulator import Emulator
from airflow_provider_baseten.emulator.chat import _Hints, complete, count_tokens, schema_value

MODEL = "deepseek-ai/DeepSeek-V3.1"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 3},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}

SCHEMAS = [
    {
        "type": "object",
        "properties": {
            "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "keywords": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 4},
            "flagged": {"type": "boolean"},
            "count": {"type": "integer", "exclusiveMinimum": 100},
            "nested": {"type": "object", "properties": {"a": {"type": ["string", "null"]}}, "required": ["a"]},
        },
        "required": ["sentiment", "score", "keywords", "flagged", "count", "nested"],
        "additionalProperties": False,
    },
    {
        "$defs": {"item": {"type": "object", "properties": {"name": {"type": "string", "minLength": 40}}}},
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/item"}},
            "choice": {"anyOf": [{"type": "null"}, {"type": "integer", "maximum": -5}]},
            "when": {"type": "string", "format": "date-time", "maxLength": 30},
            "fixed": {"const": "v1"},
            "both": {"allOf": [{"properties": {"x": {"type": "number"}}}, {"required": ["x"]}]},
        },
        "required": ["items", "choice", "when", "fixed", "both"],
    },
    {"type": "array", "items": {"type": "number", "maximum": 0.5}},
    {"type": "string", "enum": ["a", "b"]},
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_generated_json_validates_against_its_schema(schema):
    value = schema_value(schema, hints=_Hints("I love this great product"))

    jsonschema.validate(value, schema)


def _body(**extra):
    return {"model": MODEL, "messages": [{"role": "user", "content": "Tell me about Airflow"}], **extra}


def test_answers_are_deterministic_and_count_real_tokens():
    first = complete(_body(), model=MODEL, now=0).body
    second = complete(_body(), model=MODEL, now=0).body
    content = first["choices"][0]["message"]["content"]

    assert content == second["choices"][0]["message"]["content"] == "You said: Tell me about Airflow"
    assert first["usage"]["completion_tokens"] == count_tokens(content) == 7
    assert first["usage"]["prompt_tokens"] == count_tokens("Tell me about Airflow") + 4 + 3
    assert first["usage"]["total_tokens"] == first["usage"]["prompt_tokens"] + 7
    assert complete(_body(seed=1), model=MODEL, now=0).body["choices"][0]["message"]["content"] != content


def test_small_rules_answer_from_the_messages():
    def answer(text):
        body = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
        return complete(body, model=MODEL, now=0).body["choices"][0]["message"]["content"]

    assert answer("What is 12 * 7?") == "12 * 7 = 84."
    assert answer("Sentiment of: I hate waiting") == "The sentiment is negative (score 1.0)."
    assert answer("Summarize: Airflow schedules work. It has many parts.") == "Summary: Airflow schedules work"


def test_max_tokens_and_stop():
    limited = complete(_body(max_tokens=3), model=MODEL, now=0).body
    stopped = complete(_body(stop=["about"]), model=MODEL, now=0).body

    assert limited["choices"][0]["message"]["content"] == "You said:"
    assert (limited["choices"][0]["finish_reason"], limited["usage"]["completion_tokens"]) == ("length", 3)
    assert stopped["choices"][0]["message"]["content"] == "You said: Tell me "
    assert stopped["choices"][0]["finish_reason"] == "stop"


def test_tool_calls_when_the_prompt_names_a_tool_or_tool_choice_forces_it():
    asked = _body(tools=[WEATHER_TOOL])
    asked["messages"][0]["content"] = "Use get_weather for Paris please"
    unrelated = _body(tools=[WEATHER_TOOL])
    forced = _body(tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    refused = {**asked, "tool_choice": "none"}

    call = complete(asked, model=MODEL, now=0).body["choices"][0]
    assert call["finish_reason"] == "tool_calls"
    arguments = json.loads(call["message"]["tool_calls"][0]["function"]["arguments"])
    assert arguments["city"] == "Paris"
    jsonschema.validate(arguments, WEATHER_TOOL["function"]["parameters"])
    assert complete(unrelated, model=MODEL, now=0).body["choices"][0]["finish_reason"] == "stop"
    assert complete(forced, model=MODEL, now=0).body["choices"][0]["finish_reason"] == "tool_calls"
    assert complete(refused, model=MODEL, now=0).body["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    "body",
    [
        {"model": MODEL, "messages": []},
        {"model": MODEL, "messages": [{"role": "robot", "content": "x"}]},
        {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
        {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema"}},
    ],
)
def test_invalid_requests_answer_400(body):
    assert complete(body, model=MODEL, now=0).status == 400


# --- over HTTP, with the official SDK ---------------------------------------------------------------------------


@pytest.fixture
def openai_client(baseten_emulator: Emulator):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(
        api_key=baseten_emulator.api_key,
        base_url=baseten_emulator.url + "/v1",
        default_headers={"Host": "inference.baseten.co"},
        max_retries=0,
    )
    yield client
    client.close()


pytestmark = pytest.mark.integration


def test_openai_sdk_plain_chat(openai_client):
    completion = openai_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello there"}], max_tokens=50
    )

    assert completion.choices[0].message.content == "You said: Hello there"
    assert completion.model == MODEL
    assert completion.usage.total_tokens > 0


def test_openai_sdk_streaming_chat(openai_client):
    stream = openai_client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Stream this reply"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You said: Stream this reply"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == count_tokens(text)


def test_openai_sdk_streaming_without_include_usage_keeps_choices(openai_client):
    chunks = list(
        openai_client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True)
    )

    assert all(chunk.choices for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_openai_sdk_tool_calling(openai_client):
    completion = openai_client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What does get_weather say for Berlin?"}],
        tools=[WEATHER_TOOL],
    )
    call = completion.choices[0].message.tool_calls[0]

    assert completion.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] == "Berlin"
    follow_up = openai_client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "What does get_weather say for Berlin?"},
            completion.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "12 degrees and rain"},
        ],
        tools=[WEATHER_TOOL],
    )
    assert follow_up.choices[0].message.content == "Based on the tool result: 12 degrees and rain"


def test_openai_sdk_json_schema(openai_client):
    schema = SCHEMAS[0]
    completion = openai_client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Classify: this is awful"}],
        response_format={"type": "json_schema", "json_schema": {"name": "review", "schema": schema, "strict": True}},
    )
    value = json.loads(completion.choices[0].message.content)

    jsonschema.validate(value, schema)
    assert value["sentiment"] == "negative"


def test_openai_sdk_json_object(openai_client):
    completion = openai_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Reply in JSON"}], response_format={"type": "json_object"}
    )

    assert isinstance(json.loads(completion.choices[0].message.content), dict)


def test_unknown_slug_answers_404_with_a_hint(openai_client):
    openai = pytest.importorskip("openai")
    with pytest.raises(openai.NotFoundError) as caught:
        openai_client.chat.completions.create(model="nope/nope", messages=[{"role": "user", "content": "x"}])

    body = caught.value.response.json()
    assert body["error_code"] == "model_does_not_exist"
    assert "GET https://inference.baseten.co/v1/models" in body["error"]


def test_openai_sdk_lists_model_apis(openai_client):
    assert [m.id for m in openai_client.models.list()] == [
        "deepseek-ai/DeepSeek-V3.1",
        "zai-org/GLM-5.2",
        "meta-llama/Llama-4-Maverick-17B-128E-Instruct",
    ]


@pytest.mark.parametrize("prefix", ["/environments/production", "/production"])
def test_openai_sdk_against_a_deployed_engine(baseten_emulator: Emulator, prefix):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(
        api_key=baseten_emulator.api_key,
        base_url=f"{baseten_emulator.url}{prefix}/sync/v1",
        default_headers={"Host": "model-llm01.api.baseten.co"},
        max_retries=0,
    )
    try:
        completion = client.chat.completions.create(
            model="anything", messages=[{"role": "user", "content": "What is 2 + 3?"}]
        )
        assert completion.choices[0].message.content == "2 + 3 = 5."
        assert [m.id for m in client.models.list()] == ["llm01"]
    finally:
        client.close()
    assert baseten_emulator.journal.count(route="sync") == 2
