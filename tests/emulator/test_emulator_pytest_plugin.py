"""The ``pytest11`` plugin loads into every pytest run where the provider is installed: it must cost nothing there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

#: Top-level packages the plugin must not import before its fixture is used.
HEAVY = ("airflow", "starlette", "uvicorn", "httpx", "httpcore", "aiohttp", "pydantic", "tenacity", "sqlalchemy")
#: Provider modules beyond the plugin's own (the emulator's server, world and the hooks import the heavy ones).
PROVIDER_ALLOWED = {
    "airflow_provider_baseten",
    "airflow_provider_baseten.emulator",
    "airflow_provider_baseten.emulator.pytest_plugin",
}

_PROBE = """
import json, sys
from importlib.metadata import entry_points

import pytest

before = set(sys.modules)
[plugin] = [ep for ep in entry_points(group="pytest11") if ep.value.startswith("airflow_provider_baseten")]
plugin.load()
print(json.dumps({"entry_point": plugin.value, "new": sorted(set(sys.modules) - before)}))
"""


def test_the_pytest11_plugin_imports_nothing_heavy():
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=True)
    probe = json.loads(done.stdout)
    new = probe["new"]

    assert probe["entry_point"] == "airflow_provider_baseten.emulator.pytest_plugin"
    assert [m for m in new if m.split(".")[0] in HEAVY] == []
    assert [m for m in new if m.startswith("airflow_provider_baseten") and m not in PROVIDER_ALLOWED] == []


def test_the_fixture_gives_batch_outputs_a_folder_of_the_test(baseten_emulator: Any, tmp_path: Path) -> None:
    import os

    # The README's batch line has no output_path: under the fixture it must still have somewhere to write.
    assert os.environ["AIRFLOW__BASETEN__OUTPUT_LOCATION"] == (tmp_path / "baseten-outputs").as_uri()
