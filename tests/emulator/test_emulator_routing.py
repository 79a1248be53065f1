"""Routing on the Host header, path prefixes, auth, and the admin API."""

from __future__ import annotations

import httpx
import pytest

from airflow_provider_baseten.emulator import Emulator

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        ("model-sentiment01", "/production/predict", "sentprod01"),
        ("model-sentiment01", "/environments/production/predict", "sentprod01"),
        ("model-sentiment01", "/development/predict", "sentdev01"),
        ("model-sentiment01", "/environments/staging/predict", "sentstage01"),
        ("model-sentiment01", "/deployment/sentdev01/predict", "sentdev01"),
        ("model-sentiment01-prod-us", "/predict", "sentus01"),
    ],
)
def test_prefixes_and_regional_hosts_reach_their_deployment(baseten_emulator: Emulator, client, host, path, expected):
    response = client.post(host, path, json={"text": "a great day"})

    assert response.status_code == 200, response.text
    assert response.json() == {"label": "positive", "score": 1.0}
    assert response.headers["x-baseten-request-id"]
    assert baseten_emulator.deployment("sentiment01", deployment_id=expected).calls == 1


@pytest.mark.parametrize(
    ("host", "path"),
    [
        ("model-sentiment01-prod-us", "/production/predict"),  # regional hosts reject prefixed paths
        ("model-sentiment01-prod-us", "/environments/prod-us/predict"),
        ("model-sentiment01", "/predict"),  # non-regional hosts need a prefix
        ("model-sentiment01-staging", "/predict"),  # staging has no regional endpoint
        ("model-sentiment01", "/environments/nope/predict"),
        ("model-sentiment01", "/deployment/nope01/predict"),
        ("model-sentiment01", "/environments/Bad_Name/predict"),
        ("model-missing01", "/production/predict"),
        ("model-sentiment01", "/production/run_remote"),  # run_remote is for chains
        ("chain-summarize01", "/production/predict"),  # predict is for models
        ("model-sentiment01", "/production/unknown"),
        ("unknown.example.com", "/production/predict"),
    ],
)
def test_unroutable_requests_answer_404(client, host, path):
    response = client.post(host, path, json={"text": "x"})

    assert response.status_code == 404
    assert isinstance(response.json()["error"], str)


def test_wrong_method_answers_405(client):
    assert client.get("model-echo01", "/production/predict").status_code == 405
    assert client.post("model-echo01", "/production/async_queue_status").status_code == 405


def test_chain_run_remote(client):
    response = client.post("chain-summarize01", "/production/run_remote", json={"text": "First one. Second one."})

    assert response.status_code == 200
    assert response.json() == {"summary": "First one", "words": 4}


def test_management_lists_and_reads_models_and_chains_each_as_its_own_record(client):
    models = client.get("api.baseten.co", "/v1/models").json()["models"]
    chains = client.get("api.baseten.co", "/v1/chains").json()["chains"]
    assert "summarize01" in {c["id"] for c in chains}
    assert "summarize01" not in {m["id"] for m in models}
    assert "sentiment01" in {m["id"] for m in models}
    assert "sentiment01" not in {c["id"] for c in chains}

    model = client.get("api.baseten.co", "/v1/models/sentiment01").json()
    chain = client.get("api.baseten.co", "/v1/chains/summarize01").json()
    assert model["production_deployment_id"] == "sentprod01"  # ModelV1
    assert chain["id"] == "summarize01"
    assert "production_deployment_id" not in chain
    missing = client.get("api.baseten.co", "/v1/chains/sentiment01")
    assert missing.status_code == 404
    assert "sentiment01" in missing.text


def test_textstats_and_model_errors_pass_through(client):
    ok = client.post("model-textstats01", "/production/predict", json={"text": "One two. Three!"})
    bad = client.post("model-textstats01", "/production/predict", json={"nope": 1})

    assert ok.json() == {"words": 3, "characters": 15, "sentences": 2}
    assert bad.status_code == 422
    assert "text" in bad.json()["error"]


@pytest.mark.parametrize("scheme", ["Api-Key", "Bearer", "api-key", "bearer"])
def test_api_key_and_bearer_are_accepted(make_client, scheme):
    client = make_client(scheme=scheme)

    assert client.post("model-echo01", "/production/predict", json={"a": 1}).status_code == 200
    assert client.get("api.baseten.co", "/v1/users/me").status_code == 200
    assert client.get("inference.baseten.co", "/v1/models").status_code == 200


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_missing_or_invalid_key_answers_401(baseten_emulator: Emulator, make_client, key):
    client = make_client(key=key)

    for host, path in [("model-echo01", "/production/predict"), ("api.baseten.co", "/v1/models")]:
        response = client.request("POST" if "predict" in path else "GET", host, path, json={})
        assert response.status_code == 401
        assert response.json()["error_code"] == "unauthorized"
    assert baseten_emulator.deployment("echo01").calls == 0


@pytest.mark.baseten_emulator(keys={"invoke-only": "invoke"})
def test_invoke_only_keys_call_models_but_not_the_management_api(make_client):
    client = make_client(key="invoke-only")

    assert client.post("model-echo01", "/production/predict", json={"a": 1}).status_code == 200
    assert client.get("inference.baseten.co", "/v1/models").status_code == 200
    assert client.get("api.baseten.co", "/v1/users/me").status_code == 403


def test_non_json_bodies_are_forwarded_verbatim(client):
    response = client.post(
        "model-echo01", "/production/predict", content=b"\x00raw", headers={"content-type": "application/octet-stream"}
    )

    assert response.status_code == 200
    assert response.content == b"\x00raw"


def test_journal_records_every_request(baseten_emulator: Emulator, client):
    client.post("model-echo01", "/production/predict", json={"a": 1})
    client.get("model-echo01", "/production/async_queue_status")
    client.post("model-nope01", "/production/predict", json={})

    journal = baseten_emulator.journal
    assert len(journal) == 3
    first = journal[0]
    assert (first.method, first.host, first.path, first.status, first.model_ran, first.route) == (
        "POST",
        "model-echo01.api.baseten.co",
        "/production/predict",
        200,
        True,
        "predict",
    )
    assert journal.count(method="POST", path_suffix="/predict") == 2
    assert journal.count(status=404) == 1
    assert baseten_emulator.counters()["model_runs"] == 1


def test_admin_routes(baseten_emulator: Emulator, client):
    http = httpx.Client(base_url=baseten_emulator.url)
    try:
        client.post("model-echo01", "/production/predict", json={"a": 1})
        assert http.get("/_emulator/health").json()["status"] == "ok"
        journal = http.get("/_emulator/journal", params={"path_suffix": "/predict"}).json()
        assert journal["total"] == 1
        assert journal["entries"][0]["host"] == "model-echo01.api.baseten.co"
        assert http.get("/_emulator/counters").json()["by_route"] == {"predict": 1}
        plans = http.post("/_emulator/faults", json={"route": "predict", "sequence": [503]}).json()["plans"]
        assert plans[0]["sequence"] == [503]
        assert client.post("model-echo01", "/production/predict", json={}).status_code == 503
        assert http.delete("/_emulator/faults").json() == {"plans": []}
        assert http.post("/_emulator/faults", json={"route": "nope"}).status_code == 400
        assert http.post("/_emulator/reset").json() == {"status": "reset"}
        assert http.get("/_emulator/counters").json()["requests"] == 0
        assert http.get("/_emulator/nope").status_code == 404
    finally:
        http.close()
