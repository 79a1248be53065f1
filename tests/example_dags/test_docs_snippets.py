"""Every ```python block of README.md and docs/*.md runs as written.

Blocks that define DAGs only parse; blocks that call Baseten run against the ``baseten_emulator`` fixture (the
``baseten_default`` connection points at it). Show non-runnable code with another fence (```text, ```bash, ```json).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```python[ \t]*\n(?P<code>.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def python_blocks() -> list[pytest.param]:
    blocks = []
    for path in DOC_FILES:
        if not path.is_file():
            continue
        text = path.read_text()
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 2  # the first line of code, 1-based
            name = f"{path.relative_to(REPO_ROOT)}:{line}"
            blocks.append(pytest.param(name, match.group("code"), line, id=name))
    return blocks


BLOCKS = python_blocks()


def test_the_docs_have_snippets():
    assert any(name.startswith("docs/") for name, *_ in (block.values for block in BLOCKS))


@pytest.mark.integration
@pytest.mark.parametrize(("name", "code", "line"), BLOCKS)
def test_snippet_runs(name, code, line, baseten_emulator, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))  # files a snippet writes land in the scratch folder
    environ = dict(os.environ)
    # Compile with the snippet's own line numbers so a traceback points into the Markdown file.
    compiled = compile("\n" * (line - 1) + code, name, "exec")
    try:
        exec(compiled, {"__name__": "docs_snippet"})
    finally:  # a snippet may export a connection or variable: keep it out of the next test
        os.environ.clear()
        os.environ.update(environ)
