"""BasetenPredictOperator and BasetenChainRunOperator against respx: parameters, rendering, results, errors, mapping."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
import respx

from airflow_provider_baseten.exceptions import (
    BasetenAmbiguousSubmitError,
    BasetenConfigError,
    BasetenModelError,
    BasetenTimeoutError,
)
from airflow_provider_baseten.operators.links import BasetenChainLink, BasetenModelLink
from airflow_provider_baseten.operators.predict import BasetenChainRunOperator, BasetenPredictOperator

PREDICT_URL = "https://model-abc123.api.baseten.co/production/predict"
CHAIN_URL = "https://chain-ch42.api.baseten.co/production/run_remote"


@dataclass
class FakeTI:
    dag_id: str = "dag1"
    task_id: str = "predict"
    run_id: str = "manual__2024-01-01T00:00:00+00:00"
    map_index: int = -1
    xcoms: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


@pytest.fixture(autouse=True)
def baseten_conn(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {"conn_type": "baseten", "password": "unit-test-key-123", "extra": {"max_retries": 2}}
    monkeypatch.setenv("AIRFLOW_CONN_BASETEN_DEFAULT", json.dumps(conn))


@pytest.fixture
def mock_api():
    with respx.mock(using="httpx", assert_all_called=False) as router:
        yield router


def context(ti: FakeTI | None = None) -> dict[str, Any]:
    return {"ti": ti or FakeTI(), "params": {"model": "abc123", "text": "great day"}}


def predict_op(**kwargs: Any) -> BasetenPredictOperator:
    defaults: dict[str, Any] = {"task_id": "predict", "model_id": "abc123", "model_input": {"text": "hi"}}
    op = BasetenPredictOperator(**{**defaults, **kwargs})
    op.hook._sleep = lambda _seconds: None  # no wall-clock waits in retries
    return op


# --- parameters ------------------------------------------------------------------------------------------------


def test_template_fields_include_conn_id_and_input() -> None:
    assert {"baseten_conn_id", "model_id", "model_input", "result_path"} <= set(BasetenPredictOperator.template_fields)
    assert {"baseten_conn_id", "chain_id", "chain_input"} <= set(BasetenChainRunOperator.template_fields)
    assert BasetenPredictOperator.template_fields_renderers == {"model_input": "json"}
    assert BasetenChainRunOperator.template_fields_renderers == {"chain_input": "json"}


def test_parameters_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        BasetenPredictOperator("predict", "abc123", {"text": "hi"})  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model_id": "bad-id"}, "model_id"),
        ({"model_id": None, "chain_id": "ch42"}, "BasetenChainRunOperator|model_id, not chain_id"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -5}, "timeout"),
        ({"max_result_bytes": -1}, "max_result_bytes"),
        ({"max_result_bytes": 1.5}, "max_result_bytes"),
        ({"model_input": {"when": datetime(2024, 1, 1)}}, r"model_input\['when'\]"),
        ({"model_input": {1: "x"}}, "not a string"),
        ({"model_input": [float("nan")]}, "JSON cannot carry"),
        ({"result_path": 42}, "result path"),
        ({"environment": "Bad Env"}, "environment"),
    ],
)
def test_literal_values_are_validated_in_init(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(BasetenConfigError, match=match):
        predict_op(**kwargs)


def test_chain_run_rejects_model_id() -> None:
    with pytest.raises(BasetenConfigError, match="chain_id, not model_id"):
        BasetenChainRunOperator(task_id="run", model_id="abc123", chain_input={})


def test_templated_values_are_not_validated_at_parse_time() -> None:
    op = predict_op(model_id="{{ params.model }}", result_path="{{ var.value.results }}")
    assert op.model_id == "{{ params.model }}"


# --- rendering -------------------------------------------------------------------------------------------------


def test_rendering_fills_ids_and_nested_input() -> None:
    op = predict_op(model_id="{{ params.model }}", model_input={"text": "{{ params.text }}", "n": 3})
    op.render_template_fields(context())
    assert op.model_id == "abc123"
    assert op.model_input == {"text": "great day", "n": 3}
    assert op.target.id == "abc123"


def test_rendered_invalid_id_fails_before_any_request(mock_api: respx.MockRouter) -> None:
    route = mock_api.post(url__regex=r".*").respond(200, json={})
    op = predict_op(model_id="{{ params.model }}")
    ctx = context()
    ctx["params"]["model"] = "not/valid"
    op.render_template_fields(ctx)
    with pytest.raises(BasetenConfigError, match="model_id"):
        op.execute(ctx)
    assert not route.called


def test_rendered_non_json_input_fails_before_any_request(mock_api: respx.MockRouter) -> None:
    route = mock_api.post(PREDICT_URL).respond(200, json={})
    op = predict_op()
    op.model_input = {"payload": object()}  # what an XComArg could resolve to
    with pytest.raises(BasetenConfigError, match="model_input"):
        op.execute(context())
    assert not route.called


# --- results ---------------------------------------------------------------------------------------------------


def test_predict_returns_the_json_result_and_sends_the_input(mock_api: respx.MockRouter) -> None:
    route = mock_api.post(PREDICT_URL).respond(
        200, json={"label": "positive", "score": 0.9}, headers={"x-baseten-request-id": "rq1"}
    )
    result = predict_op(model_input={"text": "great"}).execute(context())
    assert result == {"label": "positive", "score": 0.9}
    request = route.calls.last.request
    assert json.loads(request.content) == {"text": "great"}
    assert request.headers["authorization"] == "Api-Key unit-test-key-123"


def test_per_task_timeout_is_the_read_timeout(mock_api: respx.MockRouter) -> None:
    route = mock_api.post(PREDICT_URL).respond(200, json={})
    predict_op(timeout=42).execute(context())
    assert route.calls.last.request.extensions["timeout"]["read"] == 42


def test_environment_and_deployment_addressing(mock_api: respx.MockRouter) -> None:
    staging = mock_api.post("https://model-abc123.api.baseten.co/environments/staging/predict").respond(200, json=1)
    pinned = mock_api.post("https://model-abc123.api.baseten.co/deployment/dep9/predict").respond(200, json=2)
    assert predict_op(environment="staging").execute(context()) == 1
    assert predict_op(deployment_id="dep9").execute(context()) == 2
    assert staging.called
    assert pinned.called


def test_chain_run_posts_to_run_remote(mock_api: respx.MockRouter) -> None:
    route = mock_api.post(CHAIN_URL).respond(200, json={"summary": "s", "words": 3})
    op = BasetenChainRunOperator(task_id="run", chain_id="ch42", chain_input={"text": "a b c"})
    assert op.execute(context()) == {"summary": "s", "words": 3}
    assert json.loads(route.calls.last.request.content) == {"text": "a b c"}


def test_large_result_is_written_to_object_storage(mock_api: respx.MockRouter, tmp_path) -> None:
    big = {"values": list(range(1000))}
    mock_api.post(PREDICT_URL).respond(200, json=big)
    ti = FakeTI(map_index=3)
    uri = predict_op(max_result_bytes=100, result_path=str(tmp_path)).execute(context(ti))
    assert uri == f"file://{tmp_path}/dag1/manual__2024-01-01T00_00_00+00_00/predict-3.json"
    assert json.loads((tmp_path / "dag1" / "manual__2024-01-01T00_00_00+00_00" / "predict-3.json").read_text()) == big


def test_large_result_default_path_is_under_airflow_home(
    mock_api: respx.MockRouter, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    mock_api.post(PREDICT_URL).respond(200, json={"x": "y" * 200})
    uri = predict_op(max_result_bytes=10).execute(context())
    assert uri.startswith(f"file://{tmp_path}/baseten-results/dag1/")
    assert uri.endswith("/predict.json")


def test_small_result_or_disabled_threshold_stays_in_xcom(mock_api: respx.MockRouter) -> None:
    mock_api.post(PREDICT_URL).respond(200, json={"x": "y" * 200})
    assert predict_op(max_result_bytes=None).execute(context()) == {"x": "y" * 200}
    assert predict_op().execute(context()) == {"x": "y" * 200}


# --- errors ----------------------------------------------------------------------------------------------------


def test_504_fails_once_and_suggests_the_async_operator(mock_api: respx.MockRouter) -> None:
    route = mock_api.post(PREDICT_URL).respond(504, json={"error": "timed out", "error_code": "timeout"})
    with pytest.raises(BasetenTimeoutError, match="BasetenAsyncPredictOperator") as caught:
        predict_op().execute(context())
    assert route.call_count == 1  # a predict is never retried after it may have run
    assert "504" in str(caught.value)


def test_read_timeout_is_ambiguous_and_suggests_the_async_operator(mock_api: respx.MockRouter) -> None:
    route = mock_api.post(PREDICT_URL).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(BasetenAmbiguousSubmitError, match="BasetenAsyncPredictOperator"):
        predict_op(timeout=5).execute(context())
    assert route.call_count == 1


def test_model_error_is_raised_with_the_body(mock_api: respx.MockRouter) -> None:
    mock_api.post(PREDICT_URL).respond(422, json={"error": "text is required"})
    with pytest.raises(BasetenModelError, match="text is required"):
        predict_op().execute(context())


def test_503_is_retried_because_it_never_reached_the_model(mock_api: respx.MockRouter) -> None:
    refused = httpx.Response(503, json={"error": "no replica is ready", "error_code": "model_unavailable"})
    route = mock_api.post(PREDICT_URL).mock(side_effect=[refused, httpx.Response(200, json={"ok": 1})])
    assert predict_op().execute(context()) == {"ok": 1}
    assert route.call_count == 2


# --- links -----------------------------------------------------------------------------------------------------


def test_link_is_published_while_the_task_runs(mock_api: respx.MockRouter) -> None:
    seen: dict[str, Any] = {}
    ti = FakeTI()

    def answer(request: httpx.Request) -> httpx.Response:
        seen.update(ti.xcoms)  # what the UI can read while the predict is in flight
        return httpx.Response(200, json={})

    mock_api.post(PREDICT_URL).mock(side_effect=answer)
    predict_op().execute(context(ti))
    assert seen[BasetenModelLink().xcom_key] == "https://app.baseten.co/models/abc123/overview"


def test_chain_run_publishes_the_chain_link(mock_api: respx.MockRouter) -> None:
    mock_api.post(CHAIN_URL).respond(200, json={})
    ti = FakeTI()
    BasetenChainRunOperator(task_id="run", chain_id="ch42", chain_input={}).execute(context(ti))
    assert ti.xcoms[BasetenChainLink().xcom_key] == "https://app.baseten.co/chains/ch42/overview"
    assert [type(link) for link in BasetenChainRunOperator.operator_extra_links] == [BasetenChainLink]
    assert [type(link) for link in BasetenPredictOperator.operator_extra_links] == [BasetenModelLink]


# --- mapping ---------------------------------------------------------------------------------------------------


def test_partial_expand_over_inputs_creates_a_mapped_operator() -> None:
    from airflow.providers.common.compat.sdk import DAG, MappedOperator

    inputs = [{"text": "a"}, {"text": "b"}]
    with DAG("mapping", schedule=None, start_date=datetime(2024, 1, 1)):
        mapped = BasetenPredictOperator.partial(task_id="score", model_id="abc123", timeout=30).expand(
            model_input=inputs
        )
    assert isinstance(mapped, MappedOperator)
    assert mapped.expand_input.value == {"model_input": inputs}
    assert [type(link) for link in mapped.operator_extra_links] == [BasetenModelLink]
    unmapped = mapped.unmap({"model_input": inputs[1]})
    assert isinstance(unmapped, BasetenPredictOperator)
    assert unmapped.model_input == {"text": "b"}
    assert unmapped.timeout == 30


def test_mapped_instances_write_large_results_to_distinct_files(mock_api: respx.MockRouter, tmp_path) -> None:
    mock_api.post(PREDICT_URL).respond(200, json={"x": "y" * 100})
    uris = {
        predict_op(max_result_bytes=10, result_path=f"file://{tmp_path}").execute(context(FakeTI(map_index=i)))
        for i in range(3)
    }
    assert len(uris) == 3
