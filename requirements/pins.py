"""Regenerate every pin file in ``requirements/`` from ``pyproject.toml`` (``make pins``); prints each command it runs.

- ``airflow-3.3.txt`` / ``airflow-3.1.txt``: the newest versions allowed on Airflow 3.3.x / 3.1.x (``airflow-X.in``).
- ``airflow-3.1-lowest.txt``: every direct dependency, extras included, at its declared lower bound
  (``--resolution lowest-direct``; the Airflow floor is pyproject's ``apache-airflow>=``), transitive packages at the
  newest versions those allow, as a user who installs the floors today gets them.

Each file's header records the command that made it. ``uv pip compile`` keeps the versions already in its output file
wherever they are still allowed, so re-running this after adding a dependency or an extra only resolves what is new;
``--upgrade`` re-resolves everything. Needs the package index. Standard library only: it runs before any venv exists.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPILE = ["pip", "compile", "pyproject.toml", "--all-extras", "--python-version", "3.11", "--quiet"]


def commands(uv: str, upgrade: bool = False) -> list[list[str]]:
    """The three ``uv pip compile`` invocations (run from the repository root), in order."""
    extra = ["--upgrade"] if upgrade else []
    out = [
        [uv, *COMPILE, f"requirements/airflow-{minor}.in", *extra, "-o", f"requirements/airflow-{minor}.txt"]
        for minor in ("3.3", "3.1")
    ]
    out.append([uv, *COMPILE, "--resolution", "lowest-direct", *extra, "-o", "requirements/airflow-3.1-lowest.txt"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uv", default=".tools/bin/uv")
    parser.add_argument("--upgrade", action="store_true", help="re-resolve everything instead of keeping pins")
    args = parser.parse_args(argv)
    for command in commands(args.uv, args.upgrade):
        print("+", " ".join(command), flush=True)
        subprocess.run(command, cwd=ROOT, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
