"""Large results: to XCom unless a result location is set; a written result's URI opens as returned."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from unittest import mock

import fsspec
import object_store_fs
import pytest

from airflow_provider_baseten.exceptions import BasetenConfigError
from airflow_provider_baseten.get_provider_info import get_provider_info
from airflow_provider_baseten.operators._results import required_location, store_if_large

object_store = object_store_fs.object_store  # the fixture: an in-memory store that cannot append

BIG = {"values": list(range(100))}


def context(map_index: int = -1) -> dict[str, Any]:
    ti = mock.MagicMock(dag_id="dag", task_id="predict", run_id="scheduled__2026-01-01T00:00:00+00:00")
    ti.map_index = map_index
    return {"ti": ti}


def read_back(uri: str) -> Any:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    text = ObjectStoragePath(uri).read_text()
    with fsspec.open(uri, "rt") as handle:
        assert handle.read() == text
    return json.loads(text)


@pytest.fixture(autouse=True)
def _no_location(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW__BASETEN__OUTPUT_LOCATION", raising=False)
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")


def test_without_a_location_a_large_result_stays_in_xcom_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    with caplog.at_level(logging.WARNING):
        assert store_if_large(BIG, context(), threshold_bytes=10) == BIG
    assert list(tmp_path.rglob("*")) == []
    assert "no result location is set" in caplog.text


def test_with_the_setting_a_large_result_goes_there_and_its_uri_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__BASETEN__OUTPUT_LOCATION", f"file://{tmp_path}")
    uri = store_if_large(BIG, context(map_index=2), threshold_bytes=10)
    assert uri == f"file://{tmp_path}/baseten-results/dag/scheduled__2026-01-01T00_00_00+00_00/predict-2.json"
    assert read_back(uri) == BIG


def test_an_operator_result_path_wins_over_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__BASETEN__OUTPUT_LOCATION", f"file://{tmp_path}/setting")
    uri = store_if_large(BIG, context(), threshold_bytes=10, base_path=str(tmp_path / "mine"))
    assert uri.startswith(f"file://{tmp_path}/mine/dag/")
    assert read_back(uri) == BIG


def test_an_object_store_result_uri_opens_as_returned(object_store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__BASETEN__OUTPUT_LOCATION", f"{object_store}/airflow")
    uri = store_if_large(BIG, context(), threshold_bytes=10)
    assert uri == f"{object_store}/airflow/baseten-results/dag/scheduled__2026-01-01T00_00_00+00_00/predict.json"
    assert read_back(uri) == BIG


def test_small_results_are_never_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__BASETEN__OUTPUT_LOCATION", f"file://{tmp_path}")
    assert store_if_large({"a": 1}, context(), threshold_bytes=1000) == {"a": 1}
    assert list(tmp_path.rglob("*")) == []


def test_a_local_location_on_a_distributed_executor_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AIRFLOW__BASETEN__OUTPUT_LOCATION", f"file://{tmp_path}")
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    with caplog.at_level(logging.WARNING):
        store_if_large(BIG, context(), threshold_bytes=10)
    assert "CeleryExecutor runs tasks on other machines" in caplog.text


def test_a_required_location_names_the_setting_when_missing() -> None:
    with pytest.raises(BasetenConfigError, match=r"\[baseten\] output_location .*AIRFLOW__BASETEN__OUTPUT_LOCATION"):
        required_location(None, "baseten-batches")


def test_the_setting_is_declared_in_the_provider_config() -> None:
    option = get_provider_info()["config"]["baseten"]["options"]["output_location"]
    assert option["type"] == "string"
    assert option["default"] == ""
    assert "s3://" in option["example"]
