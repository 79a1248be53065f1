"""Emulator throughput: simple predicts per second through ``python -m airflow_provider_baseten.emulator``, by ``wrk``.

Method: the emulator runs as its own process (as ``make demo`` runs it), serving the default world. ``wrk`` (Debian's
package) sends ``POST /production/predict`` with ``Host: model-echo01.api.baseten.co`` and an ``Api-Key`` header over
loopback on keep-alive connections, one wrk thread (the machine has two cores: one for wrk, one for the emulator).
Each configuration runs ``--repeat`` times; the table shows medians. Latency percentiles are wrk's. Startup is the
wall time from spawning the process to its first answered request. The emulator's own counters confirm every
request reached the model and none failed.

    python -m benchmarks.emulator_throughput            # 1, 16 and 64 connections, 10 s each, 3 repetitions
    python -m benchmarks.emulator_throughput --quick    # 16 connections, 3 s, once (the smoke test's mode)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks._common import (
    RESULTS_DIR,
    BenchError,
    Goal,
    Table,
    command_line,
    goals_table,
    median,
    write_results,
)

MODULE = "benchmarks.emulator_throughput"
GOAL_RPS = 2000.0
GOAL_STARTUP_S = 2.0
API_KEY = "emulator-demo-key"
HOST = "model-echo01.api.baseten.co"
RESULT = re.compile(r"^WRK_RESULT (\S+) (\S+) (\S+) (\S+) (\S+) (\S+)$", re.MULTILINE)

LUA = f"""
wrk.method = "POST"
wrk.body = '{{"text": "The emulator is never the bottleneck."}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Host"] = "{HOST}"
wrk.headers["Authorization"] = "Api-Key {API_KEY}"

done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status
    + summary.errors.timeout
  io.write(string.format("WRK_RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.mean, errors))
end
"""


@contextmanager
def emulator_process() -> Iterator[tuple[str, float]]:
    """The emulator in its own process on a free port: yields its URL and the startup time (spawn to first answer)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_baseten.emulator", "--port", "0", "--api-key", API_KEY],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        url = None
        assert proc.stdout is not None
        for line in proc.stdout:
            found = re.search(r"Baseten emulator on (http://\S+)", line)
            if found:
                url = found.group(1)
            if line.startswith("ready"):
                break
        if url is None:
            raise BenchError(f"the emulator did not start (exit code {proc.poll()})")
        _predict(url)
        yield url, time.monotonic() - started
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _predict(url: str) -> Any:
    request = urllib.request.Request(
        f"{url}/production/predict",
        data=b'{"text": "hello"}',
        headers={"Host": HOST, "Authorization": f"Api-Key {API_KEY}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _admin(url: str, path: str, method: str = "GET") -> Any:
    request = urllib.request.Request(f"{url}/_emulator/{path}", method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def run_wrk(url: str, script: Path, *, connections: int, seconds: int, threads: int = 1) -> dict[str, float]:
    """One wrk run: requests/s, p50/p99/mean latency (ms), errors, and what the emulator itself counted."""
    _admin(url, "reset", "POST")
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url + "/production/predict",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    found = RESULT.search(out)
    if found is None:
        raise BenchError(f"unexpected wrk output:\n{out}")
    requests, duration_us, p50, p99, mean, errors = (float(x) for x in found.groups())
    counters = _admin(url, "counters")
    return {
        "requests": requests,
        "rps": requests / (duration_us / 1e6),
        "p50_ms": p50 / 1000,
        "p99_ms": p99 / 1000,
        "mean_ms": mean / 1000,
        "errors": errors,
        "served": counters["by_status"].get("200", 0),
        "model_runs": counters["model_runs"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="16 connections for 3 s, once (the smoke test's mode)")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions per configuration (medians reported)")
    parser.add_argument("--seconds", type=int, default=None, help="duration of each wrk run")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed (Debian: apt-get install -y wrk)")
    connections = [16] if args.quick else [1, 16, 64]
    repeat = args.repeat or (1 if args.quick else 3)
    seconds = args.seconds or (3 if args.quick else 10)

    samples: dict[int, list[dict[str, float]]] = {c: [] for c in connections}
    with tempfile.TemporaryDirectory() as tmp, emulator_process() as (url, startup):
        script = Path(tmp) / "predict.lua"
        script.write_text(LUA)
        run_wrk(url, script, connections=16, seconds=1)  # warm-up
        for _ in range(repeat):
            for count in connections:
                samples[count].append(run_wrk(url, script, connections=count, seconds=seconds))

    table = Table(
        f"Emulator throughput: POST /production/predict on echo01 (wrk, 1 thread, {seconds} s x {repeat}, medians)",
        ["connections", "req/s", "p50 (ms)", "p99 (ms)", "mean (ms)", "wrk errors", "non-200 or missed"],
    )
    for count, runs in samples.items():
        missed = sum(r["requests"] - r["served"] for r in runs)
        table.add(
            count,
            round(median(r["rps"] for r in runs) or 0),
            median(r["p50_ms"] for r in runs),
            median(r["p99_ms"] for r in runs),
            median(r["mean_ms"] for r in runs),
            int(sum(r["errors"] for r in runs)),
            int(max(0, missed)),
        )
    best = max(median(r["rps"] for r in runs) or 0 for runs in samples.values())
    goals = [
        Goal("simple predicts per second", f">= {GOAL_RPS:,.0f} req/s", f"{best:,.0f} req/s", best >= GOAL_RPS),
        Goal("startup, spawn to first answer", f"< {GOAL_STARTUP_S:g} s", f"{startup:.2f} s", startup < GOAL_STARTUP_S),
    ]
    tables = [table, goals_table(goals)]
    for item in tables:
        item.print()
    print(f"BENCH_SUMMARY {json.dumps({'rps': best, 'startup_s': startup})}", flush=True)
    if not args.quick:
        path = write_results(
            "emulator_throughput",
            title="Emulator throughput",
            command=command_line(MODULE, argv),
            tables=tables,
            raw={"samples": samples, "startup_s": startup},
            method=(__doc__ or "").split("\n\n")[1],
            results_dir=args.results_dir,
        )
        print(f"results: {path}")
    return 0 if all(goal.met for goal in goals) or args.quick else 1


if __name__ == "__main__":
    raise SystemExit(main())
