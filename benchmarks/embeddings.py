"""Embeddings throughput: ``BasetenEmbeddingsOperator`` vs ``baseten-performance-client`` ``embed`` and ``AsyncOpenAI``.

Method: the emulator (in this process, on 127.0.0.1, time scale 1) serves a BEI deployment that answers each request
after 20 ms whatever its size, with deterministic ``--dimensions`` float vectors. Each client runs in a fresh child
process that reads the same JSONL file of N texts and embeds them 128 per request, 32 requests in flight: the
operator (``execute``, JSONL output written as it runs), the performance client's ``embed`` (one call on the list;
its character bound raised so it packs 128 too) and a loop of ``AsyncOpenAI().embeddings.create`` (32 coroutines,
one pack each at a time). Wall time, CPU seconds (all threads) and peak RSS are the child's own; the emulator's CPU
is the parent's and counts for nobody. Memory: the operator's peak RSS growth at two N read from a file.

    python -m benchmarks.embeddings            # N=100,000 x 3 repetitions + memory at 20k and 100k
    python -m benchmarks.embeddings --quick    # N=2,000, one repetition
"""

from __future__ import annotations

import json
import tempfile
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

MODULE = "benchmarks.embeddings"
MODEL = "benchembed"
HOST = f"model-{MODEL}.api.baseten.co"
GOAL_VS_PERF_CLIENT = 1.0
GOAL_VS_OPENAI = 5.0
GOAL_FLAT_MIB = 10.0


def bench_world(latency_ms: float, dimensions: int) -> Any:
    from airflow_provider_baseten.emulator.world import DeploymentSpec, ModelSpec, World

    behaviour = {"kind": "bei", "dimensions": dimensions, "base_ms": latency_ms, "per_input_ms": 0.0}
    room = {"min_replicas": 1, "predict_concurrency": 1024}
    return World().add(ModelSpec(MODEL, behaviour, deployments=[DeploymentSpec("benchembedprod", **room)]))


def write_texts(path: Path, n: int) -> Path:
    """``n`` JSONL records of about 150 characters of text each."""
    filler = "the delivery was fast and the support team was helpful, would recommend to a friend. "
    with path.open("w") as out:
        for i in range(n):
            out.write(json.dumps({"id": f"doc-{i:06d}", "text": f"document {i}: {filler}{i % 97}"}) + "\n")
    return path


def _read_texts(path: str) -> list[str]:
    with open(path, "rb") as handle:
        return [json.loads(line)["text"] for line in handle]


# --- children ----------------------------------------------------------------------------------------------------


def child_operator(params: dict[str, Any]) -> dict[str, Any]:
    import httpx_aiohttp  # noqa: F401  (imported before measuring, as the other clients' imports are)

    import airflow_provider_baseten.hooks.baseten  # noqa: F401
    from airflow_provider_baseten.operators.embeddings import BasetenEmbeddingsOperator

    operator = BasetenEmbeddingsOperator(
        task_id="bench_embed",
        model_id=MODEL,
        input_path=params["input_path"],
        output_path=params["output_path"],
        batch_size=params["batch_size"],
        max_chars_per_request=1_000_000,
        max_concurrency=params["concurrency"],
        encoding_format=params.get("encoding_format"),
        progress_interval=3600,
    )
    with Meter() as meter:
        manifest = operator.execute({})
    return {**meter.as_dict(), "n": manifest["total"], "ok": manifest["succeeded"], "errors": manifest["failed"]}


def child_perf_client(params: dict[str, Any]) -> dict[str, Any]:
    from baseten_performance_client import PerformanceClient, RequestProcessingPreference

    client = PerformanceClient(base_url=f"{params['base_url']}/production/sync", api_key=params["api_key"])
    preference = RequestProcessingPreference(
        max_concurrent_requests=params["concurrency"],
        batch_size=params["batch_size"],
        max_chars_per_request=1_000_000,
        timeout_s=60.0,
        extra_headers={"host": HOST},
    )
    with Meter() as meter:
        texts = _read_texts(params["input_path"])
        response = client.embed(texts, model="model", preference=preference)
        vectors = [item.embedding for item in response.data]
    ok = sum(1 for vector in vectors if isinstance(vector, list) and vector)
    return {**meter.as_dict(), "n": len(texts), "ok": ok, "errors": len(texts) - ok}


def child_openai(params: dict[str, Any]) -> dict[str, Any]:
    import asyncio

    from openai import AsyncOpenAI

    client = AsyncOpenAI(
        base_url=f"{params['base_url']}/production/sync/v1",
        api_key=params["api_key"],
        default_headers={"Host": HOST},
        max_retries=5,
    )
    size, concurrency = params["batch_size"], params["concurrency"]

    async def run(texts: list[str]) -> int:
        packs = iter([texts[i : i + size] for i in range(0, len(texts), size)])
        done = 0

        async def worker() -> None:
            nonlocal done
            for pack in packs:
                answer = await client.embeddings.create(input=pack, model="model", encoding_format="float")
                done += len(answer.data)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await client.close()
        return done

    with Meter() as meter:
        texts = _read_texts(params["input_path"])
        ok = asyncio.run(run(texts))
    return {**meter.as_dict(), "n": len(texts), "ok": ok, "errors": len(texts) - ok}


