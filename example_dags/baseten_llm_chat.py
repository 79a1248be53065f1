"""LLM chat on Baseten Model APIs: structured output mapped over prompts, a tool call, and the token bill.

Model APIs are Baseten's shared, OpenAI-compatible LLM endpoints (``inference.baseten.co``), picked by a model slug;
the same operator calls a model you deployed yourself with ``model_id=...``. ``TicketTriage`` below is both the JSON
schema sent as ``response_format`` and the validator of each answer: the parsed object comes back under ``parsed``.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, Literal

import pendulum
from airflow.sdk import DAG, Param, task
from pydantic import BaseModel, Field

from airflow_provider_baseten.operators.baseten import BasetenChatOperator

DOC_MD = """
### LLM chat with Baseten Model APIs

1. `support_tickets` returns today's tickets (a fixed sample here).
2. `triage_ticket` (mapped, one per ticket) asks the model for a `TicketTriage` object: the pydantic model becomes the
   `json_schema` response format, and the answer is validated against it (an invalid answer fails the task).
3. `ask_with_tools` offers the model a `get_order_status` tool (`tool_choice="required"`); `run_tools` executes
   the tool calls it asked for, and `answer_with_tool_results` sends the results back for the final answer.
4. `token_usage` sums the prompt and completion tokens of every call (each result carries `usage`).

**Cost and retries.** Model APIs bill per token; a task retry re-sends the prompt. `max_total_tokens` fails a task
whose call used more than expected, so a runaway prompt is visible.
"""

PARAMS = {
    "chat_model": Param("deepseek-ai/DeepSeek-V3.1", type="string", description="A Model APIs slug."),
}

DEFAULT_ARGS = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "execution_timeout": timedelta(minutes=10),
}

TICKETS = [
    "I was charged twice for my subscription this month, please refund one payment.",
    "The export button crashes the app every time I click it.",
    "Could you add a dark mode to the dashboard?",
]

ORDER_STATUS_TOOL = {
    "type": "function",
    "function": {
        "name": "get_order_status",
        "description": "Look up the shipping status of an order.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string", "description": "The order number, e.g. A-1042."}},
            "required": ["order_id"],
        },
    },
}


class TicketTriage(BaseModel):
    """The structured answer for one support ticket."""

    category: Literal["billing", "bug", "feature_request", "other"]
    urgency: int = Field(ge=1, le=5, description="1 = can wait, 5 = drop everything")
    summary: str = Field(description="One sentence for the on-call engineer.")


def get_order_status(order_id: str) -> dict[str, str]:
    """The tool the model may call; in your copy, a lookup in your order system."""
    return {"order_id": order_id, "status": "shipped", "eta": "2 days"}


with DAG(
    dag_id="baseten_llm_chat",
    description="Model APIs chat: structured output mapped over prompts, a tool call, and summed token usage.",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=PARAMS,
    tags=["baseten", "llm", "chat", "example"],
    doc_md=DOC_MD,
) as dag:

    @task
    def support_tickets() -> list[str]:
        return TICKETS

    triage = BasetenChatOperator.partial(
        task_id="triage_ticket",
        model="{{ params.chat_model }}",
        system_prompt="You triage customer support tickets. Answer with the requested JSON only.",
        response_format=TicketTriage,
        temperature=0,
        max_tokens=512,
        max_total_tokens=4000,
    ).expand(prompt=support_tickets())

    ask = BasetenChatOperator(
        task_id="ask_with_tools",
        model="{{ params.chat_model }}",
        prompt="Where is my order A-1042?",
        tools=[ORDER_STATUS_TOOL],
        tool_choice="required",  # this step exists to look the order up: make the model call a tool
        max_tokens=512,
    )

    @task
    def run_tools(first_answer: dict[str, Any]) -> list[dict[str, Any]]:
        """Run the tool calls the model asked for and build the follow-up conversation."""
        messages: list[dict[str, Any]] = [
            {"role": "user", "content": "Where is my order A-1042?"},
            first_answer["message"],
        ]
        for call in first_answer.get("tool_calls") or []:
            arguments = json.loads(call["function"]["arguments"] or "{}")
            result = get_order_status(**arguments)
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": json.dumps(result)})
        return messages

    answer = BasetenChatOperator(
        task_id="answer_with_tool_results",
        model="{{ params.chat_model }}",
        messages=run_tools(ask.output),
        tools=[ORDER_STATUS_TOOL],
        max_tokens=512,
    )

    @task
    def token_usage(*results: Any) -> dict[str, int]:
        """Sum the token usage of every chat call of this run (mapped results arrive as a list)."""
        totals = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "calls": 0}
        flat: list[dict[str, Any]] = []
        for result in results:
            flat.extend([result] if isinstance(result, dict) else list(result))
        for result in flat:
            usage = result.get("usage") or {}
            for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
                totals[key] += int(usage.get(key) or 0)
            totals["calls"] += 1
        for result in flat:
            if result.get("parsed"):
                print(f"triage: {result['parsed']}")
        print(f"Token usage of this run: {totals}")
        return totals

    token_usage(triage.output, ask.output, answer.output)
