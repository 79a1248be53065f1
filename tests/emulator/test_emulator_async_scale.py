"""Async queues at batch scale: per-deployment concurrency, the org-wide in-flight cap, exact counts, cost at 10,000."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_baseten.emulator import DeploymentSpec, Emulator, Limits, ModelSpec, World
from airflow_provider_baseten.emulator.behaviours import Echo, Sleep
from airflow_provider_baseten.emulator.state import EmulatorState
from airflow_provider_baseten.hooks.models import AsyncPredictRequest

pytestmark = [pytest.mark.integration]

HOST = "model-bulk01"


def _bulk_world() -> World:
    """Two deployments running a 1 s model 50 (and 2) async requests at a time."""
    return World().add(
        ModelSpec(
            "bulk01",
            Sleep(1.0, Echo()),
            deployments=[DeploymentSpec("bulkprod01", min_replicas=1, async_concurrency=50)],
        ),
        ModelSpec(
            "other01",
            Sleep(1.0, Echo()),
            deployments=[DeploymentSpec("otherprod01", min_replicas=1, async_concurrency=2)],
        ),
    )


def _limits(**overrides: Any) -> Limits:
    """Baseten's limits, but status reads unlimited: these tests read many statuses at one emulated instant."""
    return Limits(status_per_second=None, **overrides)


bulk = pytest.mark.baseten_emulator(manual_clock=True, world=_bulk_world, limits=_limits())


def submit(client: Any, host: str = HOST, **body: Any) -> str:
    body.setdefault("model_input", {"n": 1})
    response = client.post(host, "/production/async_predict", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["request_id"])


def statuses(client: Any, ids: list[str], host: str = HOST) -> list[str]:
    return [client.get(host, f"/async_request/{r}").json()["status"] for r in ids]


def queue_status(client: Any, host: str = HOST) -> tuple[int, int]:
    body = client.get(host, "/production/async_queue_status").json()
    return body["num_queued_requests"], body["num_in_progress_requests"]


def test_async_concurrency_defaults_to_predict_concurrency_and_must_be_positive():
    assert DeploymentSpec("d1", predict_concurrency=3).async_concurrency is None
    with pytest.raises(ValueError, match="deployment d2: async_concurrency must be at least 1"):
        DeploymentSpec("d2", async_concurrency=0)


@bulk
def test_a_deployment_runs_async_concurrency_at_a_time_the_rest_queued(baseten_emulator: Emulator, client):
    first = [submit(client) for _ in range(50)]
    later = [submit(client, priority=1) for _ in range(5)]
    urgent = [submit(client, priority=0) for _ in range(5)]

    assert queue_status(client) == (10, 50)
    assert set(statuses(client, first)) == {"IN_PROGRESS"}
    assert set(statuses(client, later + urgent)) == {"QUEUED"}
    baseten_emulator.advance(1)  # the first 50 finish; the 10 waiting take free slots in the same tick

    assert set(statuses(client, first)) == {"SUCCEEDED"}
    assert queue_status(client) == (0, 10)
    starts = sorted(baseten_emulator.requests[r].status_at for r in later + urgent)
    assert set(starts) == {starts[0]}  # all started in the same tick
    assert baseten_emulator.deployment("other01").running == 0  # concurrency is per deployment


@bulk
def test_priority_then_arrival_decides_who_starts_when_slots_free_one_by_one(baseten_emulator: Emulator, client):
    running = [submit(client, "model-other01") for _ in range(2)]
    low = [submit(client, "model-other01", priority=2) for _ in range(2)]
    high = [submit(client, "model-other01", priority=0) for _ in range(2)]

    assert statuses(client, running, "model-other01") == ["IN_PROGRESS"] * 2
    baseten_emulator.advance(1)
    assert statuses(client, high + low, "model-other01") == ["IN_PROGRESS", "IN_PROGRESS", "QUEUED", "QUEUED"]
    baseten_emulator.advance(1)
    assert statuses(client, low, "model-other01") == ["IN_PROGRESS"] * 2


@pytest.mark.baseten_emulator(manual_clock=True, world=_bulk_world, limits=_limits(org_queue_limit=5))
def test_the_org_cap_counts_queued_and_in_progress_across_deployments(baseten_emulator: Emulator, client):
    ids = [submit(client) for _ in range(3)] + [submit(client, "model-other01") for _ in range(2)]

    refused = client.post("model-other01", "/production/async_predict", json={"model_input": {}})

    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert refused.json() == {
        "error": "Your organization has 5 queued or in-progress async requests, the limit is 5.",
        "error_code": "rate_limited",
    }
    assert baseten_emulator.state.queue.pending == 5
    baseten_emulator.advance(1)  # every one finishes: the cap frees
    assert set(statuses(client, ids[:3])) == {"SUCCEEDED"}
    submit(client, "model-other01")
    assert baseten_emulator.state.queue.pending == 1


