"""Run the benchmarks of issue 8 in one go (``make bench``) and refresh the results section of ``benchmarks/README.md``.

    python -m benchmarks.run_all                      # every benchmark in BENCHMARKS below
    python -m benchmarks.run_all --quick              # the smoke sizes
    python -m benchmarks.run_all --only import_cost   # one of them
    python -m benchmarks.run_all --with-emulator      # also benchmarks.emulator_throughput (needs wrk)

Each benchmark writes ``results/<name>.md`` (its tables, machine and command) and ``results/<name>.json`` (every
sample); this script adds ``results/summary.md`` (every goal of this run, with durations) and copies the tables into
the README between the ``results`` markers, under a summary of every goal from each benchmark's latest results file,
so the README always shows the latest run of each.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import (
    BENCH_DIR,
    GOAL_COLUMNS,
    RESULTS_DIR,
    Goal,
    Table,
    default_results_dir,
    goals_table,
    machine_info,
    machine_line,
)

BENCHMARKS = (
    "import_cost",
    "batch_predict",
    "embeddings",
    "scoring",
    "trigger_fanout",
    "triggerer_convergence",
    "async_batch",
)
ORDER = (*BENCHMARKS, "embeddings_sweep", "emulator_throughput")
README = BENCH_DIR / "README.md"
#: Each goal's figure when its issue was filed (issue 12's table), printed beside the measured one; a goal that
#: came with no figure of its own has none.
WHEN_FILED: dict[str, str] = {
    "batch efficiency (ideal / actual)": "0.84 (issue 12)",
    "throughput vs performance client": "0.89x (issue 12)",
    "requests per CPU-second at 0 ms vs performance client": "0.14x (issue 12)",
    "embeddings wall vs performance client": "not possible (issue 12)",
    "embeddings speed-up over AsyncOpenAI loop": "not possible (issue 12)",
    "embeddings memory flat in N (file input)": "not possible (issue 12)",
    "CPU per status request at N=1,000 (interval per N, compressed)": "1.38 ms (issue 12)",
    "CPU at N=1,000 (interval per N, compressed)": "0.46-0.70x (issue 12)",
}
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def run(names: list[str], quick: bool, results_dir: Path) -> tuple[list[Goal], dict[str, float]]:
    goals: list[Goal] = []
    durations: dict[str, float] = {}
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        argv = ["--results-dir", str(results_dir)] + (["--quick"] if quick else [])
        print(f"\n===== {name} ({' '.join(argv)})", flush=True)
        start = time.monotonic()
        outcome: Any = module.main(argv)
        durations[name] = time.monotonic() - start
        if isinstance(outcome, dict):
            goals += outcome.get("goals", [])
        print(f"===== {name} took {durations[name]:.0f} s", flush=True)
    return goals, durations


_GOAL_HEADER = re.compile(r"^\|" + "".join(rf"\s*{column}\s*\|" for column in GOAL_COLUMNS) + "$")
_MEASURED = re.compile(r"^Measured (\d{4}-\d\d-\d\d \d\d:\d\d) UTC")


def latest_goals(text: str) -> tuple[str | None, list[list[str]]]:
    """From one results file: when it was measured and the rows of its goal tables (goal, target, measured, met)."""
    when, rows, in_goals = None, [], False
    for line in text.splitlines():
        line = line.strip()
        found = _MEASURED.match(line)
        if found and when is None:
            when = found.group(1)
        if _GOAL_HEADER.match(line):
            in_goals = True
        elif in_goals and line.startswith("|") and not set(line) <= set("|- "):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif in_goals and not line.startswith("|"):
            in_goals = False
    return when, rows


def with_when_filed(row: Sequence[str]) -> list[str]:
    """A goal row (goal, target, measured, met) with its :data:`WHEN_FILED` figure after the target."""
    return [*row[:2], WHEN_FILED.get(row[0], ""), *row[2:]]


_FILED_COLUMNS = ("goal", "target", "when filed", "measured", "met")


def filed_goals_table(goals: Sequence[Goal], title: str) -> Table:
    """``goals`` as :func:`goals_table` has them, with the figure each had when its issue was filed."""
    table = Table(title, list(_FILED_COLUMNS))
    for row in goals_table(goals).rows:
        table.add(*with_when_filed(row))
    return table


def summary_section(texts: Mapping[str, str]) -> str:
    """Every goal of every benchmark, each from that benchmark's latest results file (``texts``: name -> file text,
    dated), so the summary never shows a figure a later run of one benchmark has replaced."""
    table = Table("Every goal, from each benchmark's latest run", ["benchmark", "measured (UTC)", *_FILED_COLUMNS])
    for name, text in texts.items():
        when, rows = latest_goals(text)
        for row in rows:
            table.add(name, when or "?", *with_when_filed(row))
    return f"### Summary\n\n{table.markdown()}"


def results_section(results_dir: Path, names: list[str] | None = None) -> str:
    """The README's results: the summary of every goal, then each benchmark's tables as written by its last run."""
    paths = {name: results_dir / f"{name}.md" for name in names or ORDER}
    texts = {name: path.read_text().strip() for name, path in paths.items() if path.exists()}
    parts = [summary_section(texts)]
    # The README sits one level up from results/: keep relative links (the plot) working.
    parts += [re.sub(r"`(\w+\.png)`", rf"![{name}](results/\1)", text) for name, text in texts.items()]
    return "\n\n".join(parts)


def update_readme(results_dir: Path, readme: Path = README) -> bool:
    """Replace the text between the markers of ``readme`` with :func:`results_section`; False if no markers."""
    if not readme.exists():
        return False
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        return False
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n\n{results_section(results_dir)}\n\n{END}{tail}")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the smoke sizes (seconds, not minutes)")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {', '.join(ORDER)}")
    parser.add_argument("--with-emulator", action="store_true", help="also run benchmarks.emulator_throughput")
    parser.add_argument("--results-dir", type=Path, default=None, help="default results/ (--quick: a temp dir)")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite the README's results section")
    args = parser.parse_args(argv)
    args.results_dir = args.results_dir or default_results_dir(args.quick)
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    if args.with_emulator and "emulator_throughput" not in names:
        names.append("emulator_throughput")
    unknown = sorted(set(names) - set(ORDER))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(ORDER)}")
    started = time.monotonic()
    info = machine_info()
    goals, durations = run(names, args.quick, args.results_dir)
    total = time.monotonic() - started
    table = filed_goals_table(goals, "All goals of this run")
    took = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in durations.items())
    table.notes.append(f"Durations: {took}; total {total:.0f} s.")
    table.print()
    args.results_dir.mkdir(parents=True, exist_ok=True)
    command = f"python -m benchmarks.run_all {' '.join(argv if argv is not None else sys.argv[1:])}".strip()
    (args.results_dir / "summary.md").write_text(
        f"### Summary\n\nRun started {machine_line(info)}.\n\nCommand: `{command}`\n\n{table.markdown()}\n"
    )
    if not args.no_readme and args.results_dir.resolve() == RESULTS_DIR.resolve() and not args.quick:
        update_readme(args.results_dir)
        print(f"updated {README}")
    print(f"all benchmarks took {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
