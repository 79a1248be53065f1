"""Integration DAG: common.ai's decorators and operators on Baseten, against the emulator.

``tests/integration/test_common_ai.py`` runs it with ``airflow dags test``; the connections come from its environment.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.common.ai.operators.llm import LLMOperator
from airflow.sdk import DAG, task
from pydantic import BaseModel


class Review(BaseModel):
    sentiment: str
    confidence: float


def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"18 degrees and sunny in {city}"


def _toolsets() -> list[Any]:
    from pydantic_ai.toolsets import FunctionToolset

    return [FunctionToolset([get_weather])]


with DAG(
    dag_id="baseten_common_ai_integration",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 0, "execution_timeout": timedelta(minutes=5)},
    tags=["baseten", "integration"],
):
    # serialize_output: downstream gets a dict (a class defined in a DAG file cannot be imported back from XCom).
    @task.llm(
        llm_conn_id="pydanticai_baseten_default",
        output_type=Review,
        system_prompt="You grade reviews.",
        serialize_output=True,
    )
    def grade() -> str:
        return "Review: 'I love this blender, it is excellent.'"

    @task.agent(llm_conn_id="pydanticai_baseten_default", system_prompt="Answer with tools.", toolsets=_toolsets())
    def weather() -> str:
        return "Use get_weather for 'Paris' and tell me."

    fallback = LLMOperator(
        task_id="fallback",
        llm_conn_id="pydanticai_baseten_default",
        model_id="baseten:no-such/model",
        fallback_conn_ids=["pydanticai_second"],
        prompt="Summarize: the first model is not enabled here.",
    )

    deployed = LLMOperator(
        task_id="deployed",
        llm_conn_id="baseten_deployed_llm",
        prompt="Hello deployed model",
        model_settings={"seed": 1, "max_tokens": 50},
    )

    @task
    def check(review: dict[str, Any], answer: str, fallback_answer: str, deployed_answer: str) -> None:
        assert review["sentiment"] == "positive", review
        assert 0 <= review["confidence"] <= 1, review
        assert "18 degrees and sunny in Paris" in answer, answer
        assert fallback_answer.startswith("Summary:"), fallback_answer
        assert deployed_answer.startswith("Here is what I heard: Hello deployed model"), deployed_answer

    check(grade(), weather(), fallback.output, deployed.output)
