"""Airflow's common.ai decorators on Baseten: ``@task.llm`` with a pydantic output type and ``@task.agent`` with a tool.

``pydanticai_baseten_default`` is a ``pydanticai_baseten`` connection: its extra names the ``baseten`` connection
(``baseten_default``) whose key, gateway, proxy and TLS settings every call uses. Needs
``pip install 'airflow-provider-baseten[common-ai]'``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

# Airflow's DAG processor pre-imports the airflow modules a DAG file imports ([dag_processor]
# parsing_pre_import_modules), once in its parent process: naming common.ai's decorators here keeps their
# pydantic-ai import (about a second of CPU) out of every parse of this file.
import airflow.providers.common.ai.decorators.agent
import airflow.providers.common.ai.decorators.llm  # noqa: F401
import pendulum
from airflow.sdk import DAG, Param, task
from pydantic import BaseModel, Field

DOC_MD = """
### common.ai on Baseten Model APIs

1. `support_tickets` returns today's tickets (a fixed sample here).
2. `triage_ticket` (`@task.llm`, mapped, one per ticket) asks the model for a `TicketTriage`: common.ai turns the
   pydantic model into pydantic-ai's structured output and validates the answer (an invalid answer is asked again,
   then fails the task). `serialize_output=True` hands a dict downstream: a class defined in a DAG file cannot be
   imported back from XCom.
3. `order_status_agent` (`@task.agent`) gives the model a `get_order_status` tool; pydantic-ai runs the tool call in
   the task and sends the result back for the final answer. `usage_limits` caps the billed requests.
4. `report` prints what came back.

**Cost and retries.** Model APIs bill per token; a task retry sends the prompt again. The connection's
`fallback_conn_ids` can list other `pydanticai*` connections to fail over to within one attempt.
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
]


class TicketTriage(BaseModel):
    """The structured answer for one support ticket."""

    category: Literal["billing", "bug", "feature_request", "other"]
    urgency: int = Field(ge=1, le=5, description="1 = can wait, 5 = drop everything")
    summary: str = Field(description="One sentence for the on-call engineer.")


def get_order_status(order_id: str) -> dict[str, str]:
    """Look up the shipping status of an order (in your copy, a lookup in your order system)."""
    return {"order_id": order_id, "status": "shipped", "eta": "2 days"}


def order_tools() -> list[Any]:
    from pydantic_ai.toolsets import FunctionToolset

    return [FunctionToolset([get_order_status])]


with DAG(
    dag_id="baseten_common_ai",
    description="common.ai's @task.llm and @task.agent on Baseten Model APIs: structured output and a tool call.",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=PARAMS,
    tags=["baseten", "llm", "common-ai", "example"],
    doc_md=DOC_MD,
) as dag:

    @task
    def support_tickets() -> list[str]:
        return TICKETS

    @task.llm(
        llm_conn_id="pydanticai_baseten_default",
        model_id="baseten:{{ params.chat_model }}",
        system_prompt="You triage customer support tickets.",
        output_type=TicketTriage,
        serialize_output=True,
        model_settings={"temperature": 0, "max_tokens": 512},
    )
    def triage_ticket(ticket: str) -> str:
        return f"Ticket: {ticket}"

    @task.agent(
        llm_conn_id="pydanticai_baseten_default",
        model_id="baseten:{{ params.chat_model }}",
        system_prompt="You answer customers. Look orders up with your tools; never guess a status.",
        toolsets=order_tools(),
        usage_limits={"request_limit": 4},
    )
    def order_status_agent() -> str:
        return "Where is my order 'A-1042'? Use get_order_status."

    @task
    def report(triages: list[dict[str, Any]], answer: str) -> dict[str, Any]:
        for triage in triages:
            print(f"triage: {triage}")
        print(f"agent: {answer}")
        return {"tickets": len(triages), "answer": answer}

    report(triage_ticket.expand(ticket=support_tickets()), order_status_agent())
