"""Async at scale: one ``BasetenAsyncBatchTrigger`` against N single ``BasetenAsyncRequestTrigger`` in one process.

Scenario (the same for both sides, one run): N async requests (10,000) are queued on an emulator deployment that
runs 50 at a time (``async_concurrency=50``), each taking ``--work`` emulated seconds, so the queue drains over
``N / 50 * work`` seconds. Then, in a fresh child process (a triggerer's event loop), either one batch trigger
reads the requests from a manifest and waits on all of them, or N single triggers wait on one request each; the
trigger loops run directly under asyncio until their first event, as ``benchmarks/trigger_fanout.py`` does. A third
side queues the requests with ``webhook_endpoint`` set to a receiver in its own process (``python -m
airflow_provider_baseten.webhooks serve``, storing each verified delivery on local disk) and gives the batch trigger
``webhook_outputs``: it ends delivered requests from the stored files and reads only the undelivered. The receiver's
CPU is reported in its own column: it is not the triggerer's, and a webhook user runs one whatever waits.

Both sides share one status budget per connection (``status_rate_limit``, 15 req/s, under Baseten's 20 req/s).
The single triggers poll every ``max(5 s, N / 12 req/s)`` (the fan-out rule: any faster and N triggers exceed the
budget); the batch trigger polls every ``--poll-interval`` (30 s): its rounds read the running requests, the
oldest queued ones and the deployment's ``async_queue_status``, never all N.

Time is compressed by ``--time-scale`` k (emulated seconds per wall second) for the emulator, its limits (20 req
per emulated second), the budget and the triggers' clocks and sleeps; figures are in emulated time. Measured per
side: CPU seconds and peak RSS growth of the child, status and queue-status reads per emulated second, 429s, and the
detection delay: from the last request finishing (its ``status_at``) to the event that ends the wait (the batch
trigger's one event; for the single side, the last trigger's event, i.e. when every task could end), and that
event's time over the budget's own bound ``max(last finish, first finish + N / budget)`` (every request needs one
read after it ends).

The trigger sides do not submit: the parent queues the requests directly into the emulator, so both wait on the
same queue. The submit phase is measured apart, first: a child runs ``BasetenAsyncBatchOperator.execute`` itself
(its waves, manifest writes, shared token bucket and hook; ``max_in_flight`` = M, so one submit phase, up to the
defer) on M inputs (``--submits``, 2,500: about 50 s at the default ``submit_rate`` of 50/s) against a second
emulator in real time, which holds Baseten's 200 submits/s on the wall clock. From the emulator's journal and queue:
submits answered per second, the median over the whole 1 s windows from the first submit and the peak over any 1 s
window ``[t, t + 1)``, next to the cap (the bucket's burst, ``rate / 5``, may land in one window); 429s; accepted
requests per input (must be exactly 1) and inputs accepted.

    python -m benchmarks.async_batch                # N = 10,000
    python -m benchmarks.async_batch --quick        # N = 300, 10 at a time; M = 200 submits
    python -m benchmarks.async_batch --only-submit  # the submit phase alone (M = 2,500)
"""

from __future__ import annotations

import asyncio
import bisect
import json
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import (
    BUDGET,
    SERVER_LIMIT,
    ChildRunner,
    Goal,
    Meter,
    Table,
    base_parser,
    goals_table,
    median,
    parse_args,
    poll_interval_for,
    publish_results,
    ratio,
    run_as_child,
    server_limits,
    wait_for_go,
)

MODULE = "benchmarks.async_batch"
MODEL = "asyncbench01"
SIDES = ("batch", "webhook", "single")
SUBMIT_LIMIT = 200.0  # Baseten's async submits per second (the emulator's default limit)
LABELS = {
    "batch": "1 BasetenAsyncBatchTrigger",
    "webhook": "1 BasetenAsyncBatchTrigger, webhook_outputs",
    "single": "N BasetenAsyncRequestTrigger",
}
BATCH_SIDES = ("batch", "webhook")


