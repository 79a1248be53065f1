"""The quick mode of each benchmark (part of ``make test``): it runs end to end and measures what it claims.

Assertions are on behaviour (tables with the expected rows, every request answered, no 429 reaching a Baseten
trigger), never on timing: figures on a shared CI machine mean nothing. ``--inline`` runs the measured sides in
this process (no child start-up), which is the same code path minus the fresh process.
"""

from __future__ import annotations

import pstats
from pathlib import Path

import pytest

from benchmarks import async_batch, batch_predict, embeddings, import_cost, run_all, scoring, trigger_fanout
from benchmarks._common import Goal

pytestmark = pytest.mark.timeout(180)


def test_trigger_fanout_quick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    n = 30
    monkeypatch.setenv(trigger_fanout.PROFILE_ENV, str(tmp_path / "fan"))
    out = trigger_fanout.main(["--quick", "--inline", "--ns", str(n), "--results-dir", str(tmp_path)])

    cost, detection = out["tables"][0], out["tables"][1]
    assert cost.column("trigger") == ["BasetenAsyncRequestTrigger", "HttpSensorTrigger"]
    assert detection.column("fired") == [f"{n}/{n}", f"{n}/{n}"]
    for run in out["results"][n]["baseten"]:
        assert run["http_429"] == 0  # the shared poll budget kept every poll under the emulator's limit
        assert run["events"] == {"success": n}  # so no 429 (or anything else) reached a trigger
        assert (run["unfired"], run["errors"]) == (0, [])
        assert run["status_requests"] >= n  # every trigger polled at least once
        assert run["delay_p99"] is not None
    for run in out["results"][n]["http"]:
        assert run["fired"] == n
    # The transport floor ran beside them at the goal's N and answered every request, in its own table.
    assert [(run["fired"], run["unfired"]) for run in out["results"][n]["floor"]] == [(n, 0)]
    floor = next(t for t in out["tables"] if t.title.startswith("CPU per status request"))
    assert floor.column("poller")[-1] == trigger_fanout.LABELS["floor"]
    assert (tmp_path / "trigger_fanout.png").stat().st_size > 10_000
    assert "Fan-out goals" in (tmp_path / "trigger_fanout.md").read_text()
    # BENCH_FANOUT_PROFILE: one cProfile per measured child, which shows where that side's CPU went.
    profiles = {path.name.split(".")[1]: path for path in tmp_path.glob(f"fan.*.{n}.*")}
    assert sorted(profiles) == ["baseten", "floor", "http"]
    functions = {name for _, _, name in pstats.Stats(str(profiles["baseten"])).stats}
    assert "wait_async" in functions


def test_async_batch_quick(tmp_path: Path) -> None:
    n = 60
    m = 120  # more than the cap + burst (60) fits in one second: unpaced submits would show in the peak
    argv = ["--quick", "--inline", "--n", str(n), "--time-scale", "16", "--poll-interval", "5", "--submits", str(m)]
    out = async_batch.main([*argv, "--results-dir", str(tmp_path)])

    table = out["tables"][0]
    assert table.column("waiter") == [
        "1 BasetenAsyncBatchTrigger",
        "1 BasetenAsyncBatchTrigger, webhook_outputs",
        "N BasetenAsyncRequestTrigger",
    ]
    [batch], [hooked], [single] = (out["results"][side] for side in ("batch", "webhook", "single"))
    for run in (batch, hooked):
        assert run["events"] == {"done": 1}  # one event for the whole batch
        assert run["counts"]["SUCCEEDED"] == n
    assert single["events"] == {"success": n}
    # Every output reached the receiver process, and the trigger ended those requests from the stored files.
    assert hooked["webhooks_delivered"] == n
    assert hooked["status_requests"] <= n // 4, hooked["status_requests"]
    assert hooked["receiver_cpu_s"] > 0  # the receiver's own process, measured apart from the trigger's
    for run in (batch, hooked, single):
        assert run["finished"] == {"SUCCEEDED": n}
        assert run["http_429"] == 0  # the shared status budget kept both sides under the emulator's limit
        assert run["detection_s"] is not None
    assert batch["queue_requests"] >= 1  # the batch trigger read the deployment's queue depth
    [submit] = out["submits"]
    assert submit["deferred"]  # the operator's own execute ran its submit phase up to the defer
    assert (submit["accepted_inputs"], submit["accepted_per_input"], submit["http_429"]) == (m, [1], 0)
    # Under Baseten's 200 submits/s on the emulator's (wall) clock. Not the bucket's own pace plus burst (60 here):
    # arrivals bunch after a stall of a busy machine (67 in one full run); that pace is tested on an injected clock
    # (tests/unit/operators/test_async_batch.py) and reported by the benchmark's goals.
    assert submit["peak_per_s"] <= 200
    assert out["tables"][1].column("submitter") == ["BasetenAsyncBatchOperator"]
    assert "Async batch goals" in (tmp_path / "async_batch.md").read_text()


