"""Where batch output goes: ``[baseten] output_location``, object stores in parts, URIs that open as returned."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any
from unittest import mock

import fsspec
import object_store_fs
import pytest

from airflow_provider_baseten.exceptions import BasetenConfigError
from airflow_provider_baseten.operators._batch_journal import PartSink
from airflow_provider_baseten.operators.batch import BasetenBatchPredictOperator

from . import test_batch as base
from .test_batch import FakeModel, make_op, ti

object_store = object_store_fs.object_store  # the fixture: an in-memory store that cannot append

_conn, model, waits = base._conn, base.model, base.waits


def read_back(uri: str) -> list[dict[str, Any]]:
    """The lines at ``uri``, read the two ways a user would, as returned: ObjectStoragePath and fsspec."""
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    text = ObjectStoragePath(uri).read_text()
    with fsspec.open(uri, "rt") as handle:
        assert handle.read() == text
    return [json.loads(line) for line in text.splitlines()]


def all_lines(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [line for uri in manifest["parts"] for line in read_back(uri)]


@pytest.fixture
def location(monkeypatch: pytest.MonkeyPatch) -> Any:
    def set_location(value: str | None) -> None:
        if value is None:
            monkeypatch.delenv("AIRFLOW__BASETEN__OUTPUT_LOCATION", raising=False)
        else:
            monkeypatch.setenv("AIRFLOW__BASETEN__OUTPUT_LOCATION", value)

    return set_location


def test_default_output_path_is_under_the_setting_and_opens_as_returned(
    model: FakeModel, waits: list[float], tmp_path: Path, location: Any
) -> None:
    location(f"file://{tmp_path}/shared")
    manifest = make_op(waits, tmp_path, inputs=[1, 2], output_path=None).execute({"ti": ti(map_index=3)})
    expected = tmp_path / "shared" / "baseten-batches" / "dag" / "manual__2026-01-01T00_00_00+00_00" / "score-3.jsonl"
    assert manifest["output_path"] == f"file://{expected}"
    assert manifest["parts"] == [manifest["output_path"]]
    assert sorted(line["index"] for line in read_back(manifest["output_path"])) == [0, 1]


def test_without_a_location_the_task_fails_before_sending(
    model: FakeModel, waits: list[float], tmp_path: Path, location: Any
) -> None:
    location(None)
    with pytest.raises(BasetenConfigError, match=r"output_path=.*\[baseten\] output_location"):
        make_op(waits, tmp_path, inputs=[1], output_path=None).execute({"ti": ti()})
    assert model.calls == []


@pytest.mark.parametrize(
    ("executor", "warned"),
    [
        ("CeleryExecutor", True),
        ("airflow.providers.cncf.kubernetes.executors.kubernetes_executor.KubernetesExecutor", True),
        ("LocalExecutor,airflow.providers.edge3.executors.EdgeExecutor", True),
        ("LocalExecutor", False),
    ],
)
def test_a_local_output_on_a_distributed_executor_warns(
    model: FakeModel, waits: list[float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, executor: str, warned: bool
) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", executor)
    with mock.patch.object(BasetenBatchPredictOperator, "log", new_callable=mock.PropertyMock) as log:
        make_op(waits, tmp_path, inputs=[1]).execute({"ti": ti()})
    warnings = [call.args for call in log.return_value.warning.call_args_list if "other machines" in call.args[0]]
    assert bool(warnings) is warned
    if warned:
        assert "output_location" in warnings[0][0] % warnings[0][1:]


def test_an_object_store_output_is_not_warned_about(
    model: FakeModel, waits: list[float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, object_store: str
) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    with mock.patch.object(BasetenBatchPredictOperator, "log", new_callable=mock.PropertyMock) as log:
        make_op(waits, tmp_path, inputs=[1], output_path=f"{object_store}/out").execute({"ti": ti()})
    assert not [call for call in log.return_value.warning.call_args_list if "other machines" in call.args[0]]


# --- object stores: parts -----------------------------------------------------------------------------------------


def test_object_store_output_is_written_in_parts_that_open_as_returned(
    model: FakeModel, waits: list[float], tmp_path: Path, object_store: str
) -> None:
    out = f"{object_store}/scores/manual__2026-01-01T00:00:00+00:00/score.jsonl"
    manifest = make_op(
        waits, tmp_path, inputs=list(range(10)), output_path=out, part_size=3, max_concurrency=1
    ).execute({"ti": ti()})
    assert manifest["output_path"] == out
    assert len(manifest["parts"]) >= 4  # 3 lines a part (more parts if a write raced a line)
    assert all(uri.startswith(f"{out}/part-") and uri.endswith(".jsonl") for uri in manifest["parts"])
    lines = all_lines(manifest)
    assert sorted(line["index"] for line in lines) == list(range(10))
    assert all(len(read_back(uri)) <= 3 for uri in manifest["parts"][:-1])


def test_object_store_resume_reads_every_part_and_rewrites_only_the_changed_one(
    model: FakeModel, waits: list[float], tmp_path: Path, object_store: str
) -> None:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    out = f"{object_store}/scores"
    folder = ObjectStoragePath(out)
    (folder / "part-00000.jsonl").write_text(base.line(0, output=0) + base.line(1, output=1))
    (folder / "part-00001.jsonl").write_text(
        base.line(2, output=2) + base.line(3, error={"type": "X", "model_may_have_run": False})
    )
    (folder / "unrelated.txt").write_text("not a part")
    model.calls.clear()
    manifest = make_op(waits, tmp_path, inputs=list(range(5)), output_path=out).execute({"ti": ti(2)})
    assert sorted(model.calls) == [3, 4]
    assert manifest["skipped_existing"] == 3
    assert manifest["parts"][:2] == [f"{out}/part-00000.jsonl", f"{out}/part-00001.jsonl"]
    assert read_back(f"{out}/part-00001.jsonl") == [json.loads(base.line(2, output=2))]  # the error line dropped
    assert sorted(line["index"] for line in all_lines(manifest)) == [0, 1, 2, 3, 4]
    assert (folder / "unrelated.txt").read_text() == "not a part"


def test_a_crash_on_an_object_store_repredicts_at_most_one_part(
    model: FakeModel, waits: list[float], tmp_path: Path, object_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = f"{object_store}/scores"
    real_write_part = PartSink.write_part
    uploads = itertools.count()

    def write_part(sink: PartSink) -> None:
        if next(uploads) >= 3:  # the worker dies after its third part upload
            raise KeyboardInterrupt("the worker died")
        real_write_part(sink)

    monkeypatch.setattr(PartSink, "write_part", write_part)
    with pytest.raises(KeyboardInterrupt):
        make_op(waits, tmp_path, inputs=list(range(20)), output_path=out, part_size=4, max_concurrency=1).execute(
            {"ti": ti()}
        )
    monkeypatch.setattr(PartSink, "write_part", real_write_part)
    model.calls.clear()
    manifest = make_op(waits, tmp_path, inputs=list(range(20)), output_path=out, part_size=4).execute({"ti": ti(2)})
    assert manifest["skipped_existing"] >= 12 - 4  # three parts of about 4 lines survived
    assert len(model.calls) == 20 - manifest["skipped_existing"]
    assert sorted(line["index"] for line in all_lines(manifest)) == list(range(20))


def test_a_part_is_written_after_part_interval_even_when_not_full(tmp_path: Path, object_store: str) -> None:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    now = [0.0]
    sink = PartSink(ObjectStoragePath(f"{object_store}/p"), 7, part_size=100, part_interval=30, clock=lambda: now[0])
    sink.write(b'{"a":1}\n')
    sink.sync()
    assert sink.written == []
    now[0] = 30.0
    sink.sync()
    assert sink.written == [f"{object_store}/p/part-00007.jsonl"]
    assert read_back(sink.written[0]) == [{"a": 1}]


def test_part_settings_are_validated(waits: list[float], tmp_path: Path) -> None:
    with pytest.raises(BasetenConfigError, match="part_size"):
        make_op(waits, tmp_path, inputs=[1], part_size=0)
    with pytest.raises(BasetenConfigError, match="part_interval"):
        make_op(waits, tmp_path, inputs=[1], part_interval=0)