@dataclass(frozen=True)
class Scenario:
    n: int
    concurrency: int
    work: float
    """Emulated seconds each request runs."""
    batch_interval: float
    time_scale: float

    @property
    def single_interval(self) -> float:
        return poll_interval_for(self.n)

    @property
    def drain(self) -> float:
        """Emulated seconds the deployment needs to run every request."""
        return self.n / self.concurrency * self.work

    @property
    def cap(self) -> float:
        """Emulated seconds after which a side is abandoned (a bug, not a result)."""
        return self.drain + 6 * max(self.single_interval, self.batch_interval) + 120


def bench_world(scenario: Scenario) -> Any:
    from airflow_provider_baseten.emulator import DEMO_WEBHOOK_SECRET, DeploymentSpec, ModelSpec, World
    from airflow_provider_baseten.emulator.behaviours import Echo, Sleep

    deployment = DeploymentSpec(f"{MODEL}prod", min_replicas=1, async_concurrency=scenario.concurrency)
    return World(webhook_secrets=[DEMO_WEBHOOK_SECRET]).add(
        ModelSpec(MODEL, Sleep(scenario.work, Echo()), deployments=[deployment])
    )


def start_emulator(scenario: Scenario) -> Any:
    from airflow_provider_baseten.emulator import Emulator

    k = scenario.time_scale
    return Emulator(world=bench_world(scenario), time_scale=k, limits=server_limits(k)).start()


# --- the measured child ----------------------------------------------------------------------------------------------


def child_wait(params: dict[str, Any]) -> dict[str, Any]:
    # Everything the first poll imports, so imports are not measured (the async connection lookup imports the
    # task SDK's supervisor: about 0.1 s that both sides paid inside the measured phase).
    import airflow.sdk.execution_time.supervisor  # noqa: F401
    import httpx_aiohttp  # noqa: F401
    from airflow.providers.common.compat.connection import get_async_connection  # noqa: F401

    import airflow_provider_baseten.hooks.async_requests
    import airflow_provider_baseten.hooks.baseten
    import airflow_provider_baseten.operators._async_manifest  # noqa: F401
    from airflow_provider_baseten.triggers.baseten import (  # noqa: F401
        BasetenAsyncBatchTrigger,
        BasetenAsyncRequestTrigger,
    )

    go = wait_for_go()
    return asyncio.run(_wait(params, go))


def _triggers(params: dict[str, Any], go: dict[str, Any]) -> list[Any]:
    from airflow_provider_baseten.triggers.baseten import BasetenAsyncBatchTrigger, BasetenAsyncRequestTrigger

    k, w0, e0 = go["time_scale"], go["w0"], go["e0"]

    def clock() -> float:  # the triggers live in emulated time
        return e0 + (time.time() - w0) * k

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds / k)

    if params["side"] in BATCH_SIDES:
        trigger = BasetenAsyncBatchTrigger(
            manifest_uri=go["manifest_uri"],
            total=len(go["request_ids"]),
            model_id=MODEL,
            poll_interval=params["interval"],
            webhook_outputs=go["webhook_outputs"],
            clock=clock,
            sleep=sleep,
        )
        return [trigger]
    return [
        BasetenAsyncRequestTrigger(
            request_id=rid, model_id=MODEL, poll_interval=params["interval"], clock=clock, sleep=sleep
        )
        for rid in go["request_ids"]
    ]


async def _wait(params: dict[str, Any], go: dict[str, Any]) -> dict[str, Any]:
    events: list[tuple[float, Any]] = []

    async def watch(trigger: Any) -> None:
        stream = trigger.run()
        try:
            event = await anext(stream)
        finally:
            await stream.aclose()
        await trigger.cleanup()
        events.append((time.time(), event.payload))

    with Meter() as meter:
        tasks = [asyncio.create_task(watch(trigger)) for trigger in _triggers(params, go)]
        _, pending = await asyncio.wait(tasks, timeout=params["cap_wall"])
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    from airflow_provider_baseten.hooks.baseten import close_shared_async_clients

    await close_shared_async_clients()
    statuses: dict[str, int] = {}
    for _, payload in events:
        status = payload.get("status", "?") if isinstance(payload, dict) else str(payload)
        statuses[status] = statuses.get(status, 0) + 1
    counts = events[0][1].get("counts") if params["side"] in BATCH_SIDES and events else None
    last = max((wall for wall, _ in events), default=None)
    return {**meter.as_dict(), "events": statuses, "last_event_wall": last, "unfired": len(pending), "counts": counts}