def test_meter_counts_only_the_peak_inside_its_block() -> None:
    from benchmarks._common import MIB, Meter

    before = bytearray(96 * MIB)  # a peak reached before the measurement (imports, the go message)...
    before[::4096] = b"x" * len(before[::4096])  # (touched, so resident)
    del before
    with Meter() as meter:
        inside = bytearray(16 * MIB)
        inside[::4096] = b"x" * len(inside[::4096])
        del inside
    # ...is not the block's: it grew by about 16 MiB, not by the 96 MiB peak before it.
    assert 12 <= meter.as_dict()["rss_growth_mib"] < 48


def test_async_batch_second_rates_finds_a_peak_across_whole_seconds() -> None:
    # 10 in [0, 1), [1.5, 2) and [2, 3): the whole windows hold 10 each, yet [1.5, 2.5) holds 10 + 5 = 15.
    times = [i / 10 for i in range(10)] + [1.5 + i / 20 for i in range(10)] + [2.0 + i / 10 for i in range(10)]
    held, peak = async_batch.second_rates(times)
    assert (held, peak) == (10, 15)
    assert async_batch.second_rates([]) == (None, 0)


def test_batch_predict_quick(tmp_path: Path) -> None:
    argv = ["--quick", "--inline", "--n", "200", "--memory-ns", "50,120", "--http-hook-subset", "5"]
    out = batch_predict.main([*argv, "--results-dir", str(tmp_path)])

    latency, floors, memory = out["tables"][:3]
    assert [row[0] for row in latency.rows][:2] == [
        "BasetenBatchPredictOperator",
        "baseten-performance-client batch_post",
    ]
    assert latency.rows[2][0].startswith("HttpHook.run loop")
    assert len(memory.rows) == 4
    raw = out["raw"]
    for side in ("operator", "perf_client"):
        for run in raw["latency_runs"][side]:
            assert (run["n"], run["ok"], run["errors"]) == (200, 200, 0)
        for size, runs in raw["zero_latency_runs"][side].items():
            assert all((r["ok"], r["errors"]) == (size, 0) for r in runs)
    assert [(r["ok"], r["errors"]) for r in raw["latency_runs"]["http_hook"]] == [(5, 0)]
    # The floors beside them: a bare aiohttp session and bare asyncio streams, each answering every input.
    assert floors.column("sender")[2:] == list(batch_predict.FLOORS.values())
    for side in batch_predict.FLOORS:
        assert [(r["n"], r["ok"], r["errors"]) for r in raw["floor_runs"][side]] == [(200, 200, 0)], side
    assert {goal.name for goal in out["goals"]} >= {"batch efficiency (ideal / actual)"}


def test_scoring_quick(tmp_path: Path) -> None:
    out = scoring.main(["--quick", "--inline", "--n", "200", "--results-dir", str(tmp_path)])

    assert out["tables"][0].column("client") == [
        "BasetenRerankOperator",
        "baseten-performance-client rerank",
        "BasetenClassifyOperator",
        "baseten-performance-client classify",
    ]
    for side, runs in out["raw"]["runs"].items():
        assert [(r["n"], r["ok"], r["errors"]) for r in runs] == [(200, 200, 0)], side
    assert "Rerank and classify throughput" in (tmp_path / "scoring.md").read_text()