@pytest.mark.baseten_emulator(
    manual_clock=True, world=_bulk_world, limits=_limits(org_queue_limit=3, retry_after="body")
)
def test_the_org_cap_frees_on_cancel_and_puts_its_hint_where_the_limits_say(client):
    one, two, waiting = (submit(client, "model-other01") for _ in range(3))

    refused = client.post(HOST, "/production/async_predict", json={"model_input": {}})
    assert (refused.status_code, refused.json()["retry_after"], "Retry-After" in refused.headers) == (429, 1, False)
    assert client.delete("model-other01", f"/async_request/{waiting}").json()["canceled"] is True
    submit(client)
    assert statuses(client, [one, two, waiting], "model-other01") == ["IN_PROGRESS", "IN_PROGRESS", "CANCELED"]


def _recount(state: EmulatorState) -> dict[str, tuple[int, int]]:
    """Queue counts recomputed from every record (what the kept counters must equal)."""
    counts: Counter[tuple[str, str]] = Counter(
        (record.deployment.spec.id, record.status.value) for record in state.queue.records.values()
    )
    return {dep: (counts[(dep, "QUEUED")], counts[(dep, "IN_PROGRESS")]) for dep in ("bulkprod01", "otherprod01")}


def _kept(state: EmulatorState) -> dict[str, tuple[int, int]]:
    kept = {}
    for model in ("bulk01", "other01"):
        body = state.queue.queue_status(state.deployment(model))
        kept[body["deployment_id"]] = (body["num_queued_requests"], body["num_in_progress_requests"])
    return kept


@bulk
def test_queue_counts_stay_exact_through_submits_cancels_expiry_and_completion(baseten_emulator: Emulator):
    rng = random.Random(15)
    requests = {
        "short": AsyncPredictRequest.model_validate({"model_input": {}, "max_time_in_queue_seconds": 10}),
        "long": AsyncPredictRequest.model_validate({"model_input": {}, "priority": 2}),
    }

    def step(state: EmulatorState) -> None:
        queue = state.queue
        for _ in range(rng.randint(0, 40)):
            deployment = state.deployment(rng.choice(("bulk01", "other01")))
            queue.submit(deployment, requests[rng.choice(("short", "long"))])
        for record in rng.sample(list(queue.records.values()), k=min(5, len(queue.records))):
            queue.cancel(record)  # a no-op answer unless QUEUED

    for _ in range(40):
        baseten_emulator.call(step)
        baseten_emulator.advance(rng.choice((0, 0.5, 1, 3)))
        kept, recount = baseten_emulator.call(lambda s: (_kept(s), _recount(s)))
        assert kept == recount
        pending = baseten_emulator.call(lambda s: s.queue.pending)
        assert pending == sum(q + r for q, r in recount.values())

    seen = Counter(record.status.value for record in baseten_emulator.requests.values())
    assert {"QUEUED", "IN_PROGRESS", "SUCCEEDED", "CANCELED", "EXPIRED"} <= set(seen)


def _best_of(repeat: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def _fill(emulator: Emulator, n: int) -> list[str]:
    request = AsyncPredictRequest.model_validate({"model_input": {}, "max_time_in_queue_seconds": 259_200})

    def submit_all(state: EmulatorState) -> list[str]:
        deployment = state.deployment("bulk01")
        return [state.queue.submit(deployment, request).request_id for _ in range(n)]

    return emulator.call(submit_all)


def _costs(emulator: Emulator, ids: list[str]) -> tuple[float, float]:
    """Seconds for 200 status + queue-status reads, and for one clock tick that finishes 50 and starts 50."""
    probe = ids[len(ids) // 2]

    def reads(state: EmulatorState) -> None:
        deployment = state.deployment("bulk01")
        for _ in range(200):
            state.queue.get(probe).as_json()  # type: ignore[union-attr]
            state.queue.queue_status(deployment)

    read = _best_of(5, lambda: emulator.call(reads))
    tick = _best_of(3, lambda: emulator.advance(1))
    return read, tick


@bulk
def test_ten_thousand_queued_cost_no_scan_per_status_read_or_clock_tick(baseten_emulator: Emulator, client):
    small = _fill(baseten_emulator, 200)
    small_read, small_tick = _costs(baseten_emulator, small)
    baseten_emulator.reset(_bulk_world())
    many = _fill(baseten_emulator, 10_000)

    assert statuses(client, [many[-1]]) == ["QUEUED"]
    assert queue_status(client) == (9_950, 50)
    big_read, big_tick = _costs(baseten_emulator, many)
    # 50x the requests: a scan over them per read or per tick would cost ~50x; kept counters and heaps cost ~1x.
    assert big_read < 10 * small_read, (big_read, small_read)
    assert big_tick < 10 * small_tick, (big_tick, small_tick)
    assert queue_status(client) == (9_800, 50)
    baseten_emulator.advance(200)

    assert queue_status(client) == (0, 0)
    assert Counter(r.status.value for r in baseten_emulator.requests.values()) == {"SUCCEEDED": 10_000}
    assert baseten_emulator.state.queue.pending == 0