def child_submit(params: dict[str, Any]) -> dict[str, Any]:
    """The operator's own submit path: ``execute`` on M inputs up to its defer (one wave loop, paced by its bucket)."""
    from airflow.providers.common.compat.sdk import TaskDeferred

    # What the first submit imports, so imports are not measured.
    import airflow_provider_baseten.hooks.async_requests
    import airflow_provider_baseten.hooks.baseten
    import airflow_provider_baseten.hooks.ratelimit  # noqa: F401
    from airflow_provider_baseten.operators.async_batch import BasetenAsyncBatchOperator

    operator = BasetenAsyncBatchOperator(
        task_id="bench_submit",
        model_id=MODEL,
        inputs=[{"i": i} for i in range(params["m"])],
        manifest_location=params["manifest"],
        max_in_flight=params["m"],  # one submit phase for every input, then the defer
        **({"submit_rate": params["rate"]} if params["rate"] else {}),
    )
    wait_for_go()
    deferred = False
    with Meter() as meter:
        try:
            operator.execute({})
        except TaskDeferred:
            deferred = True
    return {**meter.as_dict(), "deferred": deferred, "submit_rate": operator.submit_rate}


FUNCTIONS = {"wait": child_wait, "submit": child_submit}


# --- one side, seen from the parent ----------------------------------------------------------------------------------


def _write_manifest(folder: Path, request_ids: list[str]) -> str:
    """A manifest as the operator leaves it after its submits: an intent and an ``accepted`` per input."""
    from airflow_provider_baseten.hooks.addressing import Target
    from airflow_provider_baseten.operators._async_manifest import Manifest

    manifest = Manifest(str(folder))
    now = time.time()
    records: list[dict[str, Any]] = []
    for index, rid in enumerate(request_ids):
        records.append({"event": "intent", "index": index, "attempt": 1, "input_fp": "", "input_id": index, "at": now})
        records.append({"event": "accepted", "index": index, "attempt": 1, "request_id": rid, "at": now})
    manifest.write(records)
    manifest.write_index(target=Target.of(model_id=MODEL).to_kwargs(), total=len(request_ids))
    return manifest.uri


class Receiver:
    """``python -m airflow_provider_baseten.webhooks serve`` in its own process (as a receiver runs beside Airflow,
    not in the triggerer), storing each output under ``{store}/run``; :meth:`cpu_s` is its CPU so far."""

    PREFIX = "run"

    def __init__(self, store: Path) -> None:
        import os
        import subprocess
        import sys

        import psutil

        from airflow_provider_baseten.emulator import DEMO_WEBHOOK_SECRET

        self.outputs_uri = f"{store.as_uri()}/{self.PREFIX}"
        command = [sys.executable, "-m", "airflow_provider_baseten.webhooks", "serve", "--port", "0"]
        self._proc = subprocess.Popen(
            [*command, "--store", str(store), "--prefix", self.PREFIX],
            env={**os.environ, "BASETEN_WEBHOOK_SECRETS": DEMO_WEBHOOK_SECRET},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()  # "Receiving Baseten webhooks on http://127.0.0.1:PORT/ -> ..."
        if " on " not in line:
            self.close()
            raise RuntimeError(f"the webhook receiver did not start: {line!r}")
        self.url = line.split(" on ", 1)[1].split()[0]
        self._ps = psutil.Process(self._proc.pid)

    def cpu_s(self) -> float:
        times = self._ps.cpu_times()
        return float(times.user + times.system)

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)


def run_side(runner: ChildRunner, emu: Any, scenario: Scenario, side: str) -> dict[str, Any]:
    from airflow_provider_baseten.operators import _async_manifest  # noqa: F401 - imported before the clock starts

    scratch = Path(tempfile.mkdtemp(prefix="baseten-bench-async-batch-"))
    receiver = Receiver(scratch / "outputs") if side == "webhook" else None
    try:
        return _run_side(runner, emu, scenario, side, scratch, receiver)
    finally:
        if receiver is not None:
            receiver.close()


