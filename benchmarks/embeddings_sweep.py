"""Embeddings packing sweep: which ``batch_size`` x ``max_chars_per_request`` the operator should default to.

Method: the emulator (in this process, on 127.0.0.1, time scale 1) serves two BEI deployments whose requests take
20 ms plus a per-input cost (``--per-input-ms``, default 0.05 and 0.2 ms: a small and a large embedding model),
with room for 1,024 requests at once. The texts are N JSONL records of 20 to 2,000 characters, log-uniform (mean
about 430: titles, reviews and chunked documents mixed), so either bound may close a pack. One child
process runs ``BasetenEmbeddingsOperator.execute`` for every cell of the grid against both deployments, 32 requests
in flight, JSONL output, the cells in a shuffled order in each repetition so load drift spreads over the grid.
Wall and CPU seconds are the child's own per run (medians over the repetitions).

The choice is by client CPU, the figure a shared machine does not blur (wall times are printed beside it; on a
quiet machine they should agree): for each cell, its worst ratio to the cheapest cell over both deployments; among
the cells within 10% of the best such ratio, the one with the smallest requests (``max_chars_per_request``, then
``batch_size``): a failed request re-sends fewer texts and a request's latency stays further from the read timeout.

    python -m benchmarks.embeddings_sweep            # N=20,000, 5 x 4 cells x 2 deployments x 7 repetitions
    python -m benchmarks.embeddings_sweep --quick    # N=1,000, 2 x 2 cells, one repetition
"""

from __future__ import annotations

import random
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
    run_as_child,
)

MODULE = "benchmarks.embeddings_sweep"
LATENCY_MS = 20.0
DIMENSIONS = 64
CONCURRENCY = 32
TOLERANCE = 0.10
BATCH_SIZES = (32, 64, 128, 256, 512)
MAX_CHARS = (16_000, 32_000, 64_000, 128_000)
QUICK_BATCH_SIZES = (32, 128)
QUICK_MAX_CHARS = (32_000, 64_000)


def model_name(per_input_ms: float) -> str:
    return "sweep" + f"{per_input_ms:g}".replace(".", "p")


def sweep_world(per_input_ms: list[float]) -> Any:
    from airflow_provider_baseten.emulator.world import DeploymentSpec, ModelSpec, World

    world = World()
    room = {"min_replicas": 1, "predict_concurrency": 1024}
    for cost in per_input_ms:
        behaviour = {"kind": "bei", "dimensions": DIMENSIONS, "base_ms": LATENCY_MS, "per_input_ms": cost}
        name = model_name(cost)
        world.add(ModelSpec(name, behaviour, deployments=[DeploymentSpec(f"{name}prod", **room)]))
    return world


def write_documents(path: Path, n: int) -> Path:
    """``n`` JSONL records of 20 to 2,000 characters, log-uniform, in a fixed order (a golden-ratio sequence)."""
    import json

    words = ["the", "delivery", "was", "fast", "and", "the", "support", "team", "was", "helpful", "would"]
    with path.open("w") as out:
        for i in range(n):
            length = int(20 * 100 ** ((i * 0.6180339887) % 1.0))
            text = f"document {i}:"
            while len(text) < length:
                text += " " + words[(i + len(text)) % len(words)]
            out.write(json.dumps({"id": f"doc-{i:06d}", "text": text[:length]}) + "\n")
    return path


# --- the child ---------------------------------------------------------------------------------------------------


def child_grid(params: dict[str, Any]) -> dict[str, Any]:
    """Every cell of ``params["cells"]``, in order, in this one process (imports paid once, before the first)."""
    import httpx_aiohttp  # noqa: F401  (imported before measuring)

    import airflow_provider_baseten.hooks.baseten  # noqa: F401
    from airflow_provider_baseten.operators.embeddings import BasetenEmbeddingsOperator

    def embed(cell: dict[str, Any], input_path: str, output: Path) -> dict[str, Any]:
        for leftover in (output, output.with_name(output.name + ".inflight")):
            leftover.unlink(missing_ok=True)
        operator = BasetenEmbeddingsOperator(
            task_id="sweep_embed",
            model_id=cell["model"],
            input_path=input_path,
            output_path=str(output),
            batch_size=cell["batch_size"],
            max_chars_per_request=cell["max_chars"],
            max_concurrency=CONCURRENCY,
            progress_interval=3600,
        )
        return operator.execute({})

    work = Path(params["work"])
    embed(
        params["cells"][0], params["warmup_path"], work / "warmup-out.jsonl"
    )  # lazy imports, TLS context: not measured
    results = []
    for cell in params["cells"]:
        output = work / f"out-{cell['model']}-{cell['batch_size']}-{cell['max_chars']}.jsonl"
        with Meter() as meter:
            manifest = embed(cell, params["input_path"], output)
        results.append({**cell, **meter.as_dict(), "ok": manifest["succeeded"], "errors": manifest["failed"]})
        output.unlink(missing_ok=True)
    return {"results": results}


FUNCTIONS = {"grid": child_grid}


