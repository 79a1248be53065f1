"""Public import path of the Baseten triggers (``classpath`` in serialized triggers points here)."""

from __future__ import annotations

from airflow_provider_baseten.triggers.async_batch import BasetenAsyncBatchTrigger
from airflow_provider_baseten.triggers.async_request import BasetenAsyncRequestTrigger
from airflow_provider_baseten.triggers.deployment import BasetenDeploymentReadyTrigger
from airflow_provider_baseten.triggers.promotion import BasetenPromotionTrigger

__all__ = [
    "BasetenAsyncBatchTrigger",
    "BasetenAsyncRequestTrigger",
    "BasetenDeploymentReadyTrigger",
    "BasetenPromotionTrigger",
]