def _run_side(
    runner: ChildRunner, emu: Any, scenario: Scenario, side: str, scratch: Path, receiver: Receiver | None
) -> dict[str, Any]:
    from airflow_provider_baseten.hooks.models import AsyncPredictRequest

    k = scenario.time_scale
    emu.reset()
    before: dict[str, Any] = {}

    def on_ready() -> dict[str, Any]:
        request = AsyncPredictRequest(
            model_input={"x": 1},
            max_time_in_queue_seconds=259_200,
            webhook_endpoint=receiver.url if receiver else None,
        )

        def submit(state: Any) -> list[str]:
            deployment = state.deployment(MODEL)
            return [state.queue.submit(deployment, request).request_id for _ in range(scenario.n)]

        ids = emu.call(submit)
        e0, w0 = emu.clock.now(), time.time()
        uri = _write_manifest(scratch / "manifest", ids) if side in BATCH_SIDES else ""
        before.update(emu.counters(), receiver_cpu_s=receiver.cpu_s() if receiver else None)
        outputs = receiver.outputs_uri if receiver else None
        go = {"request_ids": ids, "manifest_uri": uri, "webhook_outputs": outputs, "e0": e0, "w0": w0, "time_scale": k}
        before["go"] = go
        return go

    conn = {"conn_type": "baseten", "host": emu.url, "password": emu.api_key, "extra": {"status_rate_limit": BUDGET}}
    interval = scenario.batch_interval if side in BATCH_SIDES else scenario.single_interval
    params = {"side": side, "interval": interval, "cap_wall": scenario.cap / k}
    result = runner.run("wait", params, env={"AIRFLOW_CONN_BASETEN_DEFAULT": json.dumps(conn)}, on_ready=on_ready)
    if receiver is not None:
        emu.settle_async()  # the figures below then count every delivery (webhooks go out before the records)
    after = emu.counters()
    receiver_cpu = receiver.cpu_s() - before["receiver_cpu_s"] if receiver else None
    go = before["go"]
    records = [emu.requests[rid] for rid in go["request_ids"] if rid in emu.requests]
    finished = dict(Counter(r.status.value for r in records))
    last_finish = max((r.status_at for r in records), default=None)
    first_finish = min((r.status_at for r in records), default=None)
    delay = over_bound = None
    if result["last_event_wall"] is not None and last_finish is not None and first_finish is not None:
        ended = go["e0"] + (result["last_event_wall"] - go["w0"]) * k
        delay = ended - last_finish
        # Every request needs one read after it ends: the budget cannot end the wait sooner than this.
        over_bound = ended - max(last_finish, first_finish + scenario.n / BUDGET)
    emulated_s = result["wall_s"] * k

    def diff(group: str, key: str) -> int:
        return int(after[group].get(key, 0)) - int(before[group].get(key, 0))

    return {
        "side": side,
        "n": scenario.n,
        "interval": interval,
        "time_scale": k,
        "wall_s": result["wall_s"],
        "emulated_s": emulated_s,
        "cpu_s": result["cpu_s"],
        "receiver_cpu_s": receiver_cpu,
        "webhooks_delivered": sum(1 for d in emu.webhooks if d.delivered) if receiver else None,
        "peak_rss_mib": result["peak_rss_mib"],
        "rss_growth_mib": result["rss_growth_mib"],
        "status_requests": diff("by_route", "async_status"),
        "queue_requests": diff("by_route", "async_queue_status"),
        "status_per_s": diff("by_route", "async_status") / emulated_s,
        "queue_per_s": diff("by_route", "async_queue_status") / emulated_s,
        "http_429": diff("by_status", "429"),
        "events": result["events"],
        "unfired": result["unfired"],
        "counts": result["counts"],
        "finished": finished,
        "detection_s": delay,
        "over_bound_s": over_bound,
    }


# --- the submit phase, seen from the parent -------------------------------------------------------------------------


