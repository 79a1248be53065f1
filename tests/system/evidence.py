"""What the scenarios assert on: the emulator's journal and records, and the processes Airflow runs tasks in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psutil


def model_host(model_id: str) -> str:
    return f"model-{model_id}.api.baseten.co"


def journal(emu: Any, model_id: str, route: str | None = None, method: str | None = None) -> list[Any]:
    """The emulator's journal entries for one model (optionally one route key and method), oldest first."""
    host = model_host(model_id)
    return [
        e
        for e in emu.journal.entries()
        if e.host == host and (route is None or e.route == route) and (method is None or e.method == method)
    ]


def accepted_submits(emu: Any, model_id: str) -> list[Any]:
    """``async_predict`` POSTs that queued work (2xx); injected failures before the model ran are not counted."""
    return [e for e in journal(emu, model_id, "async_predict", "POST") if 200 <= e.status < 300]


def records(emu: Any, model_id: str) -> dict[str, Any]:
    """The emulator's async requests on ``model_id``, by request id."""
    return {rid: rec for rid, rec in dict(emu.requests).items() if rec.target_id == model_id}


def statuses(emu: Any, model_id: str) -> dict[str, str]:
    return {rid: rec.status.value for rid, rec in records(emu, model_id).items()}


def task_runner(ti_id: str) -> psutil.Process | None:
    """The process running a task instance's code: the Task SDK titles it exactly ``airflow worker -- <ti id>``.

    (Its parent, the LocalExecutor worker supervising it, is titled ``airflow worker -- LocalExecutor: <ti id>``.)
    """
    title = f"airflow worker -- {ti_id}"
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if " ".join(proc.info["cmdline"] or ()).strip() == title:
                return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


@dataclass
class SecretsEvidence:
    """Artefacts that only exist mid-scenario (trigger rows are deleted once their task resumes) for the scan."""

    trigger_rows: list[dict[str, Any]] = field(default_factory=list)
    runs: list[tuple[str, str]] = field(default_factory=list)
    """(dag_id, run_id) of every run a scenario started; the scan reads their XComs, logs and rendered fields."""