FUNCTIONS = {"operator": child_operator, "perf_client": child_perf_client, "openai": child_openai}
LABELS = {
    "operator": "BasetenEmbeddingsOperator",
    "perf_client": "baseten-performance-client embed",
    "openai": "AsyncOpenAI embeddings.create loop",
}


# --- main ------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=None, help="texts (default 100,000)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--dimensions", type=int, default=64)
    parser.add_argument("--memory-ns", default=None, help="comma-separated N of the operator's memory runs")
    args = parse_args(parser, argv)
    if run_as_child(args, FUNCTIONS):
        return {}
    n = args.n or (2000 if args.quick else 100_000)
    repeat = args.repeat or (1 if args.quick else 3)
    memory_ns = [int(x) for x in (args.memory_ns or ("500,2000" if args.quick else "20000,100000")).split(",")]

    from airflow_provider_baseten.emulator import Emulator

    work = Path(tempfile.mkdtemp(prefix="baseten-bench-embeddings-"))
    inputs = {size: write_texts(work / f"texts-{size}.jsonl", size) for size in {n, *memory_ns}}
    raw: dict[str, Any] = {
        "n": n,
        "repeat": repeat,
        "batch_size": args.batch_size,
        "concurrency": args.concurrency,
        "latency_ms": args.latency_ms,
        "dimensions": args.dimensions,
    }
    with Emulator(world=bench_world(args.latency_ms, args.dimensions), time_scale=1.0, port=0) as emu:
        runner = ChildRunner(
            MODULE, FUNCTIONS, env={"AIRFLOW_CONN_BASETEN_DEFAULT": emu.conn_uri()}, inline=args.inline
        )

        def params(side: str, size: int, rep: int) -> dict[str, Any]:
            return {
                "input_path": str(inputs[size]),
                "output_path": str(work / f"out-{side}-{size}-{rep}.jsonl"),
                "batch_size": args.batch_size,
                "concurrency": args.concurrency,
                "base_url": emu.url,
                "api_key": emu.api_key,
            }

        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in FUNCTIONS}
        for rep in range(repeat):  # the sides alternate within each repetition: load drift hits them alike
            for side in FUNCTIONS:
                runs[side].append(runner.run(side, params(side, n, rep)))
        raw["runs"] = runs
        memory = {size: runner.run("operator", params("memory", size, 0)) for size in memory_ns}
        raw["memory_runs"] = memory

    tables, goals = _report(n, args, repeat, runs, memory, args.inline)
    path = publish_results(
        "embeddings",
        title="Embeddings throughput and memory",
        module=MODULE,
        argv=argv,
        tables=tables,
        raw=raw,
        results_dir=args.results_dir,
    )
    return {"tables": tables, "goals": goals, "raw": raw, "path": str(path)}


def _report(
    n: int,
    args: Any,
    repeat: int,
    runs: dict[str, list[dict[str, Any]]],
    memory: dict[int, dict[str, Any]],
    inline: bool,
) -> tuple[list[Table], list[Goal]]:
    requests = -(-n // args.batch_size)
    ideal = requests / args.concurrency * args.latency_ms / 1000.0
    walls = {side: median(r["wall_s"] for r in samples) for side, samples in runs.items()}
    table = Table(
        f"{n:,} texts, {args.batch_size} per request, {args.concurrency} in flight, {args.latency_ms:.0f} ms per "
        f"request, {args.dimensions} dimensions (ideal {ideal:.2f} s; median of {repeat})",
        ["client", "wall s", "texts/s", "x perf client wall", "CPU s", "peak RSS MiB", "errors"],
    )
    for side, samples in runs.items():
        table.add(
            LABELS[side],
            walls[side],
            ratio(n, walls[side]),
            ratio(walls[side], walls["perf_client"]),
            median(r["cpu_s"] for r in samples),
            median(r["peak_rss_mib"] for r in samples),
            sum(r["errors"] for r in samples),
        )
    table.notes.append("The operator also writes every vector to a JSONL file as it goes; the others keep them.")
    if inline:
        table.notes.append("--inline: CPU and RSS include the emulator (same process); only the walls are usable.")
    sizes = sorted(memory)
    mem = Table("The operator's memory against N (texts read from a JSONL file)", ["N", "wall s", "RSS growth MiB"])
    for size in sizes:
        mem.add(size, memory[size]["wall_s"], memory[size]["rss_growth_mib"])
    vs_perf = ratio(walls["operator"], walls["perf_client"]) or float("inf")
    vs_openai = ratio(walls["openai"], walls["operator"]) or 0.0
    small, large = memory[sizes[0]]["rss_growth_mib"], memory[sizes[-1]]["rss_growth_mib"]
    goals = [
        Goal("embeddings wall vs performance client", f"<= {GOAL_VS_PERF_CLIENT}x", f"{vs_perf:.2f}x", vs_perf <= 1.0),
        Goal("embeddings speed-up over AsyncOpenAI loop", f">= {GOAL_VS_OPENAI}x", f"{vs_openai:.2f}x", vs_openai >= 5),
        Goal(
            "embeddings memory flat in N (file input)",
            f"RSS growth at {sizes[-1]:,} within {GOAL_FLAT_MIB:.0f} MiB of {sizes[0]:,}",
            f"{small:.1f} -> {large:.1f} MiB",
            large - small <= GOAL_FLAT_MIB,
        ),
    ]
    return [table, mem, goals_table(goals, "Embeddings goals")], goals


if __name__ == "__main__":
    main()
