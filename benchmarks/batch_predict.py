"""Batch throughput: ``BasetenBatchPredictOperator`` vs ``baseten-performance-client`` and a loop of ``HttpHook.run``.

Method: the emulator (in this process, on 127.0.0.1) serves a model that answers after 50 ms of real time (time
scale 1) and an echo model with no delay. Each client runs in a fresh child process that reads the same JSONL input
file and sends every line as one predict at the same concurrency (each is handed its connection before the measured
window: the performance client its URL and key, the operator its resolved Airflow connection); wall time, CPU
seconds (all threads, so the performance client's Rust workers count) and peak RSS are the child's own. The ideal
wall time is ``N / concurrency * latency``; efficiency is ideal / actual. The sequential ``HttpHook.run`` loop is
timed on a subset and extrapolated to N (said so in the table). At 0 ms the model costs nothing and the figure is
the client's own overhead: requests per CPU-second of the client process ("per core"). Memory is the child's peak
RSS growth over its state after imports, at N = 1k, 5k and 20k read from a file.

    python -m benchmarks.batch_predict            # N=5,000 x 3 repetitions + memory scaling, ~3 minutes
    python -m benchmarks.batch_predict --quick    # N=300, one repetition
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks._common import (
    ChildRunner,
    Goal,
    Meter,
    Table,
    base_parser,
    goals_table,
    median,
    parse_args,
    publish_results,
    ratio,
    run_as_child,
)

MODULE = "benchmarks.batch_predict"
CLIENTS = {"operator": "BasetenBatchPredictOperator", "perf_client": "baseten-performance-client batch_post"}
#: Measuring sticks beside the clients at 50 ms (not clients): what the transport alone and what the emulator allow.
FLOORS = {
    "aiohttp_floor": "bare aiohttp session (the hot path's transport, nothing else)",
    "streams_floor": "bare asyncio streams (pre-built bytes, no HTTP library)",
}
SLOW_MODEL = "bench50ms"
FAST_MODEL = "bench0ms"
HTTP_CONN_ID = "bench_http"
GOAL_EFFICIENCY = 0.95
GOAL_VS_PERF_CLIENT = 1.0
#: Requests per client CPU-second at 0 ms, as a fraction of the performance client's (a Rust client).
GOAL_PER_CORE = 0.5
#: "Flat" memory: the peak RSS growth at the largest N is within this many MiB of the smallest N's.
GOAL_FLAT_MIB = 5.0


# --- the emulator's world and the inputs ---------------------------------------------------------------------------


def bench_world(latency_s: float, concurrency: int) -> Any:
    """Two always-on models: one that works ``latency_s`` per predict, one that answers at once."""
    from airflow_provider_baseten.emulator.behaviours import Echo, Sleep
    from airflow_provider_baseten.emulator.world import DeploymentSpec, ModelSpec, World

    room = {"min_replicas": 1, "predict_concurrency": max(256, concurrency * 4)}
    return World().add(
        ModelSpec(SLOW_MODEL, Sleep(latency_s, Echo()), deployments=[DeploymentSpec("bench50prod", **room)]),
        ModelSpec(FAST_MODEL, Echo(), deployments=[DeploymentSpec("bench0prod", **room)]),
    )


def write_inputs(path: Path, n: int) -> Path:
    """``n`` JSONL records of about 200 bytes (a review-like text and an id)."""
    filler = "the delivery was fast and the support team was helpful, would recommend to a friend again. "
    with path.open("w") as out:
        for i in range(n):
            out.write(json.dumps({"id": f"item-{i:06d}", "text": f"review {i}: {filler * 2}"}) + "\n")
    return path


# --- children ----------------------------------------------------------------------------------------------------


def _read_payloads(path: str, limit: int | None = None) -> list[Any]:
    payloads = []
    with open(path, "rb") as handle:
        for line in handle:
            if limit is not None and len(payloads) >= limit:
                break
            payloads.append(json.loads(line))
    return payloads


def child_operator(params: dict[str, Any]) -> dict[str, Any]:
    """``BasetenBatchPredictOperator.execute`` over the input file, as a worker runs it."""
    import httpx_aiohttp  # noqa: F401  (imported before measuring, as the performance client's import is)

    # and what execute() imports on first use, so only the batch is measured
    import airflow_provider_baseten.hooks.baseten
    import airflow_provider_baseten.hooks.hotpath
    import airflow_provider_baseten.hooks.readiness
    import airflow_provider_baseten.hooks.retry_budget  # noqa: F401
    from airflow_provider_baseten.operators.batch import BasetenBatchPredictOperator

    operator = BasetenBatchPredictOperator(
        task_id="bench_batch",
        model_id=params["model_id"],
        input_path=params["input_path"],
        output_path=params["output_path"],
        max_concurrency=params["concurrency"],
        progress_interval=3600,
    )
    # The connection is resolved before the window, as the performance client is handed its URL and key: outside
    # a task runner the lookup imports Airflow's supervisor (about 40 ms), which a real task has already loaded.
    operator.hook.settings  # noqa: B018
    with Meter() as meter:
        manifest = operator.execute({})
    return {**meter.as_dict(), "n": manifest["total"], "ok": manifest["succeeded"], "errors": manifest["failed"]}


def child_perf_client(params: dict[str, Any]) -> dict[str, Any]:
    """``PerformanceClient.batch_post`` with the same payloads and concurrency (it needs them all in a list)."""
    from baseten_performance_client import PerformanceClient, RequestProcessingPreference

    from airflow_provider_baseten.hooks.addressing import Target

    endpoint = Target.of(model_id=params["model_id"]).endpoint("predict")
    client = PerformanceClient(base_url=params["base_url"], api_key=params["api_key"])
    preference = RequestProcessingPreference(
        max_concurrent_requests=params["concurrency"],
        timeout_s=60.0,
        # Gateway routing, as the provider does it: the Baseten host goes in the Host header.
        extra_headers={"Host": endpoint.host, "Authorization": f"Api-Key {params['api_key']}"},
    )
    with Meter() as meter:
        payloads = _read_payloads(params["input_path"])
        response = client.batch_post(endpoint.path, payloads, preference=preference)
        results = list(response.data)
    errors = sum(1 for r in results if not isinstance(r, dict) or "id" not in r)
    return {**meter.as_dict(), "n": len(results), "ok": len(results) - errors, "errors": errors}


def child_http_hook(params: dict[str, Any]) -> dict[str, Any]:
    """A plain sequential loop of ``HttpHook.run`` over the first ``limit`` inputs."""
    from airflow.providers.http.hooks.http import HttpHook

    from airflow_provider_baseten.hooks.addressing import Target

    endpoint = Target.of(model_id=params["model_id"]).endpoint("predict")
    headers = {"Host": endpoint.host, "Authorization": f"Api-Key {params['api_key']}"}
    hook = HttpHook(method="POST", http_conn_id=HTTP_CONN_ID)
    payloads = _read_payloads(params["input_path"], params["limit"])
    errors = 0
    with Meter() as meter:
        for payload in payloads:
            response = hook.run(endpoint=endpoint.path, json=payload, headers=headers)
            errors += response.status_code != 200
    return {**meter.as_dict(), "n": len(payloads), "ok": len(payloads) - errors, "errors": errors}


def _start_ramp(concurrency: int) -> float:
    """Seconds between worker starts: the operator's own start ramp, so a floor differs from it only in its sender."""
    from airflow_provider_baseten.operators.batch import BasetenBatchPredictOperator as Op
    from airflow_provider_baseten.operators.batch import start_ramp

    return start_ramp(Op.start_ramp_step, Op.start_ramp_max, concurrency)