def second_rates(times: Sequence[float]) -> tuple[float | None, int]:
    """(median count over the whole 1 s windows from the first time, peak count in any 1 s window ``[t, t + 1)``)."""
    ordered = sorted(times)
    if not ordered:
        return None, 0
    whole = int(ordered[-1] - ordered[0])  # the last, partial window would read low
    counts = [0] * whole
    for t in ordered:
        slot = int(t - ordered[0])
        if slot < whole:
            counts[slot] += 1
    # A window holding the most requests can be taken to start on one of them.
    peak = max(bisect.bisect_left(ordered, t + 1.0) - i for i, t in enumerate(ordered))
    return median(counts), peak


def run_submit(runner: ChildRunner, m: int, rate: float | None) -> dict[str, Any]:
    """M submits by ``BasetenAsyncBatchOperator.execute`` (in a child) against a real-time emulator (Baseten's
    limits on the wall clock: 200 submits/s); the emulator's journal and queue give the rates, 429s and duplicates."""
    from airflow_provider_baseten.emulator import Emulator

    scenario = Scenario(n=m, concurrency=50, work=3600.0, batch_interval=30.0, time_scale=1.0)
    emu = Emulator(world=bench_world(scenario)).start()
    scratch = Path(tempfile.mkdtemp(prefix="baseten-bench-async-submit-"))
    try:
        conn = {"conn_type": "baseten", "host": emu.url, "password": emu.api_key}
        params = {"m": m, "rate": rate, "manifest": str(scratch / "manifest")}
        result = runner.run(
            "submit", params, env={"AIRFLOW_CONN_BASETEN_DEFAULT": json.dumps(conn)}, on_ready=lambda: {}
        )
        submits = [e for e in emu.journal.entries() if e.route == "async_predict"]
        per_input = Counter(record.request.model_input["i"] for record in emu.requests.values())
    finally:
        emu.stop()
    held, peak = second_rates([e.time for e in submits])
    return {
        "m": m,
        "submit_rate": result["submit_rate"],
        "deferred": result["deferred"],
        "wall_s": result["wall_s"],
        "cpu_s": result["cpu_s"],
        "sent": len(submits),
        "held_per_s": held,
        "peak_per_s": peak,
        "http_429": sum(1 for e in submits if e.status == 429),
        "accepted_inputs": len(per_input),
        "accepted_per_input": sorted(set(per_input.values())),
    }


def _submit_line(r: dict[str, Any]) -> str:
    return (
        f"  operator submits M={r['m']:<6} cap {r['submit_rate']:g}/s wall {r['wall_s']:.1f}s cpu {r['cpu_s']:.2f}s "
        f"held {r['held_per_s']}/s peak {r['peak_per_s']}/s 429 {r['http_429']} inputs accepted "
        f"{r['accepted_inputs']} (per input {r['accepted_per_input']}) deferred {r['deferred']}"
    )


def _progress_line(r: dict[str, Any]) -> str:
    return (
        f"  {LABELS[r['side']]:<30} N={r['n']:<6} wall {r['wall_s']:.1f}s cpu {r['cpu_s']:.2f}s "
        f"rss+{r['rss_growth_mib']:.1f}MiB status {r['status_requests']} ({r['status_per_s']:.1f}/s) "
        f"queue {r['queue_requests']} 429 {r['http_429']} events {r['events']} detection "
        f"{r['detection_s'] if r['detection_s'] is None else round(r['detection_s'], 1)}s"
    )


# --- report ----------------------------------------------------------------------------------------------------------


