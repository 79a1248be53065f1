"""What importing the provider adds to DAG parsing, over ``import airflow.sdk``, against the http and openai providers.

Method: one "zygote" child imports ``airflow.sdk`` (which a DAG file pays anyway), freezes its heap, then forks a
fresh process per measurement; each fork times ``importlib.import_module(name)`` and reads its RSS before and
after, so every sample starts from exactly the same state and nothing a previous import loaded is shared. Modules
are measured round-robin in a shuffled order per repetition (drift and neighbours' load hit every module alike);
medians over the repetitions are reported. A few ordinary fresh interpreters cross-check the fork method, and
``python -X importtime`` names the culprits for any module over its goal.

    python -m benchmarks.import_cost            # 9 repetitions, ~1 minute
    python -m benchmarks.import_cost --quick    # 2 repetitions, no cross-check
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import pkgutil
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._common import (
    REPO_ROOT,
    ChildRunner,
    Goal,
    Table,
    base_parser,
    current_rss,
    goals_table,
    median,
    parse_args,
    publish_results,
    ratio,
    run_as_child,
)

MODULE = "benchmarks.import_cost"
BASELINE = "airflow.sdk"
HTTP_PEER = "airflow.providers.http.operators.http"
OPENAI_PEER = "airflow.providers.openai.operators.openai"
PEERS = (HTTP_PEER, OPENAI_PEER)
NOTHING = "(fork only)"
GOAL_MS = 50.0
GOAL_FRACTION_OF_HTTP = 1 / 3
#: ``operators.baseten`` loads an operator's module when its name is first used: this row uses every name (a DAG
#: file importing every operator), the row above none, each submodule's row one area.
EVERY_OPERATOR = "airflow_provider_baseten.operators.baseten[*]"


def provider_modules() -> list[str]:
    """The public operator module, every operator submodule, and the hook, trigger and sensor modules."""
    import airflow_provider_baseten.operators as operators_pkg

    subs = sorted(
        f"airflow_provider_baseten.operators.{info.name}"
        for info in pkgutil.iter_modules(operators_pkg.__path__)
        if info.name != "baseten"
    )
    return [
        "airflow_provider_baseten.operators.baseten",
        EVERY_OPERATOR,
        *subs,
        "airflow_provider_baseten.hooks.baseten",
        "airflow_provider_baseten.triggers.baseten",
        "airflow_provider_baseten.sensors.baseten",
    ]


# --- children -----------------------------------------------------------------------------------------------------


def _measure_import(name: str) -> dict[str, Any]:
    rss_before = current_rss()
    modules_before = len(sys.modules)
    cpu_start = time.process_time()
    start = time.perf_counter()
    error = None
    if name != NOTHING:
        try:
            module = importlib.import_module(name.removesuffix("[*]"))
            if name.endswith("[*]"):
                for export in module.__all__:
                    getattr(module, export)
        except Exception as exc:  # reported, not raised: a broken module is a finding
            error = f"{type(exc).__name__}: {exc}"
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    return {
        "module": name,
        "ms": elapsed * 1000,
        "cpu_ms": cpu * 1000,
        "rss_mib": (current_rss() - rss_before) / (1024 * 1024),
        "new_modules": len(sys.modules) - modules_before,
        "error": error,
    }


def _forked(name: str) -> dict[str, Any]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the fresh process: measure, report through the pipe, leave without cleanup
        os.close(read_fd)
        try:
            payload = json.dumps(_measure_import(name)).encode()
        except BaseException as exc:  # never let the fork return into the zygote's loop
            payload = json.dumps({"module": name, "error": repr(exc)}).encode()
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(payload)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def child_zygote(params: dict[str, Any]) -> dict[str, Any]:
    """Import the baseline once, then fork one fresh process per (module, repetition)."""
    start = time.perf_counter()
    importlib.import_module(BASELINE)
    baseline_ms = (time.perf_counter() - start) * 1000
    gc.collect()
    gc.freeze()  # keep the forks from copying the baseline's heap when the collector walks it
    rng = random.Random(params.get("seed", 0))
    names = [NOTHING, *params["modules"]]
    samples = []
    for _ in range(params["repeat"]):
        order = names[:]
        rng.shuffle(order)
        samples += [_forked(name) for name in order]
    return {"baseline_ms": baseline_ms, "baseline_rss_mib": current_rss() / (1024 * 1024), "samples": samples}


def child_fresh(params: dict[str, Any]) -> dict[str, Any]:
    """The same measurement in an ordinary fresh interpreter (the cross-check of the fork method)."""
    importlib.import_module(BASELINE)
    return _measure_import(params["module"])


FUNCTIONS = {"zygote": child_zygote, "fresh": child_fresh}


# --- culprits ------------------------------------------------------------------------------------------------------


def importtime_culprits(module: str, env: dict[str, str], top: int = 12) -> list[tuple[str, float, float]]:
    """``(name, self ms, cumulative ms)`` of the heaviest imports ``module`` adds over the baseline (one run).

    ``-X importtime`` prints a module when it finishes, children first, indented by depth; everything after the
    baseline's own top-level line is what ``module`` added.
    """
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {BASELINE}; import {module}"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    rows = []
    after_baseline = False
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cumulative_us, raw_name = line[len("import time:") :].split("|", 2)
        name = raw_name.strip()
        depth = (len(raw_name) - 1 - len(raw_name.lstrip())) // 2
        if not after_baseline:
            after_baseline = name == BASELINE and depth == 0
            continue
        rows.append((name, int(self_us) / 1000, int(cumulative_us) / 1000, depth))
    heaviest = sorted((r for r in rows if r[3] <= 2 and r[0] != module), key=lambda r: r[2], reverse=True)[:top]
    return [((". " * depth) + name, self_ms, cumulative_ms) for name, self_ms, cumulative_ms, depth in heaviest]


# --- main ------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--fresh-checks", type=int, default=None, help="fresh interpreters per cross-checked module")
    parser.add_argument("--peers", default=",".join(PEERS), help="peer modules to compare with (the http one first)")
    args = parse_args(parser, argv)
    if run_as_child(args, FUNCTIONS):
        return {}
    repeat = args.repeat or (2 if args.quick else 7)
    fresh_checks = args.fresh_checks if args.fresh_checks is not None else (0 if args.quick else 1)

    ours = provider_modules()
    peers = [p for p in args.peers.split(",") if p]
    modules = [*ours, *peers]
    runner = ChildRunner(MODULE, FUNCTIONS)
    zygote = runner.run("zygote", {"modules": modules, "repeat": repeat, "seed": 7})
    by_module: dict[str, list[dict[str, Any]]] = {}
    for sample in zygote["samples"]:
        by_module.setdefault(sample["module"], []).append(sample)
    errors = {m: s[0]["error"] for m, s in by_module.items() if any(x.get("error") for x in s)}

    def med(name: str, key: str) -> float | None:
        return median(s.get(key) for s in by_module.get(name, []))

    fork_ms = med(NOTHING, "ms") or 0.0
    http_ms = med(HTTP_PEER, "ms")
    http_mib = med(HTTP_PEER, "rss_mib")
    table = Table(
        f"Import cost over `import {BASELINE}` (fresh forked process per sample, median of {repeat})",
        ["module", "extra ms", "CPU ms", "extra RSS MiB", "new modules", "ms / http's", "MiB / http's"],
    )
    goals: dict[str, Goal] = {}
    for name in modules:
        if name in errors:
            table.add(name, None, None, None, None, None, None)
            continue
        ms, mib = med(name, "ms"), med(name, "rss_mib")
        new_modules = med(name, "new_modules")
        cpu_ms = med(name, "cpu_ms")
        table.add(name, ms, cpu_ms, mib, int(new_modules or 0), ratio(ms, http_ms), ratio(mib, http_mib))
        if name in ours and ms is not None and http_ms is not None:
            limit = min(GOAL_MS, http_ms * GOAL_FRACTION_OF_HTTP)
            goals[name] = Goal(
                f"import {name.removeprefix('airflow_provider_baseten.')}",
                f"< {GOAL_MS:.0f} ms and < 1/3 of http's ({limit:.0f} ms)",
                f"{ms:.1f} ms ({ms / http_ms:.2f}x http's)",
                ms < limit,
            )
    table.notes.append(
        f"baseline `import {BASELINE}` took {zygote['baseline_ms']:.0f} ms and "
        f"{zygote['baseline_rss_mib']:.0f} MiB in the zygote; a fork that imports nothing measures {fork_ms:.2f} ms."
    )
    table.notes += [f"{name} failed to import: {error}" for name, error in errors.items()]
    tables = [table]

    raw: dict[str, Any] = {"zygote": zygote, "repeat": repeat}
    if fresh_checks:
        check = Table(
            f"Cross-check: fresh interpreters, median of {fresh_checks}",
            ["module", "extra ms (fresh)", "extra ms (fork)", "extra MiB (fresh)", "extra MiB (fork)"],
        )
        fresh: dict[str, list[dict[str, Any]]] = {}
        for _ in range(fresh_checks):
            for name in (ours[0], HTTP_PEER):
                fresh.setdefault(name, []).append(runner.run("fresh", {"module": name}))
        for name, samples in fresh.items():
            check.add(
                name,
                median(s["ms"] for s in samples),
                med(name, "ms"),
                median(s["rss_mib"] for s in samples),
                med(name, "rss_mib"),
            )
        tables.append(check)
        raw["fresh"] = fresh

    if not args.quick:
        # One trace of the public module covers every submodule it imports (a trace per module costs minutes).
        culprit_table = Table(
            f"What `import {ours[0]}` adds (`python -X importtime`, one run, indented by depth, heaviest first)",
            ["import", "self ms", "cumulative ms"],
        )
        for culprit, self_ms, cumulative_ms in importtime_culprits(ours[0], runner.child_env()):
            culprit_table.add(culprit, self_ms, cumulative_ms)
        culprit_table.notes.append("One run, so noisier than the medians above; it shows where the time goes.")
        tables.append(culprit_table)

    tables.append(goals_table(list(goals.values()), "Import goals"))
    path = publish_results(
        "import_cost",
        title="Import cost (DAG parsing)",
        module=MODULE,
        argv=argv,
        tables=tables,
        raw=raw,
        results_dir=args.results_dir,
    )
    return {"tables": tables, "goals": list(goals.values()), "errors": errors, "path": str(Path(path))}


if __name__ == "__main__":
    main()
