"""common.ai (``@task.llm``, ``@task.agent``, ``LLMOperator``) on Baseten, with the real common.ai provider and
pydantic-ai, against the emulator over loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "airflow.providers.common.ai.hooks.pydantic_ai",
    reason="apache-airflow-providers-common-ai is not installed (pip install 'airflow-provider-baseten[common-ai]')",
)

from pydantic import BaseModel

from airflow_provider_baseten.emulator.server import Emulator
from airflow_provider_baseten.hooks.pydantic_ai import BasetenModelAuthError, PydanticAIBasetenHook

from .airflow_cli import dags_test

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DAGS = Path(__file__).parent / "dags"
SLUG = "deepseek-ai/DeepSeek-V3.1"


def llm_conn(**extra: Any) -> str:
    return json.dumps({"conn_type": "pydanticai_baseten", "extra": extra})


def connections(emu: Emulator) -> dict[str, str]:
    return {
        "AIRFLOW_CONN_BASETEN_DEFAULT": emu.conn_uri(),
        "AIRFLOW_CONN_BASETEN_SECOND": emu.conn_uri(extra={"max_retries": 0}),
        "AIRFLOW_CONN_PYDANTICAI_BASETEN_DEFAULT": llm_conn(model=f"baseten:{SLUG}"),
        "AIRFLOW_CONN_PYDANTICAI_SECOND": llm_conn(baseten_conn_id="baseten_second", model="baseten:zai-org/GLM-5.2"),
        "AIRFLOW_CONN_BASETEN_DEPLOYED_LLM": llm_conn(model_id="llm01"),
        "AIRFLOW_CONN_PYDANTICAI_TEST": json.dumps({"conn_type": "pydanticai", "extra": {"model": "test"}}),
    }


@pytest.fixture
def conns(baseten_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    for key, value in connections(baseten_emulator).items():
        monkeypatch.setenv(key, value)
    return baseten_emulator


class Review(BaseModel):
    sentiment: str
    confidence: float


def test_structured_output_on_model_apis(conns: Emulator) -> None:
    agent = PydanticAIBasetenHook().create_agent(Review, instructions="You grade reviews.")
    result = agent.run_sync("Review: 'awful and terrible, it broke'", model_settings={"temperature": 0})
    assert result.output.sentiment == "negative"
    (call,) = conns.journal.filter(route="chat")
    assert (call.host, call.path, call.status) == ("inference.baseten.co", "/v1/chat/completions", 200)


def test_agent_tool_call_result_reaches_the_answer(conns: Emulator) -> None:
    calls: list[str] = []
    agent = PydanticAIBasetenHook().create_agent(instructions="Use tools.")

    @agent.tool_plain
    def get_weather(city: str) -> str:
        calls.append(city)
        return f"rain in {city}"

    result = agent.run_sync("Use get_weather for 'Oslo'")
    assert calls == ["Oslo"]
    assert "rain in Oslo" in result.output
    assert conns.journal.count(route="chat") == 2  # the tool call, then the answer


def test_usage_limits_stop_an_agent_before_a_second_billed_request(conns: Emulator) -> None:
    from pydantic_ai.exceptions import UsageLimitExceeded
    from pydantic_ai.usage import UsageLimits

    agent = PydanticAIBasetenHook().create_agent(instructions="Use tools.")
    agent.tool_plain(lambda city: f"rain in {city}", name="get_weather")
    with pytest.raises(UsageLimitExceeded):
        agent.run_sync("Use get_weather for 'Oslo'", usage_limits=UsageLimits(request_limit=1))
    assert conns.journal.count(route="chat") == 1


def test_unknown_slug_falls_back_to_a_connection_of_another_type(conns: Emulator) -> None:
    hook = PydanticAIBasetenHook(model_id="baseten:no-such/model", fallback_conn_ids=["pydanticai_test"])
    result = hook.create_agent(instructions="Be brief.").run_sync("hello")
    assert result.output  # pydantic-ai's TestModel answered
    (call,) = conns.journal.filter(route="chat")
    assert call.status == 404


def test_unknown_slug_without_fallback_says_it_is_not_enabled(conns: Emulator) -> None:
    from pydantic_ai.exceptions import ModelNotFoundError

    agent = PydanticAIBasetenHook(model_id="baseten:no-such/model").create_agent(instructions="Be brief.")
    with pytest.raises(ModelNotFoundError, match="not enabled for this workspace"):
        agent.run_sync("hello")


def test_rejected_key_fails_without_retries(conns: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.common.compat.sdk import AirflowFailException

    monkeypatch.setenv(
        "AIRFLOW_CONN_BASETEN_DEFAULT",
        json.dumps({"conn_type": "baseten", "password": "wrong-key", "host": conns.url}),
    )
    agent = PydanticAIBasetenHook().create_agent(instructions="Be brief.")
    with pytest.raises(BasetenModelAuthError, match="check the API key") as err:
        agent.run_sync("hello")
    assert isinstance(err.value, AirflowFailException)
    assert "wrong-key" not in str(err.value)
    assert conns.journal.count(route="chat") <= 1
    assert len(conns.journal.filter()) == 1  # one request: no SDK or transport retry


@pytest.mark.timeout(600)
def test_airflow_dags_test_runs_the_common_ai_dag_green(tmp_path: Path) -> None:
    with Emulator(time_scale=20) as emu:
        states, output = dags_test(
            tmp_path, DAGS / "common_ai_dag.py", "baseten_common_ai_integration", connections(emu)
        )
        assert states == dict.fromkeys(["grade", "weather", "fallback", "deployed", "check"], "success"), output
        chat = emu.journal.filter(route="chat")
        assert sorted(call.status for call in chat) == [200, 200, 200, 200, 404]  # grade, weather x2, fallback
        deployed = emu.journal.filter(
            host="model-llm01.api.baseten.co", path_suffix="/production/sync/v1/chat/completions"
        )
        assert len(deployed) == 1
        assert emu.api_key not in output
