"""Several triggerers on one key: the aggregate async-status rate and 429 count, three processes against one.

Scenario (per process count P, 1 and 3): N async requests wait ``QUEUED`` on the emulator (a model that never
finishes its cold start); the requests are split evenly over P fresh child processes, each running its share of
``BasetenAsyncRequestTrigger`` (``poll_interval`` 1 s, the connection's default poll budget) in one event loop, as a
triggerer does. The emulator enforces Baseten's 20 req/s status limit for the whole key, on the wall clock. After a
settling time, the parent counts every status request the emulator answered (200 and 429) over a measurement
window: the mean rate, the peak rate over any 5 s window (windows start every second), and the 429s.

Nothing is compressed: the rates are real requests per wall second. Each poll budget is per process, so what this
measures is whether P independent budgets converge under one shared limit without talking to each other.

    python -m benchmarks.triggerer_convergence              # N = 300, settle 40 s, measure 30 s, P = 1 and 3
    python -m benchmarks.triggerer_convergence --quick      # N = 60, settle 20 s, measure 10 s

The settling time covers the budgets' convergence (the first 429s and the climb back below them: about 30 s with
three processes starting together); the measurement then falls where they stay (no probe while a 429 is
remembered, see ``hooks/ratelimit.py``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks._common import (
    ChildRunner,
    Goal,
    Table,
    base_parser,
    goals_table,
    median,
    parse_args,
    publish_results,
    run_as_child,
    wait_for_go,
)

MODULE = "benchmarks.triggerer_convergence"
MODEL = "benchconv01"
LIMIT = 20.0  # the emulator's (Baseten's documented) async status limit, req/s for the key
WINDOW_S = 5.0


def window_rates(times: Sequence[float], start: float, end: float, window: float = WINDOW_S) -> list[float]:
    """Requests per second in each ``window``-second window that starts on a whole second from ``start`` and ends
    by ``end`` (the system test of three triggerers reads its journal with this too)."""
    ordered = sorted(times)
    rates: list[float] = []
    begin = start
    while begin + window <= end:
        rates.append(sum(1 for t in ordered if begin <= t < begin + window) / window)
        begin += 1.0
    return rates


# --- the virtual-time simulation ----------------------------------------------------------------------------------
# The real budget class (``AsyncTokenBucket``) on an injected clock, driven by a tiny scheduler: each trigger is a
# coroutine whose only await is the clock's sleep, so hours of traffic from hundreds of triggers run in seconds and
# the same seed replays the same run. What it models, as the system test runs it: P processes (one budget each,
# the connection's default rate and burst), T triggers each, deferring one by one over ``arrive_s``; a poll every
# ``poll_interval`` (+/-25 % jitter, as the trigger does); a round trip of 5-15 ms; the emulator's status limit
# (``RouteBucket``: 20 req/s, burst 20) answering 429 with ``Retry-After`` rounded up to whole seconds; the hook's
# retry of a 429 (every attempt takes a token, as in ``hotpath.request``) after ``RetryPolicy.wait_seconds``.


class _Sleep:
    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __await__(self) -> Any:
        yield self.seconds


@dataclass
class SimResult:
    """One simulated run: when each status request reached the server, and which were answered 429."""

    processes: int
    seed: int
    horizon: float
    sent: list[float] = field(default_factory=list)
    #: Which process sent each of ``sent``.
    senders: list[int] = field(default_factory=list)
    throttled: list[float] = field(default_factory=list)
    done_at: float | None = None

    def after(self, start: float) -> tuple[list[float], list[float]]:
        return [t for t in self.sent if t >= start], [t for t in self.throttled if t >= start]


def peak_window(times: Sequence[float], window: float = WINDOW_S) -> tuple[float, int]:
    """The busiest half-open ``window`` (sliding: any start, like a server's limit): its start and request count."""
    ordered = sorted(times)
    best, start, begin = 0, 0.0, 0
    for end, t in enumerate(ordered):
        while ordered[begin] <= t - window:
            begin += 1
        if end - begin + 1 > best:
            best, start = end - begin + 1, ordered[begin]
    return start, best


def peak_rate(times: Sequence[float], window: float = WINDOW_S) -> float:
    """Requests per second in the busiest half-open ``window``."""
    return peak_window(times, window)[1] / window


def peak_senders(run: SimResult, start: float, window: float = WINDOW_S) -> list[int]:
    """Requests each process sent in the busiest ``window`` after ``start``: whether a peak is one process's surge
    or the sum of steady rates (what the issue-11 diagnosis read)."""
    at, _ = peak_window([t for t in run.sent if t >= start], window)
    counts = [0] * run.processes
    for t, process in zip(run.sent, run.senders, strict=True):
        if at <= t < at + window:
            counts[process] += 1
    return counts


def simulate(
    *,
    processes: int,
    triggers: int | Sequence[int],
    seed: int,
    horizon: float = 1800.0,
    budget_rate: float | None = None,
    poll_interval: float = 1.0,
    arrive_s: float = 30.0,
    limit: float = LIMIT,
    burst: float = LIMIT,
    polls: int | None = None,
) -> SimResult:
    """Run ``processes`` budgets of ``triggers`` triggers each (or ``triggers[p]`` for process ``p``: an uneven
    spread) against one limit for ``horizon`` virtual seconds.

    ``polls``: stop once that many status reads were answered 200 in all (``done_at``: when), for a throughput
    figure; ``budget_rate``: the per-process budget (default: the connection's ``status_rate_limit``).
    """
    import heapq
    import math
    import random

    from airflow_provider_baseten.emulator.limits import RouteBucket
    from airflow_provider_baseten.hooks.connection import DEFAULT_STATUS_RATE_LIMIT
    from airflow_provider_baseten.hooks.ratelimit import AsyncTokenBucket, status_burst
    from airflow_provider_baseten.hooks.retries import RetryPolicy

    rng = random.Random(seed)
    now = [0.0]
    rate = budget_rate or DEFAULT_STATUS_RATE_LIMIT

    def clock() -> float:
        return now[0]

    def sleep(seconds: float) -> _Sleep:
        return _Sleep(seconds)

    server = RouteBucket(limit, burst, clock=clock)
    policy = RetryPolicy(jitter=rng.random)
    result = SimResult(processes, seed, horizon)
    answered = [0]
    budgets = [AsyncTokenBucket(rate, burst=status_burst(rate), clock=clock, sleep=sleep) for _ in range(processes)]

    async def trigger(process: int, delay: float) -> None:
        budget = budgets[process]
        await sleep(delay)
        while result.done_at is None:
            for attempt in range(1, policy.max_retries + 2):
                granted = await budget.acquire()
                await sleep(0.005 + 0.01 * rng.random())  # the round trip
                result.sent.append(now[0])
                result.senders.append(process)
                wait = server.try_acquire()
                if not wait:
                    answered[0] += 1
                    if polls is not None and answered[0] >= polls:
                        result.done_at = now[0]
                    break
                result.throttled.append(now[0])
                retry_after = float(max(1, math.ceil(wait)))
                budget.rate_limited(retry_after, sent_at=granted)
                await sleep(policy.wait_seconds(attempt, retry_after))
            await sleep(poll_interval * (0.75 + 0.5 * rng.random()))

    queue: list[tuple[float, int, Any]] = []
    spread = [triggers] * processes if isinstance(triggers, int) else list(triggers)
    order = [p for p, count in enumerate(spread) for _ in range(count)]
    rng.shuffle(order)  # tasks defer in no particular order of process
    for seq, process in enumerate(order):
        coro = trigger(process, arrive_s * seq / len(order))
        heapq.heappush(queue, (0.0, seq, coro))
    seq = len(order)
    while queue and result.done_at is None:
        at, _, coro = heapq.heappop(queue)
        if at >= horizon:
            break
        now[0] = at
        try:
            seconds = coro.send(None)
        except StopIteration:
            continue
        seq += 1
        heapq.heappush(queue, (at + seconds, seq, coro))
    for _, _, coro in queue:
        coro.close()
    return result


# --- the child: one "triggerer" ------------------------------------------------------------------------------------


def child_triggers(params: dict[str, Any]) -> dict[str, Any]:
    import httpx_aiohttp  # noqa: F401  (everything the first poll imports, before the go)

    import airflow_provider_baseten.hooks.async_requests
    import airflow_provider_baseten.hooks.baseten  # noqa: F401
    from airflow_provider_baseten.triggers.baseten import BasetenAsyncRequestTrigger  # noqa: F401

    go = wait_for_go()
    return asyncio.run(_run_triggers(go["request_ids"], params["run_s"]))


async def _run_triggers(request_ids: list[str], run_s: float) -> dict[str, Any]:
    from airflow_provider_baseten.hooks.baseten import close_shared_async_clients
    from airflow_provider_baseten.triggers.baseten import BasetenAsyncRequestTrigger

    events: list[str] = []

    async def watch(request_id: str) -> None:
        trigger = BasetenAsyncRequestTrigger(request_id=request_id, model_id=MODEL, poll_interval=1)
        async for event in trigger.run():
            payload = event.payload
            events.append(payload.get("status", "?") if isinstance(payload, dict) else str(payload))
            return

    tasks = [asyncio.create_task(watch(rid)) for rid in request_ids]
    await asyncio.wait(tasks, timeout=run_s)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await close_shared_async_clients()
    return {"triggers": len(request_ids), "fired_early": events}


FUNCTIONS = {"triggers": child_triggers}

SIM_SEEDS = 16
SIM_HORIZON_S = 1500.0
SIM_SETTLE_S = 120.0
#: Triggers per triggerer process in the simulation: one process, the even spread, and the uneven one the system
#: test met (Airflow hands triggers to whichever triggerer has capacity).
SIM_SPREADS: tuple[tuple[int, ...], ...] = ((36,), (12, 12, 12), (2, 12, 22))


def simulation_table(counts: Sequence[int], n: int, seeds: int) -> tuple[Table, dict[str, Any]]:
    """The same question on virtual time, long past the budgets' convergence (where the real-time run cannot
    reach): per spread of 36 triggers over the process counts asked for, the median and worst peak 5 s rate, the
    seeds over the limit and the 429s after ``SIM_SETTLE_S``, and the virtual seconds one budget takes for
    ``n`` x 20 answered polls."""
    table = Table(
        f"Simulated, {SIM_HORIZON_S / 60:.0f} min on virtual time, 36 triggers in all, {seeds} seeds",
        [
            "triggers per process",
            "mean req/s",
            "peak req/s (5 s, median)",
            "peak req/s (5 s, worst)",
            "seeds over 20",
            "429s after 2 min (median)",
            "429s after 2 min (all seeds)",
        ],
    )
    raw: dict[str, Any] = {}
    for spread in (s for s in SIM_SPREADS if len(s) in counts):
        runs = [
            simulate(processes=len(spread), triggers=spread, seed=seed, horizon=SIM_HORIZON_S) for seed in range(seeds)
        ]
        after = [run.after(SIM_SETTLE_S) for run in runs]
        peaks = [peak_rate(sent) for sent, _ in after]
        late = [len(throttled) for _, throttled in after]
        mean = median(len(sent) / (SIM_HORIZON_S - SIM_SETTLE_S) for sent, _ in after) or 0.0
        name = "/".join(map(str, spread))
        table.add(name, mean, median(peaks), max(peaks), sum(peak > LIMIT for peak in peaks), median(late), sum(late))
        senders = [peak_senders(run, SIM_SETTLE_S) for run in runs]
        raw[name] = {"peaks": peaks, "late_429s": late, "peak_senders": senders}
    polls = 20 * n
    done = simulate(processes=1, triggers=36, seed=0, horizon=10 * polls, polls=polls).done_at
    table.notes.append(
        f"One triggerer answered {polls} polls in {done:.0f} virtual seconds (its budget, not the limit, binds). "
        "The real budget class on an injected clock against the emulator's RouteBucket (see simulate())."
    )
    raw["one_triggerer_polls_s"] = done
    return table, raw


# --- the parent ----------------------------------------------------------------------------------------------------


def run_processes(emu: Any, runner: ChildRunner, *, n: int, processes: int, settle: float, measure: float) -> dict:
    """P children share N queued requests; returns the status traffic the emulator answered in the window."""
    from airflow_provider_baseten.hooks.models import AsyncPredictRequest

    def submit(state: Any) -> list[str]:
        deployment = state.deployment(MODEL)
        return [state.queue.submit(deployment, AsyncPredictRequest(model_input={"i": i})).request_id for i in range(n)]

    ids = emu.call(submit)
    shares = [ids[p::processes] for p in range(processes)]
    barrier = threading.Barrier(processes)
    started: list[float] = []
    results: list[dict[str, Any]] = [{} for _ in range(processes)]
    errors: list[BaseException] = []

    def one(p: int) -> None:
        def on_ready() -> dict[str, Any]:
            barrier.wait(timeout=300)  # every child has paid its imports: they start together
            started.append(time.time())
            return {"request_ids": shares[p]}

        try:
            results[p] = runner.run("triggers", {"run_s": settle + measure + 2}, on_ready=on_ready)
        except BaseException as err:  # re-raised in the parent thread
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=one, args=(p,)) for p in range(processes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    t0 = max(started) + settle
    t1 = t0 + measure
    host = f"model-{MODEL}.api.baseten.co"
    polls = [e for e in emu.journal.entries() if e.host == host and e.route == "async_status" and t0 <= e.time < t1]
    rates = window_rates([e.time for e in polls], t0, t1)
    throttled = sum(1 for e in polls if e.status == 429)
    start = max(started)
    early = [e.time for e in emu.journal.entries() if e.host == host and e.status == 429 and start <= e.time < t0]
    return {
        "settling_429s": len(early),
        "converged_s": max(early) - start if early else 0.0,
        "processes": processes,
        "n": n,
        "requests": len(polls),
        "mean_rate": len(polls) / measure,
        "peak_rate": max(rates) if rates else 0.0,
        "ok_rate": (len(polls) - throttled) / measure,
        "throttled": throttled,
        "throttled_share": throttled / len(polls) if polls else 0.0,
        "windows": rates,
        "fired_early": sum(len(r.get("fired_early", [])) for r in results),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=None, help="queued requests (triggers) in all (default 300)")
    parser.add_argument("--settle", type=float, default=None, help="seconds before measuring (default 40)")
    parser.add_argument("--measure", type=float, default=None, help="measurement window in seconds (default 30)")
    parser.add_argument("--processes", default="1,3", help="comma-separated process counts (default 1,3)")
    args = parse_args(parser, argv)
    if run_as_child(args, FUNCTIONS):
        return {}
    n = args.n or (60 if args.quick else 300)
    settle = args.settle if args.settle is not None else (20.0 if args.quick else 40.0)
    measure = args.measure if args.measure is not None else (10.0 if args.quick else 30.0)
    repeat = args.repeat or 1
    counts = [int(p) for p in args.processes.split(",")]

    from airflow_provider_baseten.emulator import Emulator
    from airflow_provider_baseten.emulator.world import DeploymentSpec, ModelSpec, World

    world = World()
    world.add(
        ModelSpec(
            MODEL,
            "echo",
            deployments=[DeploymentSpec("benchconvdep", status="SCALED_TO_ZERO", cold_start_seconds=10_000_000)],
        )
    )
    samples: dict[int, list[dict[str, Any]]] = {p: [] for p in counts}
    with Emulator(world=world, port=0) as emu:
        conn = {"conn_type": "baseten", "host": emu.url, "password": emu.api_key}
        runner = ChildRunner(MODULE, FUNCTIONS, env={"AIRFLOW_CONN_BASETEN_DEFAULT": json.dumps(conn)})
        if args.inline:
            raise SystemExit("--inline is not supported: the point is separate processes")
        for _ in range(repeat):
            for p in counts:
                emu.reset()
                samples[p].append(run_processes(emu, runner, n=n, processes=p, settle=settle, measure=measure))

    table = Table(
        f"Aggregate async-status traffic on one key, {n} waiting triggers, limit {LIMIT:.0f} req/s",
        [
            "triggerer processes",
            "mean req/s",
            f"peak req/s ({WINDOW_S:.0f} s window)",
            "200 req/s",
            "429s",
            "429 share",
            "429s while settling",
            "last 429 (s after start)",
        ],
    )
    goals: list[Goal] = []
    for p in counts:
        rows = samples[p]

        def med(key: str, rows: list[dict[str, Any]] = rows) -> float:
            value = median(r[key] for r in rows)
            return float(value or 0.0)

        table.add(
            p,
            med("mean_rate"),
            med("peak_rate"),
            med("ok_rate"),
            int(med("throttled")),
            med("throttled_share"),
            int(med("settling_429s")),
            med("converged_s"),
        )
        goals.append(
            Goal(
                f"{p} triggerer(s) converge under the limit",
                f"peak {WINDOW_S:.0f} s rate <= {LIMIT:.0f} req/s",
                f"{med('peak_rate'):.1f} req/s",
                med("peak_rate") <= LIMIT,
            )
        )
    table.notes.append(
        f"Counted over {measure:.0f} s after {settle:.0f} s of settling; every status request the emulator answered "
        "(200 or 429). Medians over the repetitions."
    )
    method = (
        "N queued async requests split over P child processes, each running its triggers in one event loop with "
        "the default per-process poll budget; the emulator's journal counts the status traffic on the wall clock."
    )
    sim_table, sim_raw = simulation_table(counts, n, 2 if args.quick else SIM_SEEDS)
    publish_results(
        "triggerer_convergence",
        title="Several triggerers on one key (triggerer_convergence.py)",
        module=MODULE,
        argv=argv,
        tables=[table, sim_table, goals_table(goals)],
        raw={"samples": samples, "n": n, "settle": settle, "measure": measure, "simulated": sim_raw},
        method=method,
        results_dir=args.results_dir,
    )
    return {"samples": samples}


if __name__ == "__main__":
    main()