def test_embeddings_quick(tmp_path: Path) -> None:
    argv = ["--quick", "--inline", "--n", "300", "--batch-size", "32", "--memory-ns", "100,300"]
    out = embeddings.main([*argv, "--results-dir", str(tmp_path)])

    speed, memory = out["tables"][0], out["tables"][1]
    assert speed.column("client") == [
        "BasetenEmbeddingsOperator",
        "baseten-performance-client embed",
        "AsyncOpenAI embeddings.create loop",
    ]
    for side, runs in out["raw"]["runs"].items():
        assert [(r["n"], r["ok"], r["errors"]) for r in runs] == [(300, 300, 0)], side
    assert memory.column("N") == ["100", "300"]
    assert {goal.name for goal in out["goals"]} >= {"embeddings wall vs performance client"}
    assert "Embeddings goals" in (tmp_path / "embeddings.md").read_text()


def test_import_cost_quick(tmp_path: Path) -> None:
    out = import_cost.main(
        ["--quick", "--repeat", "1", "--peers", import_cost.HTTP_PEER, "--results-dir", str(tmp_path)]
    )

    assert out["errors"] == {}  # every provider module imports in a fresh process
    modules = out["tables"][0].column("module")
    assert modules[0] == "airflow_provider_baseten.operators.baseten"
    assert {"airflow_provider_baseten.hooks.baseten", "airflow_provider_baseten.triggers.baseten"} <= set(modules)
    assert modules[-1] == import_cost.HTTP_PEER
    assert len(out["goals"]) == len(modules) - 1


def test_readme_results_section_is_replaced_between_markers(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "summary.md").write_text("### Summary\n\nall met (an older run_all)\n")
    goals = "| goal | target | measured | met |\n| --- | --- | --- | --- |\n| CPU per poll | <= 0.5 ms | {} | {} |\n"
    (results / "trigger_fanout.md").write_text(
        "### Triggerer fan-out\n\nMeasured 2026-12-03 08:10 UTC; 2 cores.\n\nPlot: `trigger_fanout.png`.\n\n"
        + goals.format("0.48 ms", "met")
        + "\n- a note\n"
    )
    (results / "async_batch.md").write_text(
        "### Async batch\n\nMeasured 2026-12-02 22:23 UTC.\n\n" + goals.format("x", "no")
    )
    (results / "batch_predict.md").write_text(
        "### Batch predict\n\nMeasured 2026-12-04 23:41 UTC.\n\n| goal | target | measured | met |\n"
        "| --- | --- | --- | --- |\n| batch efficiency (ideal / actual) | >= 0.95 | 0.941 | **missed** |\n"
    )
    readme = tmp_path / "README.md"
    readme.write_text(f"# Benchmarks\n\nmethod\n\n{run_all.BEGIN}\nold figures\n{run_all.END}\n\nfooter\n")

    assert run_all.update_readme(results, readme)

    text = readme.read_text()
    assert "old figures" not in text
    # The summary is every benchmark's latest goals with its own date, not an older run_all's summary.md.
    assert "all met" not in text
    rows = " ".join(text.split())
    assert "| trigger_fanout | 2026-12-03 08:10 | CPU per poll | <= 0.5 ms | | 0.48 ms | met |" in rows
    assert "| async_batch | 2026-12-02 22:23 | CPU per poll | <= 0.5 ms | | x | no |" in rows
    # A goal an issue came with a figure for shows that figure beside today's.
    assert "| batch efficiency (ideal / actual) | >= 0.95 | 0.84 (issue 12) | 0.941 | **missed** |" in rows
    assert "![trigger_fanout](results/trigger_fanout.png)" in text
    assert text.startswith("# Benchmarks\n\nmethod")
    assert text.endswith("footer\n")


def test_the_run_table_shows_each_goal_beside_its_figure_when_filed() -> None:
    goals = [Goal("batch efficiency (ideal / actual)", ">= 0.95", "0.941", False), Goal("new goal", "0", "0", True)]

    table = run_all.filed_goals_table(goals, "All goals of this run")

    assert list(table.columns) == ["goal", "target", "when filed", "measured", "met"]
    assert table.rows == [
        ["batch efficiency (ideal / actual)", ">= 0.95", "0.84 (issue 12)", "0.941", "**missed**"],
        ["new goal", "0", "", "0", "met"],
    ]