def _measure_floor(run: Callable[[list[bytes]], Awaitable[int]], input_path: str) -> dict[str, Any]:
    """Run one floor (``run(bodies)`` returns its error count) inside the meter; the child's result."""
    import asyncio

    with Meter() as meter:
        bodies = _bodies(input_path)
        errors = asyncio.run(run(bodies))
    return {**meter.as_dict(), "n": len(bodies), "ok": len(bodies) - errors, "errors": errors}


def _bodies(path: str) -> list[bytes]:
    """The input lines as request bodies (each line is one JSON record already)."""
    with open(path, "rb") as handle:
        return [line.rstrip(b"\n") for line in handle if line.strip()]


def child_aiohttp_floor(params: dict[str, Any]) -> dict[str, Any]:
    """The transport floor of the hot path: the same inputs POSTed on a bare ``aiohttp`` session from the provider's
    client factory, ``concurrency`` coroutines started on the operator's ramp, the answer read and its status
    checked; nothing else (no retries, journal, output)."""
    import asyncio

    import aiohttp  # noqa: F401  (imported before measuring)

    from airflow_provider_baseten.hooks.addressing import Target
    from airflow_provider_baseten.hooks.baseten import BasetenHook
    from airflow_provider_baseten.hooks.clients import build_aiohttp_session

    settings = BasetenHook().settings
    ramp = _start_ramp(params["concurrency"])
    endpoint = Target.of(model_id=params["model_id"]).endpoint("predict")
    url = settings.base_url(endpoint.host) + endpoint.path
    headers = {"Host": endpoint.host, "Authorization": settings.auth_header, "Content-Type": "application/json"}

    async def run(inputs: list[bytes]) -> int:
        session = build_aiohttp_session(settings, max_connections=params["concurrency"])
        bodies = iter(inputs)
        errors = 0

        async def worker(start_after: float) -> None:
            nonlocal errors
            await asyncio.sleep(start_after)
            for body in bodies:
                async with session.post(url, data=body, headers=headers) as answer:
                    await answer.read()
                    errors += answer.status != 200

        try:
            await asyncio.gather(*(worker(i * ramp) for i in range(params["concurrency"])))
        finally:
            await session.close()
        return errors

    return _measure_floor(run, params["input_path"])


