"""Worlds (Python and JSON) and the built-in behaviours."""

from __future__ import annotations

import asyncio
import json

import pytest

from airflow_provider_baseten.emulator import DeploymentSpec, ModelError, ModelSpec, Reply, World
from airflow_provider_baseten.emulator.behaviours import (
    Fail,
    Flaky,
    ModelRequest,
    Python,
    Sleep,
    Stream,
    Text,
    behaviour_from_spec,
    resolve_reply,
    sentiment_of,
)


def run(behaviour, payload, call_number=1, deployment_id="d1"):
    request = ModelRequest(payload, "predict", "m1", deployment_id, call_number, 0.0)
    return asyncio.run(resolve_reply(behaviour, request))


def test_default_world_has_the_contract_ids():
    world = World.default()

    assert set(world.models) == {
        "sentiment01",
        "echo01",
        "textstats01",
        "coldstart01",
        "inactive01",
        "buildfail01",
        "unhealthy01",
        "embed01",
        "slow01",
        "flaky01",
        "llm01",
    }
    assert set(world.chains) == {"summarize01"}
    assert {d.id for d in world.models["sentiment01"].deployments} >= {"sentprod01", "sentdev01"}
    assert world.models["sentiment01"].regional_environments == ("prod-us",)
    assert world.models["coldstart01"].deployments[0].cold_start_seconds == 180
    assert "deepseek-ai/DeepSeek-V3.1" in world.model_apis


@pytest.mark.parametrize(
    ("text", "label"),
    [("I love it", "positive"), ("this is not good", "negative"), ("a table", "neutral"), ("good but bad", "neutral")],
)
def test_sentiment_lexicon(text, label):
    assert sentiment_of(text)["label"] == label


def test_fail_after_n_calls():
    behaviour = Fail(status=500, after=2)

    assert [run(behaviour, {"a": 1}, n).status for n in (1, 2, 3, 4)] == [200, 200, 500, 500]


def test_flaky_is_seeded_per_deployment_and_call():
    behaviour = Flaky(probability=0.5, status=503, seed=1)
    draws = [run(behaviour, {}, n).status for n in range(1, 30)]

    assert draws == [run(behaviour, {}, n).status for n in range(1, 30)]
    assert {200, 503} == set(draws)
    assert draws != [run(behaviour, {}, n, deployment_id="other").status for n in range(1, 30)]


def test_wrappers_add_time_and_non_json_bodies():
    assert run(Sleep(5, Sleep(2)), {"a": 1}) == Reply({"a": 1}, delay=7)
    assert run(Text("<html>oops</html>", 500, "text/html"), None) == Reply("<html>oops</html>", 500, "text/html")
    assert run(Stream(), {"text": "a b"}).chunks == ["a ", "b "]


def test_python_callables_of_every_shape():
    async def async_fn(payload):
        return {"async": payload}

    def raises(payload):
        raise ModelError(409, {"error": "conflict"})

    def crashes(payload):
        raise RuntimeError("boom")

    assert run(Python(lambda payload: payload["x"] * 2), {"x": 21}).body == 42
    assert run(Python(lambda payload, request: request.call_number), {}, 7).body == 7
    assert run(Python(async_fn), 1).body == {"async": 1}
    assert run(Python(raises), {}) == Reply({"error": "conflict"}, status=409)
    assert run(Python(crashes), {}) == Reply({"error": "RuntimeError: boom"}, status=500)
    assert run(Python(lambda payload: Reply("raw", content_type="text/plain")), {}).body == "raw"


def test_world_from_json(tmp_path):
    path = tmp_path / "world.json"
    path.write_text(
        json.dumps(
            {
                "models": [
                    {
                        "id": "m1",
                        "behaviour": {"kind": "sleep", "seconds": 2, "then": {"kind": "fail", "status": 500}},
                        "regional_environments": ["eu"],
                        "deployments": [
                            {"id": "d1"},
                            {
                                "id": "d2",
                                "environment": "eu",
                                "behaviour": {"kind": "python", "callable": "builtins:len"},
                            },
                            {"id": "d3", "environment": None, "development": True, "status": "SCALED_TO_ZERO"},
                        ],
                    }
                ],
                "chains": [{"id": "c1", "behaviour": "summarize", "deployments": [{"id": "cd1"}]}],
                "model_apis": ["org/model"],
                "api_keys": {"k2": "invoke"},
                "webhook_secrets": ["s1"],
                "user": {"user_id": "u1"},
            }
        )
    )

    world = World.from_json(path)

    assert world.models["m1"].behaviour.spec == {
        "kind": "sleep",
        "seconds": 2,
        "then": {"kind": "fail", "status": 500, "after": 0, "body": None, "then": "echo"},
    }
    assert world.models["m1"].deployments[1].behaviour.spec == {"kind": "python", "callable": "builtins:len"}
    assert world.chains["c1"].kind == "chain"
    assert (world.api_keys, world.webhook_secrets, world.user) == ({"k2": "invoke"}, ["s1"], {"user_id": "u1"})


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"nope": []}, "unknown world keys"),
        ({"models": [{"id": "bad-id"}]}, "Invalid model id"),
        ({"models": [{"id": "m1", "behaviour": "unknown"}]}, "unknown behaviour"),
        ({"models": [{"id": "m1", "behaviour": {"kind": "sleep", "wrong": 1}}]}, "invalid options"),
        ({"models": [{"id": "m1", "deployments": [{"id": "a"}, {"id": "b"}]}]}, "several deployments serve"),
        ({"models": [{"id": "m1", "deployments": [{"id": "a", "status": "SLEEPING"}]}]}, "SLEEPING"),
        ({"models": [{"id": "m1", "deployments": [{"id": "a", "environment": "Bad Env"}]}]}, "Invalid environment"),
        ({"api_keys": {"k": "admin"}}, "scope"),
    ],
)
def test_invalid_worlds_are_refused(data, problem):
    with pytest.raises(ValueError, match=problem):
        World.from_dict(data)


def test_behaviour_specs_round_trip():
    for spec in ("echo", {"kind": "flaky", "probability": 0.1, "status": 529, "seed": 3, "then": "textstats"}):
        assert behaviour_from_spec(spec).spec == spec


def _custom_world() -> World:
    return World().add(
        ModelSpec(
            "custom01",
            lambda payload: {"double": payload["x"] * 2},
            deployments=[DeploymentSpec("customprod01", min_replicas=1)],
        ),
        ModelSpec("stream01", Stream(("one ", "two")), deployments=[DeploymentSpec("streamprod01", min_replicas=1)]),
    )


@pytest.mark.integration
@pytest.mark.baseten_emulator(world=_custom_world)
def test_a_python_world_over_http(client):
    assert client.post("model-custom01", "/production/predict", json={"x": 4}).json() == {"double": 8}
    assert client.post("model-custom01", "/production/predict", json={}).status_code == 500
    streamed = client.post("model-stream01", "/production/predict", json={})
    assert streamed.text == "one two"
    assert client.post("model-echo01", "/production/predict", json={}).status_code == 404
