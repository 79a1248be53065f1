"""Rerank and classify throughput: the scoring operators vs ``baseten-performance-client`` ``rerank``/``classify``.

Method: as ``benchmarks.embeddings`` (its emulator world and texts): the emulator (in this process, on 127.0.0.1,
time scale 1) serves a BEI deployment that answers each request after 20 ms whatever its size. Each client runs in
a fresh child process that reads the same JSONL file of N texts and scores them 32 per request, 32 requests in
flight: ``BasetenRerankOperator``/``BasetenClassifyOperator`` (``execute``, JSONL output written as it runs,
resumable) and the performance client's ``rerank``/``classify`` (one call on the whole list, its character bound
raised so it packs 32 too, results kept in memory). Wall time and CPU seconds (all threads) are the child's own; the
emulator's CPU is the parent's and counts for nobody. The sides alternate within each repetition.

    python -m benchmarks.scoring            # N=20,000 x 3 repetitions
    python -m benchmarks.scoring --quick    # N=2,000, one repetition
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from benchmarks._common import (
    ChildRunner,
    Meter,
    Table,
    base_parser,
    median,
    parse_args,
    publish_results,
    ratio,
    run_as_child,
)
from benchmarks.embeddings import HOST, MODEL, _read_texts, bench_world, write_texts

MODULE = "benchmarks.scoring"
QUERY = "fast delivery and helpful support"


# --- children ----------------------------------------------------------------------------------------------------


def _operator(params: dict[str, Any], route: str) -> dict[str, Any]:
    import httpx_aiohttp  # noqa: F401  (imported before measuring, as the other client's imports are)

    import airflow_provider_baseten.hooks.baseten  # noqa: F401
    from airflow_provider_baseten.operators.scoring import BasetenClassifyOperator, BasetenRerankOperator

    common = {
        "task_id": f"bench_{route}",
        "model_id": MODEL,
        "input_path": params["input_path"],
        "output_path": params["output_path"],
        "batch_size": params["batch_size"],
        "max_chars_per_request": 1_000_000,
        "max_concurrency": params["concurrency"],
        "progress_interval": 3600,
    }
    operator = BasetenRerankOperator(query=QUERY, **common) if route == "rerank" else BasetenClassifyOperator(**common)
    with Meter() as meter:
        manifest = operator.execute({})
    return {**meter.as_dict(), "n": manifest["total"], "ok": manifest["succeeded"], "errors": manifest["failed"]}


def _perf_client(params: dict[str, Any], route: str) -> dict[str, Any]:
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
        if route == "rerank":
            answer = client.rerank(QUERY, texts, preference=preference)
            ok = len({item.index for item in answer.data})
        else:
            answer = client.classify(texts, preference=preference)
            ok = sum(1 for labels in answer.data if labels)
    return {**meter.as_dict(), "n": len(texts), "ok": ok, "errors": len(texts) - ok}


def child_operator_rerank(params: dict[str, Any]) -> dict[str, Any]:
    return _operator(params, "rerank")


def child_perf_rerank(params: dict[str, Any]) -> dict[str, Any]:
    return _perf_client(params, "rerank")


def child_operator_classify(params: dict[str, Any]) -> dict[str, Any]:
    return _operator(params, "classify")


def child_perf_classify(params: dict[str, Any]) -> dict[str, Any]:
    return _perf_client(params, "classify")


FUNCTIONS = {
    "operator_rerank": child_operator_rerank,
    "perf_rerank": child_perf_rerank,
    "operator_classify": child_operator_classify,
    "perf_classify": child_perf_classify,
}
LABELS = {
    "operator_rerank": "BasetenRerankOperator",
    "perf_rerank": "baseten-performance-client rerank",
    "operator_classify": "BasetenClassifyOperator",
    "perf_classify": "baseten-performance-client classify",
}


# --- main ------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=None, help="texts (default 20,000)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parse_args(parser, argv)
    if run_as_child(args, FUNCTIONS):
        return {}
    n = args.n or (2000 if args.quick else 20_000)
    repeat = args.repeat or (1 if args.quick else 3)

    from airflow_provider_baseten.emulator import Emulator

    work = Path(tempfile.mkdtemp(prefix="baseten-bench-scoring-"))
    inputs = write_texts(work / "texts.jsonl", n)
    raw: dict[str, Any] = {
        "n": n,
        "repeat": repeat,
        "batch_size": args.batch_size,
        "concurrency": args.concurrency,
        "latency_ms": args.latency_ms,
    }
    with Emulator(world=bench_world(args.latency_ms, 8), time_scale=1.0, port=0) as emu:
        runner = ChildRunner(
            MODULE, FUNCTIONS, env={"AIRFLOW_CONN_BASETEN_DEFAULT": emu.conn_uri()}, inline=args.inline
        )
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in FUNCTIONS}
        for rep in range(repeat):
            for side in FUNCTIONS:
                params = {
                    "input_path": str(inputs),
                    "output_path": str(work / f"out-{side}-{rep}.jsonl"),
                    "batch_size": args.batch_size,
                    "concurrency": args.concurrency,
                    "base_url": emu.url,
                    "api_key": emu.api_key,
                }
                runs[side].append(runner.run(side, params))
        raw["runs"] = runs

    tables = [_report(n, args, repeat, runs, args.inline)]
    path = publish_results(
        "scoring", title="Rerank and classify throughput", module=MODULE, argv=argv, tables=tables, raw=raw,
        results_dir=args.results_dir,
    )  # fmt: skip
    return {"tables": tables, "goals": [], "raw": raw, "path": str(path)}


def _report(n: int, args: Any, repeat: int, runs: dict[str, list[dict[str, Any]]], inline: bool) -> Table:
    requests = -(-n // args.batch_size)
    ideal = requests / args.concurrency * args.latency_ms / 1000.0
    table = Table(
        f"{n:,} texts, {args.batch_size} per request, {args.concurrency} in flight, {args.latency_ms:.0f} ms per "
        f"request (ideal {ideal:.2f} s; median of {repeat})",
        ["client", "wall s", "texts/s", "x perf client wall", "CPU s", "x perf client CPU", "errors"],
    )
    for side, samples in runs.items():
        peer = "perf_" + side.split("_", 1)[1] if side.startswith("operator_") else side
        wall, cpu = median(r["wall_s"] for r in samples), median(r["cpu_s"] for r in samples)
        peer_wall, peer_cpu = median(r["wall_s"] for r in runs[peer]), median(r["cpu_s"] for r in runs[peer])
        table.add(
            LABELS[side], wall, ratio(n, wall), ratio(wall, peer_wall), cpu, ratio(cpu, peer_cpu),
            sum(r["errors"] for r in samples),
        )  # fmt: skip
    table.notes.append("The operators also write every line to JSONL as they go (resumable); the client keeps them.")
    if inline:
        table.notes.append("--inline: CPU includes the emulator (same process); only the walls are usable.")
    return table


if __name__ == "__main__":
    main()
