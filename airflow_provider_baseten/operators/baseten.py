"""Public import path of the Baseten operators and their extra links.

Each operator lives in a module of its own area; importing this module imports none of the heavy optional
stacks (OpenAI SDK, aiohttp, the emulator): those load on first use.
"""

from __future__ import annotations

from airflow_provider_baseten.operators.async_batch import BasetenAsyncBatchOperator
from airflow_provider_baseten.operators.async_predict import BasetenAsyncPredictOperator
from airflow_provider_baseten.operators.batch import BasetenBatchPredictOperator
from airflow_provider_baseten.operators.chat import BasetenChatOperator
from airflow_provider_baseten.operators.embeddings import BasetenEmbeddingsOperator
from airflow_provider_baseten.operators.lifecycle import (
    BasetenBatchWindowOperator,
    BasetenPromoteOperator,
    BasetenRestoreAutoscalingOperator,
    batch_window,
)
from airflow_provider_baseten.operators.links import BasetenAsyncRequestLink, BasetenChainLink, BasetenModelLink
from airflow_provider_baseten.operators.predict import BasetenChainRunOperator, BasetenPredictOperator
from airflow_provider_baseten.operators.wake import BasetenWakeOperator

__all__ = [
    "BasetenAsyncBatchOperator",
    "BasetenAsyncPredictOperator",
    "BasetenAsyncRequestLink",
    "BasetenBatchPredictOperator",
    "BasetenBatchWindowOperator",
    "BasetenChainLink",
    "BasetenChainRunOperator",
    "BasetenChatOperator",
    "BasetenEmbeddingsOperator",
    "BasetenModelLink",
    "BasetenPredictOperator",
    "BasetenPromoteOperator",
    "BasetenRestoreAutoscalingOperator",
    "BasetenWakeOperator",
    "batch_window",
]