# --- main ------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=None, help="texts (default 20,000)")
    parser.add_argument("--per-input-ms", default="0.05,0.2", help="comma-separated per-input costs (ms)")
    args = parse_args(parser, argv)
    if run_as_child(args, FUNCTIONS):
        return {}
    n = args.n or (1000 if args.quick else 20_000)
    repeat = args.repeat or (1 if args.quick else 7)
    costs = [float(x) for x in args.per_input_ms.split(",")]
    sizes = QUICK_BATCH_SIZES if args.quick else BATCH_SIZES
    chars = QUICK_MAX_CHARS if args.quick else MAX_CHARS

    from airflow_provider_baseten.emulator import Emulator

    work = Path(tempfile.mkdtemp(prefix="baseten-bench-embeddings-sweep-"))
    input_path = write_documents(work / "documents.jsonl", n)
    warmup_path = write_documents(work / "warmup.jsonl", 256)
    cells = [
        {"model": model_name(cost), "per_input_ms": cost, "batch_size": size, "max_chars": limit}
        for cost in costs
        for size in sizes
        for limit in chars
    ]
    shuffle = random.Random(12)
    samples: list[dict[str, Any]] = []
    with Emulator(world=sweep_world(costs), time_scale=1.0, port=0) as emu:
        runner = ChildRunner(
            MODULE, FUNCTIONS, env={"AIRFLOW_CONN_BASETEN_DEFAULT": emu.conn_uri()}, inline=args.inline
        )
        for _ in range(repeat):
            order = cells[:]
            shuffle.shuffle(order)
            params = {"cells": order, "input_path": str(input_path), "warmup_path": str(warmup_path), "work": str(work)}
            out = runner.run("grid", params)
            samples += out["results"]
    tables, goals, choice = _report(n, costs, sizes, chars, repeat, samples, args.inline)
    raw = {"n": n, "repeat": repeat, "per_input_ms": costs, "samples": samples, "choice": choice}
    path = publish_results(
        "embeddings_sweep",
        title="Embeddings packing sweep (batch_size x max_chars_per_request)",
        module=MODULE,
        argv=argv,
        tables=tables,
        raw=raw,
        results_dir=args.results_dir,
    )
    return {"tables": tables, "goals": goals, "raw": raw, "choice": choice, "path": str(path)}


def _report(
    n: int,
    costs: list[float],
    sizes: tuple[int, ...],
    chars: tuple[int, ...],
    repeat: int,
    samples: list[dict[str, Any]],
    inline: bool,
) -> tuple[list[Table], list[Goal], dict[str, Any]]:
    from airflow_provider_baseten.operators.embeddings import DEFAULT_BATCH_SIZE, DEFAULT_MAX_CHARS

    def cell_of(sample: dict[str, Any]) -> tuple[float, int, int]:
        return sample["per_input_ms"], sample["batch_size"], sample["max_chars"]

    walls: dict[tuple[float, int, int], float] = {}
    cpus: dict[tuple[float, int, int], float] = {}
    for key in {cell_of(sample) for sample in samples}:
        mine = [sample for sample in samples if cell_of(sample) == key]
        walls[key] = median(sample["wall_s"] for sample in mine) or 0.0
        cpus[key] = median(sample["cpu_s"] for sample in mine) or 0.0
    errors = sum(sample["errors"] for sample in samples)
    tables = []
    for cost in costs:
        table = Table(
            f"{n:,} texts of 20-2,000 characters, {CONCURRENCY} in flight, {LATENCY_MS:.0f} ms + {cost:g} ms per "
            f"input per request: wall s (client CPU s), median of {repeat}",
            ["batch_size", *(f"max_chars {limit:,}" for limit in chars)],
        )
        for size in sizes:
            table.add(size, *(f"{walls[(cost, size, limit)]:.2f} ({cpus[(cost, size, limit)]:.2f})" for limit in chars))
        if inline:
            table.notes.append("--inline: the emulator shares the process; only the shape of the table is usable.")
        tables.append(table)
    grid = [(size, limit) for size in sizes for limit in chars]
    fastest = {cost: min(walls[(cost, *cell)] for cell in grid) for cost in costs}
    cheapest = {cost: min(cpus[(cost, *cell)] for cell in grid) for cost in costs}
    wall_ratio = {cell: max(walls[(cost, *cell)] / fastest[cost] for cost in costs) for cell in grid}
    cpu_ratio = {cell: max(cpus[(cost, *cell)] / cheapest[cost] for cost in costs) for cell in grid}
    floor = min(cpu_ratio.values())
    close = [cell for cell, value in cpu_ratio.items() if value <= floor + TOLERANCE]
    chosen = min(close, key=lambda cell: (cell[1], cell[0]))
    current = (DEFAULT_BATCH_SIZE, DEFAULT_MAX_CHARS)
    summary = Table(
        "The choice: worst ratio to the cheapest (CPU) and the fastest (wall) cell over both deployments",
        ["cell", "batch_size", "max_chars", "CPU ratio", "wall ratio", *(f"CPU s at {cost:g} ms" for cost in costs)],
    )
    rows = [("chosen", chosen)]
    if current in cpu_ratio and current != chosen:
        rows.append(("current default", current))
    rows.append(("cheapest", min(cpu_ratio, key=lambda cell: cpu_ratio[cell])))
    for label, (size, limit) in rows:
        cell = (size, limit)
        summary.add(label, size, limit, cpu_ratio[cell], wall_ratio[cell], *(cpus[(cost, *cell)] for cost in costs))
    summary.notes.append(
        f"Chosen: among the cells within {TOLERANCE:.0%} of the best CPU ratio, the smallest requests "
        f"(max_chars_per_request, then batch_size). Errors in all runs: {errors}."
    )
    tables.append(summary)
    choice = {"batch_size": chosen[0], "max_chars": chosen[1], "cpu_ratio": cpu_ratio[chosen]}
    goals = [
        Goal(
            "embeddings defaults by measurement",
            f"defaults within {TOLERANCE:.0%} of the cheapest packing",
            f"{current[0]} x {current[1]:,}: "
            + (f"{cpu_ratio[current]:.2f}" if current in cpu_ratio else "not in the grid"),
            current in cpu_ratio and cpu_ratio[current] <= floor + TOLERANCE,
        ),
    ]
    tables.append(goals_table(goals, "Embeddings sweep goals"))
    return tables, goals, choice


if __name__ == "__main__":
    main()
