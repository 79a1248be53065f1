"""Measurement plumbing shared by the benchmarks: child processes, CPU/RSS meters, statistics, tables, results.

Every measured side runs in a fresh child process (``python -m benchmarks.<script> --child NAME --params JSON``) so
that its CPU seconds and peak RSS belong to it alone; the emulator runs in the parent. The child prints one line
``BENCH_RESULT {json}`` on stdout; everything else it writes goes to a log file beside the results.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_baseten.emulator import Limits

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
RESULT_MARKER = "BENCH_RESULT "
READY_MARKER = "BENCH_READY"
MIB = 1024 * 1024

#: The provider's default status budget and Baseten's (the emulator's) status limit, per (emulated) second.
BUDGET = 15.0
SERVER_LIMIT = 20.0
#: Poll-interval rule: the fastest interval at which N triggers stay under 80% of the budget, and never under 5 s.
MIN_INTERVAL = 5.0
TARGET_RATE = 12.0


def poll_interval_for(n: int) -> float:
    """The poll interval (emulated seconds) at which ``n`` single triggers stay under 80% of the status budget."""
    return max(MIN_INTERVAL, n / TARGET_RATE)


def server_limits(time_scale: float) -> Limits:
    """The emulator's status, cancel and queue-status limits at ``SERVER_LIMIT`` per emulated second."""
    from airflow_provider_baseten.emulator import Limits

    rate = SERVER_LIMIT * time_scale
    return Limits(status_per_second=rate, cancel_per_second=rate, queue_status_per_second=rate)


ChildFunction = Callable[[dict[str, Any]], dict[str, Any]]

