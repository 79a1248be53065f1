"""BasetenAsyncBatchOperator's ``webhook_outputs``: validated at parse time, passed to the trigger as a string."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import respx
from airflow_testing import KEY

from airflow_provider_baseten.exceptions import BasetenConfigError
from tests.unit.operators.test_async_batch import SUBMIT_URL, Submits, _conn, deferred, make

__all__ = ["_conn"]
HOOK = "https://hooks.example.com/baseten"


def test_the_trigger_gets_the_outputs_folder_as_a_plain_string(tmp_path: Path) -> None:
    with respx.mock(assert_all_called=False) as api:
        api.post(SUBMIT_URL).mock(side_effect=Submits())
        trigger = deferred(make(tmp_path, webhook_endpoint=HOOK, webhook_outputs="memory://outputs/run-1/"))
    assert trigger.webhook_outputs == "memory://outputs/run-1"
    assert trigger.serialize()[1]["webhook_outputs"] == "memory://outputs/run-1"


def test_without_outputs_the_trigger_kwargs_are_unchanged(tmp_path: Path) -> None:
    with respx.mock(assert_all_called=False) as api:
        api.post(SUBMIT_URL).mock(side_effect=Submits())
        trigger = deferred(make(tmp_path, webhook_endpoint=HOOK))
    assert "webhook_outputs" not in trigger.serialize()[1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"webhook_outputs": "/data/outputs"}, "webhook_outputs needs webhook_endpoint"),
        ({"webhook_endpoint": HOOK, "webhook_outputs": ""}, "webhook_outputs must be"),
        ({"webhook_endpoint": HOOK, "webhook_outputs": "s3://"}, "names a scheme but no folder"),
        ({"webhook_endpoint": HOOK, "webhook_outputs": ["/a"]}, "webhook_outputs must be"),
    ],
)
def test_bad_outputs_fail_at_parse_time_without_the_key(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(BasetenConfigError, match=match) as info:
        make(tmp_path, **kwargs)
    assert KEY not in str(info.value)


def test_a_templated_location_is_checked_once_rendered(tmp_path: Path) -> None:
    op = make(tmp_path, webhook_endpoint=HOOK, webhook_outputs="{{ var.value.store }}/{{ run_id }}")
    assert "webhook_outputs" in op.template_fields