def child_streams_floor(params: dict[str, Any]) -> dict[str, Any]:
    """What the emulator allows a client that costs almost nothing: ``concurrency`` keep-alive connections of bare
    ``asyncio`` streams started on the operator's ramp, each request pre-built bytes, the answer's head parsed for
    its status and ``Content-Length`` only (no HTTP library). A measuring stick, not a client: no TLS, proxy,
    chunking or retry."""
    import asyncio
    from urllib.parse import urlsplit

    from airflow_provider_baseten.hooks.addressing import Target

    endpoint = Target.of(model_id=params["model_id"]).endpoint("predict")
    server = urlsplit(params["base_url"])
    ramp = _start_ramp(params["concurrency"])
    head = (
        f"POST {endpoint.path} HTTP/1.1\r\nHost: {endpoint.host}\r\nAuthorization: Api-Key {params['api_key']}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()

    async def run(inputs: list[bytes]) -> int:
        bodies = iter(inputs)
        errors = 0

        async def worker(start_after: float) -> None:
            nonlocal errors
            await asyncio.sleep(start_after)
            reader, writer = await asyncio.open_connection(server.hostname, server.port)
            try:
                for body in bodies:
                    writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
                    lines = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
                    errors += lines[0].split(b" ", 2)[1] != b"200"
                    length = next(int(line[15:]) for line in lines if line[:15].lower() == b"content-length:")
                    await reader.readexactly(length)
            finally:
                writer.close()

        await asyncio.gather(*(worker(i * ramp) for i in range(params["concurrency"])))
        return errors

    return _measure_floor(run, params["input_path"])


FUNCTIONS = {
    "operator": child_operator,
    "perf_client": child_perf_client,
    "http_hook": child_http_hook,
    "aiohttp_floor": child_aiohttp_floor,
    "streams_floor": child_streams_floor,
}


# --- main ------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=None, help="inputs of the 50 ms run (default 5,000)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--memory-ns", default=None, help="comma-separated N of the 0 ms memory runs")
    parser.add_argument("--http-hook-subset", type=int, default=None, help="inputs the HttpHook loop really sends")
    args = parse_args(parser, argv)
    if run_as_child(args, FUNCTIONS):
        return {}
    n = args.n or (300 if args.quick else 5000)
    repeat = args.repeat or (1 if args.quick else 3)
    memory_ns = [int(x) for x in (args.memory_ns or ("100,300" if args.quick else "1000,5000,20000")).split(",")]
    subset = args.http_hook_subset or (20 if args.quick else 60)
    latency = args.latency_ms / 1000.0
    concurrency = args.concurrency

    from airflow_provider_baseten.emulator import Emulator

    work = Path(tempfile.mkdtemp(prefix="baseten-bench-batch-"))
    inputs = {size: write_inputs(work / f"inputs-{size}.jsonl", size) for size in {n, *memory_ns}}
    raw: dict[str, Any] = {"n": n, "repeat": repeat, "latency_s": latency, "concurrency": concurrency}
    with Emulator(world=bench_world(latency, concurrency), time_scale=1.0, port=0) as emu:
        runner = ChildRunner(
            MODULE,
            FUNCTIONS,
            env={"AIRFLOW_CONN_BASETEN_DEFAULT": emu.conn_uri(), f"AIRFLOW_CONN_{HTTP_CONN_ID.upper()}": emu.url},
            inline=args.inline,
        )

        def params(side: str, model: str, size: int, rep: int) -> dict[str, Any]:
            return {
                "model_id": model,
                "input_path": str(inputs[size]),
                "output_path": str(work / f"out-{side}-{model}-{size}-{rep}.jsonl"),
                "concurrency": concurrency,
                "base_url": emu.url,
                "api_key": emu.api_key,
            }

        # 1. N inputs at 50 ms: the sides alternate within each repetition, so load drift hits both alike. The
        # sequential HttpHook loop is an extrapolation anyway: one run of a subset.
        runs: dict[str, list[dict[str, Any]]] = {"operator": [], "perf_client": [], "http_hook": []}
        floors: dict[str, list[dict[str, Any]]] = {side: [] for side in FLOORS}
        for rep in range(repeat):
            for side in ("operator", "perf_client"):
                runs[side].append(runner.run(side, params(side, SLOW_MODEL, n, rep)))
            for side in FLOORS:
                floors[side].append(runner.run(side, params(side, SLOW_MODEL, n, rep)))
        runs["http_hook"].append(runner.run("http_hook", {**params("http", SLOW_MODEL, n, 0), "limit": subset}))
        raw["latency_runs"] = runs
        raw["floor_runs"] = floors

        # 2. 0 ms: the clients' own cost and their memory against N read from a file, one run per N (the per-core
        # figure is the median over the N, which it does not depend on).
        memory: dict[str, dict[int, list[dict[str, Any]]]] = {"operator": {}, "perf_client": {}}
        for size in memory_ns:
            for side in ("operator", "perf_client"):
                memory[side].setdefault(size, []).append(runner.run(side, params(side, FAST_MODEL, size, 0)))
        raw["zero_latency_runs"] = memory

    tables, goals = _report(n, latency, concurrency, repeat, subset, runs, memory, args.inline)
    tables.insert(1, _floors_table(n, latency, concurrency, runs, floors))
    path = publish_results(
        "batch_predict",
        title="Batch predict throughput and memory",
        module=MODULE,
        argv=argv,
        tables=tables,
        raw=raw,
        results_dir=args.results_dir,
    )
    return {"tables": tables, "goals": goals, "raw": raw, "path": str(path)}


def _floors_table(
    n: int,
    latency: float,
    concurrency: int,
    runs: dict[str, list[dict[str, Any]]],
    floors: dict[str, list[dict[str, Any]]],
) -> Table:
    """The operator and the performance client beside two floors: a bare aiohttp session and bare asyncio streams."""
    ideal = n / concurrency * latency
    perf_wall = median(r["wall_s"] for r in runs["perf_client"])
    table = Table(
        f"Where the {latency * 1000:.0f} ms ceiling is: the same {n:,} inputs with nothing but a transport "
        "(same run, medians)",
        ["sender", "wall s", "efficiency", "req/s", "x perf client", "CPU ms / request"],
    )
    for side, label in {**CLIENTS, **FLOORS}.items():
        samples = runs.get(side) or floors[side]
        wall = median(r["wall_s"] for r in samples)
        cpu = median(r["cpu_s"] for r in samples)
        table.add(
            label,
            wall,
            ratio(ideal, wall),
            ratio(n, wall),
            ratio(perf_wall, wall),
            ratio(cpu * 1000, n) if cpu is not None else None,
        )
    table.notes.append(
        "The floors send the same bodies at the same concurrency, start their workers on the operator's ramp and "
        "only read the answers. The emulator is one Python event loop (about 0.25 ms of its CPU per predict) that "
        "every sender's answers queue in: where the streams floor, at a fraction of any HTTP library's CPU per "
        "request, sits is about as far as a client can get on this emulator."
    )
    return table


def _report(
    n: int,
    latency: float,
    concurrency: int,
    repeat: int,
    subset: int,
    runs: dict[str, list[dict[str, Any]]],
    memory: dict[str, dict[int, list[dict[str, Any]]]],
    inline: bool,
) -> tuple[list[Table], list[Goal]]:
    ideal = n / concurrency * latency
    walls = {side: median(r["wall_s"] for r in samples) for side, samples in runs.items()}
    per_request = ratio(walls["http_hook"], subset)
    walls["http_hook"] = per_request * n if per_request is not None else None
    perf_throughput = ratio(n, walls["perf_client"])
    labels = {
        **CLIENTS,
        "http_hook": f"HttpHook.run loop (sequential; one run of {subset}, extrapolated to {n:,})",
    }
    table = Table(
        f"{n:,} inputs, {latency * 1000:.0f} ms model latency, concurrency {concurrency} "
        f"(ideal {ideal:.2f} s; median of {repeat})",
        ["client", "wall s", "efficiency", "req/s", "x perf client", "CPU s", "peak RSS MiB", "errors"],
    )
    for side, label in labels.items():
        samples = runs[side]
        scale = n / subset if side == "http_hook" else 1.0
        cpu = median(r["cpu_s"] for r in samples)
        throughput = ratio(n, walls[side])
        table.add(
            label,
            walls[side],
            ratio(ideal, walls[side]),
            throughput,
            ratio(throughput, perf_throughput),
            cpu * scale if cpu is not None else None,
            median(r["peak_rss_mib"] for r in samples),
            sum(r["errors"] for r in samples),
        )
    if inline:
        table.notes.append("--inline: CPU and RSS include the emulator (same process); only the walls are usable.")

    sizes = sorted(memory["operator"])
    mem = Table(
        "0 ms model latency: client overhead and memory against N (input read from a JSONL file)",
        ["client", "N", "wall s", "req/s", "req per CPU-second", "CPU s", "RSS growth MiB", "peak RSS MiB"],
    )
    growth: dict[str, dict[int, float | None]] = {"operator": {}, "perf_client": {}}
    per_core: dict[str, float | None] = {}
    for side in ("operator", "perf_client"):
        for size in sizes:
            samples = memory[side][size]
            wall = median(r["wall_s"] for r in samples)
            cpu = median(r["cpu_s"] for r in samples)
            growth[side][size] = median(r["rss_growth_mib"] for r in samples)
            mem.add(
                labels[side],
                size,
                wall,
                ratio(size, wall),
                ratio(size, cpu),
                cpu,
                growth[side][size],
                median(r["peak_rss_mib"] for r in samples),
            )
        per_core[side] = median(ratio(size, r["cpu_s"]) for size in sizes for r in memory[side][size])
    mem.notes.append(
        "RSS growth: the child's peak RSS minus its RSS after imports; req per CPU-second: N / the client process's "
        "CPU seconds, i.e. requests per second one core sustains (the emulator's CPU is not counted)."
    )
    ours, theirs = per_core["operator"], per_core["perf_client"]
    if ours and theirs:
        mem.notes.append(
            f"Per core (median over the N): {ours:,.0f} requests per CPU-second for the operator, "
            f"{theirs:,.0f} for the performance client ({ours / theirs:.2f}x)."
        )

    per_core_ratio = ratio(ours, theirs) or 0.0
    efficiency = ratio(ideal, walls["operator"]) or 0.0
    versus = ratio(walls["perf_client"], walls["operator"]) or 0.0
    small, large = growth["operator"][sizes[0]], growth["operator"][sizes[-1]]
    flat = small is not None and large is not None and large - small <= GOAL_FLAT_MIB
    goals = [
        Goal(
            "batch efficiency (ideal / actual)",
            f">= {GOAL_EFFICIENCY}",
            f"{efficiency:.3f}",
            efficiency >= GOAL_EFFICIENCY,
        ),
        Goal(
            "throughput vs performance client",
            f">= {GOAL_VS_PERF_CLIENT}x",
            f"{versus:.3f}x",
            versus >= GOAL_VS_PERF_CLIENT,
        ),
        Goal(
            "requests per CPU-second at 0 ms vs performance client",
            f">= {GOAL_PER_CORE}x",
            f"{per_core_ratio:.2f}x",
            per_core_ratio >= GOAL_PER_CORE,
        ),
        Goal(
            "memory flat in N (file input)",
            f"RSS growth at {sizes[-1]:,} within {GOAL_FLAT_MIB:.0f} MiB of {sizes[0]:,}",
            f"{small:.1f} -> {large:.1f} MiB" if small is not None and large is not None else "-",
            flat,
        ),
    ]
    return [table, mem, goals_table(goals, "Batch goals")], goals


if __name__ == "__main__":
    main()