def submit_report(runs: list[dict[str, Any]]) -> tuple[Table, list[Goal]]:
    def med(key: str) -> float | None:
        return median(r[key] for r in runs)

    cap = runs[0]["submit_rate"]
    table = Table(
        f"Submitting {runs[0]['m']:,} inputs with BasetenAsyncBatchOperator.execute (medians; wall clock)",
        [
            "submitter",
            "cap req/s",
            "held req/s (median 1 s window)",
            "peak req/s (any 1 s window)",
            "429s",
            "inputs accepted",
            "accepted per input",
            "wall s",
            "CPU s",
        ],
    )
    table.add(
        "BasetenAsyncBatchOperator",
        cap,
        med("held_per_s"),
        med("peak_per_s"),
        int(med("http_429") or 0),
        f"{min(r['accepted_inputs'] for r in runs)}/{runs[0]['m']}",
        ",".join(str(n) for n in sorted({n for r in runs for n in r["accepted_per_input"]})),
        med("wall_s"),
        med("cpu_s"),
    )
    from airflow_provider_baseten.hooks.ratelimit import status_burst

    burst = status_burst(cap)  # the operator's bucket (shared_sync_bucket) holds this many tokens at rest
    table.notes.append(
        f"The operator's default submit_rate ({cap:g}/s) and submit_concurrency; the emulator holds Baseten's "
        f"{SUBMIT_LIMIT:g} submits/s on the wall clock. The bucket's burst ({burst:g}) may add to one window."
    )
    peak = max(r["peak_per_s"] for r in runs)
    n429 = sum(r["http_429"] for r in runs)
    once = all(r["accepted_per_input"] == [1] and r["accepted_inputs"] == r["m"] for r in runs)
    goals = [
        Goal(
            "submit peak over any 1 s window", f"<= cap + burst ({cap + burst:g} req/s)", str(peak), peak <= cap + burst
        ),
        Goal("submit peak under Baseten's limit", f"<= {SUBMIT_LIMIT:g} req/s", str(peak), peak <= SUBMIT_LIMIT),
        Goal("429s on submits", "0", str(n429), n429 == 0),
        Goal("accepted requests per input", "exactly 1, every input", "1" if once else "no", once),
    ]
    return table, goals


