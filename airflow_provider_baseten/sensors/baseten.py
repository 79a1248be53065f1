"""Public import path of the Baseten sensors."""

from __future__ import annotations

from airflow_provider_baseten.sensors.async_request import BasetenAsyncRequestSensor

__all__ = ["BasetenAsyncRequestSensor"]
