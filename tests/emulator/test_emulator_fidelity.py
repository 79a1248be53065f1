"""Every JSON answer the emulator gives on an endpoint of Baseten's specs validates against the spec's schema.

A scenario drives every spec endpoint the emulator serves (success and error answers), an httpx event hook records
each response, and each one is checked against the response schema of its operation and status in
``../shared/reference/baseten``. Error statuses an inference operation does not declare are checked against the
spec's ``ErrorResponse``. The spec reader is the contract tests' (``tests/contract/openapi_contract.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from airflow_provider_baseten.emulator import Emulator, FaultPlan, Limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "contract"))
from openapi_contract import Spec

pytestmark = [pytest.mark.integration, pytest.mark.contract]


class Recorder:
    def __init__(self) -> None:
        self.responses: list[httpx.Response] = []

    def __call__(self, response: httpx.Response) -> None:
        response.read()
        self.responses.append(response)


def _check(spec: Spec, response: httpx.Response, *, undeclared_errors: bool) -> list[str]:
    request = response.request
    match = spec.match(request.method, request.url.path)
    assert match is not None, f"{request.method} {request.url.path} is not an endpoint of {spec.path.name}"
    if "json" not in response.headers.get("content-type", ""):
        return []
    status = str(response.status_code)
    if status in match.operation["responses"]:
        schema = spec.response_schema(match.operation, status)
    elif undeclared_errors and response.status_code >= 400:
        schema = spec.schema("ErrorResponse")
    else:
        return []
    if schema is None:
        return [f"{request.method} {match.template} {status}: the spec declares no body, the emulator sent one"]
    where = f"{request.method} {request.headers['host']}{request.url.path} -> {status}"
    return [f"{where}: {problem}" for problem in spec.errors(schema, response.json())]


def _client(emu: Emulator, recorder: Recorder, key: str | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=emu.url,
        headers={"Authorization": f"Api-Key {key or emu.api_key}"},
        event_hooks={"response": [recorder]},
        timeout=10,
    )


@pytest.mark.baseten_emulator(manual_clock=True, limits=Limits(org_queue_limit=6, status_per_second=5))
def test_inference_answers_validate_against_the_inference_spec(baseten_emulator: Emulator, reference_dir: Path):
    emu = baseten_emulator
    recorder = Recorder()
    spec = Spec(reference_dir / "inference-openapi.json")
    model = {"Host": "model-slow01.api.baseten.co"}
    with _client(emu, recorder) as http, _client(emu, Recorder(), key="wrong") as unauthorized:
        for host, path in [
            ("model-echo01", "/production/predict"),
            ("model-sentiment01", "/development/predict"),
            ("model-sentiment01", "/environments/staging/predict"),
            ("model-sentiment01", "/deployment/sentprod01/predict"),
            ("model-sentiment01-prod-us", "/predict"),
            ("model-inactive01", "/production/predict"),
            ("model-unhealthy01", "/production/predict"),
            ("model-textstats01", "/production/predict"),
        ]:
            http.post(path, headers={"Host": f"{host}.api.baseten.co"}, json={"text": "so good"})
        http.post("/production/run_remote", headers={"Host": "chain-summarize01.api.baseten.co"}, json={"text": "A."})
        http.post("/run_remote", headers={"Host": "chain-summarize01-prod-us.api.baseten.co"}, json={})  # 404
        recorder.responses.append(unauthorized.post("/production/predict", headers=model, json={}))

        ids = [
            http.post(
                "/production/async_predict", headers=model, json={"model_input": {"text": "x"}, "priority": p}
            ).json()["request_id"]
            for p in (0, 0, 1, 2)
        ]
        http.post("/production/async_predict", headers=model, json={"model_input": {}, "priority": 9})  # 400
        http.post("/production/async_predict", headers=model, json={"model_input": {"x": "a" * 300_000}})  # 413
        http.post(
            "/production/async_run_remote",
            headers={"Host": "chain-summarize01.api.baseten.co"},
            json={"model_input": {"text": "Hi."}},
        )
        http.post(
            "/async_predict",
            headers={"Host": "model-sentiment01-prod-us.api.baseten.co"},
            json={"model_input": {"text": "meh"}},
        )
        http.post("/production/async_predict", headers=model, json={"model_input": {}})  # 429: org limit of 6
        http.delete(f"/async_request/{ids[3]}", headers=model)  # canceled: true
        http.delete(f"/async_request/{ids[0]}", headers=model)  # canceled: false
        for request_id in ids:
            http.get(f"/async_request/{request_id}", headers=model)
        for host, path in [
            ("model-slow01", "/production/async_queue_status"),
            ("model-sentiment01-prod-us", "/async_queue_status"),
            ("chain-summarize01", "/development/async_queue_status"),  # 404: no development deployment
        ]:
            http.get(path, headers={"Host": f"{host}.api.baseten.co"})
        emu.advance(15)
        for request_id in ids:
            http.get(f"/async_request/{request_id}", headers=model)
        for host, path in [("model-coldstart01", "/production/wake"), ("model-coldstart01-x", "/wake")]:
            http.post(path, headers={"Host": f"{host}.api.baseten.co"})
        emu.faults.set(FaultPlan(route="predict", sequence=[429, 500, 502, 503, 504, 529], retry_after=2))
        for _ in range(6):
            http.post("/production/predict", headers={"Host": "model-echo01.api.baseten.co"}, json={})
        for _ in range(10):  # past the status rate limit
            http.get(f"/async_request/{ids[0]}", headers=model)

    statuses = {r.status_code for r in recorder.responses}
    assert {200, 201, 202, 400, 401, 404, 413, 429, 500, 502, 503, 504, 529} <= statuses
    problems = [p for r in recorder.responses for p in _check(spec, r, undeclared_errors=True)]
    assert problems == []


@pytest.mark.baseten_emulator(manual_clock=True)
def test_management_answers_validate_against_the_management_spec(baseten_emulator: Emulator, reference_dir: Path):
    recorder = Recorder()
    spec = Spec(reference_dir / "management-openapi.json")
    management = {"Host": "api.baseten.co"}
    with _client(baseten_emulator, recorder) as http:
        for path in [
            "/v1/users/me",
            "/v1/models",
            "/v1/models/sentiment01",
            "/v1/models/coldstart01",
            "/v1/models/sentiment01/deployments",
            "/v1/models/sentiment01/deployments/production",
            "/v1/models/sentiment01/deployments/development",
            "/v1/models/sentiment01/deployments/sentstage01",
            "/v1/models/sentiment01/environments",
            "/v1/models/sentiment01/environments/staging",
            "/v1/models/sentiment01/environments/prod-us",
            "/v1/models/coldstart01/environments/production",
            "/v1/chains",
            "/v1/chains/summarize01",
            "/v1/chains/summarize01/deployments",
            "/v1/chains/summarize01/deployments/sumprod01",
            # Not .../environments: the spec documents the model form (EnvironmentsV1) for it; chains answer theirs.
            "/v1/chains/summarize01/environments/production",
            "/v1/models/nope01",
        ]:
            http.get(path, headers=management)
        chainlets = {"updates": [{"chainlet_name": "Summarize", "autoscaling_settings": {"min_replica": 2}}]}
        environment = "/v1/chains/summarize01/environments/production"
        http.patch(f"{environment}/chainlet_settings/autoscaling_settings", headers=management, json=chainlets)
        http.post(f"{environment}/promote", headers=management, json={"deployment_id": "sumprod01"})
        for path in [
            "/v1/models/inactive01/deployments/production/activate",
            "/v1/models/sentiment01/deployments/development/deactivate",
            "/v1/models/sentiment01/deployments/sentdev01/activate",
            "/v1/models/sentiment01/environments/staging/deactivate",
            "/v1/models/sentiment01/environments/staging/activate",
        ]:
            http.post(path, headers=management)
        baseten_emulator.advance(30)
        http.get("/v1/models/inactive01/deployments/production", headers=management)

    assert [r.status_code for r in recorder.responses].count(200) == len(recorder.responses) - 1
    problems = [p for r in recorder.responses for p in _check(spec, r, undeclared_errors=False)]
    assert problems == []