def report(
    scenario: Scenario, results: dict[str, list[dict[str, Any]]], submit_table: Table, submit_goals: list[Goal]
) -> tuple[list[Table], list[Goal]]:
    def med(side: str, key: str) -> float | None:
        return median(r[key] for r in results[side])

    table = Table(
        f"Waiting on {scenario.n:,} async requests, {scenario.concurrency} at a time (medians; emulated time)",
        [
            "waiter",
            "poll s",
            "CPU s",
            "receiver CPU s",
            "peak RSS growth MiB",
            "status req/s",
            "queue req/s",
            "429s",
            "events",
            "detection s",
            "over budget bound s",
            "over bound / poll",
        ],
    )
    for side in SIDES:
        detection = med(side, "detection_s")
        over = med(side, "over_bound_s")
        interval = results[side][0]["interval"]
        table.add(
            LABELS[side],
            interval,
            med(side, "cpu_s"),
            med(side, "receiver_cpu_s"),
            med(side, "rss_growth_mib"),
            med(side, "status_per_s"),
            med(side, "queue_per_s"),
            int(med(side, "http_429") or 0),
            json.dumps(results[side][-1]["events"]),
            detection,
            over,
            None if over is None else over / interval,
        )
    table.notes.append(
        f"k = {scenario.time_scale:g}; each request runs {scenario.work:g} s; the queue drains in "
        f"{scenario.drain:,.0f} s. Status reads share one budget of {BUDGET:g} req/s per connection."
    )
    table.notes.append(
        "webhook_outputs: the emulator delivers each output to a receiver in its own process, which stores it; the "
        "trigger lists the store each poll and reads the status only of requests without a delivery. The receiver's "
        "work is the same whatever waits (Baseten keeps no outputs: a webhook user runs one anyway), so its CPU is "
        "its own column, not the triggerer's."
    )
    goals: list[Goal] = []
    for side, how in (("batch", "status reads"), ("webhook", "webhook_outputs")):
        cpu = ratio(med(side, "cpu_s"), med("single", "cpu_s")) or 0.0
        mem = ratio(med(side, "rss_growth_mib"), med("single", "rss_growth_mib")) or 0.0
        n429 = sum(r["http_429"] for r in results[side])
        peak = max(r["status_per_s"] + r["queue_per_s"] for r in results[side])
        over = med(side, "over_bound_s")
        detected = over is not None and over <= 2 * scenario.batch_interval
        done = all(r["events"] == {"done": 1} and r["counts"] for r in results[side])
        n = f"N={scenario.n:,}, {how}"
        goals += [
            Goal(f"CPU at {n}", "<= 0.1x N single triggers", f"{cpu:.3f}x", cpu <= 0.1),
            Goal(f"memory (RSS growth) at {n}", "<= 0.1x N single triggers", f"{mem:.3f}x", mem <= 0.1),
            Goal(
                f"status + queue reads, {how}", f"<= {SERVER_LIMIT:g} req/s", f"{peak:.1f} req/s", peak <= SERVER_LIMIT
            ),
            Goal(f"429s received by the batch trigger, {how}", "0", str(n429), n429 == 0),
            Goal(
                f"batch event after the budget's bound, {how}",
                f"<= 2 poll intervals ({2 * scenario.batch_interval:g} s)",
                "none" if over is None else f"{over:.0f} s",
                detected,
            ),
            Goal(f"the batch trigger ended with one done event, {how}", "yes", "yes" if done else "no", done),
        ]
    delivered = all(r["webhooks_delivered"] == scenario.n for r in results["webhook"])
    goals.append(
        Goal("every output delivered and stored, webhook_outputs", "yes", "yes" if delivered else "no", delivered)
    )
    goals += submit_goals
    return [table, submit_table, goals_table(goals, "Async batch goals")], goals


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=None, help="async requests (default 10,000; --quick 300)")
    parser.add_argument("--concurrency", type=int, default=None, help="run at a time (default 50; --quick 10)")
    parser.add_argument("--work", type=float, default=2.0, help="emulated seconds per request (default 2)")
    parser.add_argument("--poll-interval", type=float, default=30.0, help="batch trigger poll interval (30 s)")
    parser.add_argument("--time-scale", type=float, default=None, help="emulated s per wall s (default 8; quick 8)")
    parser.add_argument("--submits", type=int, default=None, help="submit-phase inputs (default 2,500; quick 200)")
    parser.add_argument("--submit-rate", type=float, default=None, help="operator submit_rate (default: its own)")
    parser.add_argument("--only-submit", action="store_true", help="run only the submit phase")
    args = parse_args(parser, argv)
    if run_as_child(args, FUNCTIONS):
        return None
    scenario = Scenario(
        n=args.n or (300 if args.quick else 10_000),
        concurrency=args.concurrency or (10 if args.quick else 50),
        work=args.work,
        batch_interval=args.poll_interval,
        time_scale=args.time_scale or 8.0,
    )
    m = args.submits or (200 if args.quick else 2_500)
    runner = ChildRunner(MODULE, FUNCTIONS, inline=args.inline, timeout=max(900.0, 3 * scenario.cap))
    submits: list[dict[str, Any]] = []
    results: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for _ in range(args.repeat or 1):
        submits.append(run_submit(runner, m, args.submit_rate))
        print(_submit_line(submits[-1]), flush=True)
    if not args.only_submit:
        emu = start_emulator(scenario)
        try:
            for _ in range(args.repeat or 1):
                for side in SIDES:
                    results[side].append(run_side(runner, emu, scenario, side))
                    print(_progress_line(results[side][-1]), flush=True)
        finally:
            emu.stop()
    submit_table, submit_goals = submit_report(submits)
    if args.only_submit:
        tables, goals = [submit_table, goals_table(submit_goals, "Async batch submit goals")], submit_goals
    else:
        tables, goals = report(scenario, results, submit_table, submit_goals)
    publish_results(
        "async_batch_submit" if args.only_submit else "async_batch",
        title="Async batch: the operator's submit phase"
        if args.only_submit
        else "Async batch: one trigger vs one trigger per request",
        module=MODULE,
        argv=argv,
        tables=tables,
        raw={"scenario": scenario.__dict__, "submit_m": m, "submits": submits, "results": results},
        method=__doc__.split("\n\n", 1)[1].split("\n\n    python")[0],
        results_dir=args.results_dir,
    )
    return {"tables": tables, "goals": goals, "results": results, "submits": submits, "scenario": scenario}


if __name__ == "__main__":
    main()