# The parent imports parts of the provider too: never let it touch ~/airflow (children get their own scratch home).
os.environ.setdefault("AIRFLOW_HOME", str(Path(tempfile.gettempdir()) / "baseten-bench-airflow"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


class BenchError(RuntimeError):
    """A benchmark child failed or a precondition (an installed peer, the emulator) is missing."""


# --- statistics -------------------------------------------------------------------------------------------------


def median(values: Iterable[float | None]) -> float | None:
    """Median of the values that are not ``None`` (``None`` when there are none)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator in (None, 0):
        return None
    return numerator / denominator  # type: ignore[operator]


# --- measuring inside a child -----------------------------------------------------------------------------------


def current_rss() -> int:
    """Resident set size of this process in bytes."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def reset_peak_rss() -> bool:
    """Start the peak RSS afresh from the current RSS (Linux: ``5`` into ``/proc/self/clear_refs`` resets
    ``VmHWM``), so a peak reached before a measurement (imports, parsing the parent's go message) is not counted in
    it. ``False`` where the kernel does not allow it: :func:`peak_rss` is then the lifetime peak (an upper bound)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def peak_rss() -> int:
    """Peak resident set size of this process in bytes since the last :func:`reset_peak_rss` (``VmHWM``), or over
    its lifetime where ``/proc`` has no ``VmHWM``."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def cpu_seconds() -> float:
    """User + system CPU seconds of this process, all threads (the performance client's Rust threads count)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Meter:
    """Wall time, CPU seconds and RSS of the enclosed block of this process.

    ``rss_growth_mib`` is the peak RSS minus the RSS when the block started (after imports and setup), so it is
    what the measured work itself added.
    """

    wall_s: float
    cpu_s: float
    rss_start: int
    rss_peak: int

    def __enter__(self) -> Meter:
        reset_peak_rss()
        self.rss_start = current_rss()
        self._cpu = cpu_seconds()
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self._t
        self.cpu_s = cpu_seconds() - self._cpu
        self.rss_peak = max(peak_rss(), self.rss_start)

    def as_dict(self) -> dict[str, float]:
        return {
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "rss_start_mib": self.rss_start / MIB,
            "peak_rss_mib": self.rss_peak / MIB,
            "rss_growth_mib": (self.rss_peak - self.rss_start) / MIB,
        }


# --- child processes --------------------------------------------------------------------------------------------


def add_child_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)


def run_as_child(args: argparse.Namespace, functions: Mapping[str, ChildFunction]) -> bool:
    """When started as a child, run the named function and print its result; ``False`` otherwise."""
    if not args.child:
        return False
    # The real stdout carries the protocol only; logs (Airflow's go to stdout) join stderr, i.e. the log file.
    sys.stdout.flush()
    _PROTOCOL[0] = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    result = functions[args.child](json.loads(args.params or "{}"))
    _say(RESULT_MARKER + json.dumps(result))
    return True


_PROTOCOL: list[Any] = [None]


def _say(line: str) -> None:
    out = _PROTOCOL[0] or sys.stdout
    out.write(line + "\n")
    out.flush()


@dataclass
class ChildRunner:
    """Starts measured children of one benchmark script with a scratch Airflow home and a log file.

    ``inline=True`` calls the function in this process instead (the smoke tests: same code path, no process
    start-up, but CPU and RSS figures then include the emulator and are not attributable).
    """

    module: str
    functions: Mapping[str, ChildFunction]
    env: dict[str, str] = field(default_factory=dict)
    inline: bool = False
    timeout: float = 900.0
    log_path: Path | None = None

    def __post_init__(self) -> None:
        self._home = tempfile.mkdtemp(prefix="baseten-bench-airflow-")
        if self.log_path is None:
            self.log_path = Path(tempfile.gettempdir()) / "baseten-bench" / f"{self.module.rsplit('.', 1)[-1]}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text("")

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "AIRFLOW_HOME": self._home,
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
            }
        )
        env.update(self.env)
        return env

    def run(
        self,
        name: str,
        params: dict[str, Any],
        *,
        env: Mapping[str, str] | None = None,
        on_ready: Callable[[], dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Run child function ``name``; with ``on_ready``, the child waits (after its imports) for its answer.

        The handshake lets the parent start the clock of a scenario (e.g. submit async requests) only once the
        child has paid its start-up, so start-up never counts in what is measured.
        """
        if self.inline:
            with _patched_environ({**self.env, **(env or {})}):
                _INLINE_READY[0] = on_ready
                try:
                    return self.functions[name](params)
                finally:
                    _INLINE_READY[0] = None
        assert self.log_path is not None
        cmd = [sys.executable, "-m", self.module, "--child", name, "--params", json.dumps(params)]
        child_env = self.child_env()
        child_env.update(env or {})
        with self.log_path.open("a") as log:
            log.write(f"\n=== {name} {json.dumps(params)[:500]}\n")
            log.flush()
            proc = subprocess.Popen(
                cmd, cwd=REPO_ROOT, env=child_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
            )
            try:
                output = self._converse(proc, on_ready)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
        for line in reversed(output):
            if line.startswith(RESULT_MARKER):
                return json.loads(line[len(RESULT_MARKER) :])
        tail = "\n".join(self.log_path.read_text().splitlines()[-30:])
        raise BenchError(f"child {name} exited {proc.returncode} without a result (log {self.log_path}):\n{tail}")

    def _converse(self, proc: subprocess.Popen[str], on_ready: Callable[[], dict[str, Any]] | None) -> list[str]:
        assert proc.stdin is not None
        assert proc.stdout is not None
        deadline = time.monotonic() + self.timeout
        output: list[str] = []
        if on_ready is not None:
            for line in proc.stdout:
                if line.startswith(READY_MARKER):
                    proc.stdin.write(json.dumps(on_ready()) + "\n")
                    proc.stdin.flush()
                    break
                output.append(line.rstrip("\n"))
        remaining = max(1.0, deadline - time.monotonic())
        try:
            rest, _ = proc.communicate(timeout=remaining)
        except subprocess.TimeoutExpired as err:
            raise BenchError(f"child timed out after {self.timeout} s (log: {self.log_path})") from err
        return output + rest.splitlines()


_INLINE_READY: list[Callable[[], dict[str, Any]] | None] = [None]


def wait_for_go() -> dict[str, Any]:
    """In a child: say it is ready (imports done) and wait for the parent's go, a JSON object."""
    if _INLINE_READY[0] is not None:
        return _INLINE_READY[0]()
    _say(READY_MARKER)
    line = sys.stdin.readline()
    if not line:
        raise BenchError("the parent closed the handshake without a go")
    return json.loads(line)


@contextlib.contextmanager
def _patched_environ(values: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


# --- tables and results -----------------------------------------------------------------------------------------


def fmt(value: object) -> str:
    """Cells: ``None`` as a dash, floats to three significant figures (integers stay whole)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if math.isinf(value) or math.isnan(value):
            return str(value)
        magnitude = abs(value)
        if magnitude >= 1000:
            return f"{value:,.0f}"
        if magnitude >= 100:
            return f"{value:.0f}"
        if magnitude >= 10:
            return f"{value:.1f}"
        if magnitude >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


@dataclass
class Table:
    """A Markdown table, printed to the console and written into the results."""

    title: str
    columns: Sequence[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{self.title}: {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append([fmt(cell) for cell in cells])

    def column(self, name: str) -> list[str]:
        index = list(self.columns).index(name)
        return [row[index] for row in self.rows]

    def markdown(self) -> str:
        widths = [max(len(str(c)), *(len(r[i]) for r in self.rows)) if self.rows else len(str(c))
                  for i, c in enumerate(self.columns)]  # fmt: skip

        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(str(cell).ljust(width) for cell, width in zip(cells, widths, strict=True)) + " |"

        out = [f"**{self.title}**", "", line(self.columns), "| " + " | ".join("-" * w for w in widths) + " |"]
        out += [line(row) for row in self.rows]
        if self.notes:
            out += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(out)

    def print(self) -> None:
        print("\n" + self.markdown() + "\n", flush=True)


@dataclass(frozen=True)
class Goal:
    """One goal of the issue, with the measured value and whether it is met."""

    name: str
    target: str
    measured: str
    met: bool


#: The columns of every goal table (``run_all`` finds the goal tables in the results files by them).
GOAL_COLUMNS = ("goal", "target", "measured", "met")


def goals_table(goals: Sequence[Goal], title: str = "Goals") -> Table:
    table = Table(title, list(GOAL_COLUMNS))
    for goal in goals:
        table.add(goal.name, goal.target, goal.measured, "met" if goal.met else "**missed**")
    return table


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    from importlib.metadata import PackageNotFoundError, version

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        airflow_version = version("apache-airflow")
    except PackageNotFoundError:
        airflow_version = "not installed"
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "airflow": airflow_version,
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def machine_line(info: Mapping[str, Any]) -> str:
    return (
        f"{info['date']}; {info['nproc']} cores ({info['cpu']}); Python {info['python']}; Airflow {info['airflow']}; "
        f"load average at start {', '.join(str(x) for x in info['loadavg_at_start'])}"
    )


def write_results(
    name: str,
    *,
    title: str,
    command: str,
    tables: Sequence[Table],
    raw: Mapping[str, Any],
    method: str = "",
    results_dir: Path | None = None,
) -> Path:
    """``results/<name>.md`` (what the README shows) and ``results/<name>.json`` (every sample)."""
    directory = results_dir or RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    parts = [f"### {title}", "", f"Measured {machine_line(info)}.", "", f"Command: `{command}`"]
    if method:
        parts += ["", method]
    parts += [""] + ["\n" + table.markdown() + "\n" for table in tables]
    path = directory / f"{name}.md"
    path.write_text("\n".join(parts).rstrip() + "\n")
    (directory / f"{name}.json").write_text(json.dumps({"machine": info, **raw}, indent=1, default=str) + "\n")
    return path


def publish_results(
    name: str,
    *,
    title: str,
    module: str,
    argv: Sequence[str] | None,
    tables: Sequence[Table],
    raw: Mapping[str, Any],
    method: str = "",
    results_dir: Path | None = None,
) -> Path:
    """Print the tables, then write them with :func:`write_results`; every benchmark ends with this."""
    for table in tables:
        table.print()
    path = write_results(
        name,
        title=title,
        command=command_line(module, argv),
        tables=tables,
        raw=raw,
        method=method,
        results_dir=results_dir,
    )
    print(f"written {path}")
    return path


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition (the smoke test's mode)")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions per configuration (medians reported)")
    parser.add_argument(
        "--inline",
        action="store_true",
        help="run the measured sides in this process (faster; CPU/RSS figures then include the emulator)",
    )
    parser.add_argument(
        "--results-dir", type=Path, default=None, help="where results go (default results/; --quick: a temp dir)"
    )
    add_child_arguments(parser)
    return parser


def default_results_dir(quick: bool) -> Path:
    """``results/``, except for quick runs, which must never overwrite the published figures."""
    return Path(tempfile.gettempdir()) / "baseten-bench-quick" if quick else RESULTS_DIR


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.results_dir is None:
        args.results_dir = default_results_dir(args.quick)
    return args


def command_line(module: str, argv: Sequence[str] | None) -> str:
    args = " ".join(argv if argv is not None else sys.argv[1:])
    return f"python -m {module} {args}".strip()
