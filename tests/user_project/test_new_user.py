"""Play the new user: the README's and docs' lines, unchanged, in a fresh Airflow project, run with pytest.

The project is written to a temporary folder: the docs' ``python file=...`` blocks as they are (conftest.py, a DAG,
its test), a DAG made of the README's operator lines (plus the mapped predict of docs/operators.md) and a DAG with a
refused async submit, with their checks (``readme_lines_check.py``). It runs in a pytest subprocess with the
``baseten_emulator`` fixture, as a user's own ``pytest`` would, so a README or docs change that breaks a line, or a
run that ends with warnings or logging errors, fails here.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
_FILE_BLOCK = re.compile(r"^```python file=(?P<path>\S+)[ \t]*\n(?P<code>.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
_PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(?P<code>.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
#: The README line the issue was found with; its block holds every operator line the README shows.
README_ANCHOR = 'BasetenWakeOperator(task_id="wake"'
#: Tests the project runs: the docs' test of ``reviews``, and the two in ``readme_lines_check.py``.
EXPECTED_PASSED = 3


def file_blocks() -> dict[str, str]:
    """Every ``python file=<path>`` block of README.md and docs/*.md, by path."""
    blocks: dict[str, str] = {}
    for doc in DOCS:
        for match in _FILE_BLOCK.finditer(doc.read_text()):
            assert match.group("path") not in blocks, f"two docs blocks write {match.group('path')}"
            blocks[match.group("path")] = match.group("code")
    return blocks


def _block_with(doc: Path, anchor: str) -> str:
    for match in _PYTHON_BLOCK.finditer(doc.read_text()):
        if anchor in match.group("code"):
            return match.group("code")
    raise AssertionError(f"{doc.name} has no python block with {anchor!r}")


def _statements(code: str) -> list[ast.stmt]:
    tree = ast.parse(code)
    body: list[ast.stmt] = []
    for node in tree.body:
        body.extend(node.body if isinstance(node, ast.With) else [node])
    return body


def _source(code: str, node: ast.stmt) -> str:
    segment = ast.get_source_segment(code, node)
    assert segment is not None
    return textwrap.dedent(segment)


def readme_dag() -> str:
    """``dags/readme_lines.py``: the README's import and operator lines as written, the wake gating a mapped predict."""
    code = _block_with(REPO_ROOT / "README.md", README_ANCHOR)
    imports = [_source(code, n) for n in _statements(code) if isinstance(n, ast.ImportFrom)]
    operators = {
        n.targets[0].id: _source(code, n)
        for n in _statements(code)
        if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
    }
    assert {"predict", "wake", "chat", "batch", "job"} <= set(operators), sorted(operators)
    mapped_code = _block_with(REPO_ROOT / "docs" / "operators.md", ".expand(")
    mapped = [
        _source(mapped_code, n)
        for n in _statements(mapped_code)
        if isinstance(n, ast.Assign)
        and ".partial(" in _source(mapped_code, n)
        and "sentiment01" in _source(mapped_code, n)
    ]
    assert len(mapped) == 1, "docs/operators.md no longer maps a predict over sentiment01"
    body = [*operators.values(), mapped[0].replace(mapped[0].split(" = ", 1)[0], "many", 1), "wake >> many"]
    return "\n".join(
        [
            "import pendulum",
            "from airflow.sdk import DAG",
            *imports,
            "",
            'with DAG("readme_lines", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False):',
            textwrap.indent("\n".join(body), "    "),
            "",
        ]
    )


def _migrated_database(request: pytest.FixtureRequest, scratch: Path) -> Path:
    """The migrated template database ``make demo`` uses (cached across runs with the example-DAG tests)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from example_dags import run_demo

    cache = getattr(request.config, "cache", None)
    paths = run_demo.DemoPaths(scratch / "demo", cache.mkdir("baseten-demo") if cache is not None else None)
    paths.make()
    run_demo.prepare_database(paths, say=lambda message: None)
    return Path(paths.template_db)


def write_project(root: Path, database: Path) -> None:
    for path, code in file_blocks().items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(code)
    (root / "dags").mkdir(exist_ok=True)
    (root / "dags" / "readme_lines.py").write_text(readme_dag())
    shutil.copyfile(HERE / "refused_submit_dag.py", root / "dags" / "refused_submit.py")
    (root / "tests").mkdir(exist_ok=True)
    shutil.copyfile(HERE / "readme_lines_check.py", root / "tests" / "test_readme_lines.py")
    # The docs' conftest creates the database when missing (a minute); hand it the migrated one under its name.
    home = root / ".airflow-tests"
    home.mkdir(exist_ok=True)
    shutil.copyfile(database, home / database.name)


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def _user_environment() -> dict[str, str]:
    """This process's environment without what this project's own tests set (Airflow settings, connections)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTEST_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="module")
def user_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Run:
    scratch = tmp_path_factory.mktemp("new-user")
    project = scratch / "my_project"
    project.mkdir()
    write_project(project, _migrated_database(request, scratch))
    # -p no:asyncio: this venv has pytest-asyncio (a user's may not), which warns about its own unset option.
    command = [sys.executable, "-m", "pytest", "-p", "no:asyncio", "-p", "no:cacheprovider", "-q", "tests"]
    done = subprocess.run(
        command, cwd=project, env=_user_environment(), capture_output=True, text=True, timeout=840, check=False
    )
    return Run(done.returncode, done.stdout, done.stderr)


def test_every_docs_file_block_is_part_of_the_project() -> None:
    assert set(file_blocks()) == {"conftest.py", "dags/reviews.py", "tests/test_reviews.py"}


def test_the_readme_dag_is_the_readme_lines_unchanged() -> None:
    dag = readme_dag()
    code = _block_with(REPO_ROOT / "README.md", README_ANCHOR)
    for line in code.splitlines():
        if line.startswith(("wake = ", "predict = ", "job = ")):
            assert f"    {line}\n" in dag
    ast.parse(dag)


def test_the_new_user_project_passes(user_run: Run) -> None:
    summary = user_run.stdout.strip().splitlines()[-1:] or [""]
    assert user_run.returncode == 0, f"{user_run.stdout[-6000:]}\n{user_run.stderr[-3000:]}"
    assert re.search(rf"\b{EXPECTED_PASSED} passed\b", summary[0]), summary
    assert not re.search(r"\b(skipped|xfailed|deselected|error)\b", summary[0]), summary


def _logging_errors(stderr: str) -> list[str]:
    return [block for block in stderr.split("--- Logging error ---")[1:]]


def _unclosed(block: str) -> bool:
    return "Unclosed client session" in block or "Unclosed connector" in block


def test_the_run_prints_no_warnings_or_tracebacks(user_run: Run) -> None:
    """Everything but the unclosed-session lines (see the next test) is clean."""
    stderr = "--- Logging error ---".join(
        [user_run.stderr.split("--- Logging error ---")[0]]
        + [b for b in _logging_errors(user_run.stderr) if not _unclosed(b)]
    )
    # No warning comes from the provider or the user's project; Airflow's own (3.1 has a few deprecations inside
    # site-packages that a user cannot act on) are not the provider's to fix.
    ours = [
        line
        for line in re.findall(r"^\s*(\S+\.py):\d+: \w*Warning", user_run.stdout, re.MULTILINE)
        if "site-packages" not in line or "airflow_provider_baseten" in line
    ]
    assert ours == [], user_run.stdout[-4000:]
    for noise in ("Traceback", "Logging error", "Warning", "Exception ignored"):
        assert noise not in stderr, stderr[-4000:]
    assert stderr.strip() == "", stderr[-4000:]


def test_no_unclosed_client_session_at_exit(user_run: Run) -> None:
    assert [b for b in _logging_errors(user_run.stderr) if _unclosed(b)] == []
    assert "Unclosed" not in user_run.stderr + user_run.stdout
