"""Public import path of the Baseten operators and their extra links.

Each operator lives in a module of its own area and is imported on first access of its name (PEP 562, as
``airflow.sdk`` does): a DAG file that uses the predict operator pays for predict's module, not for the async batch
manifest, the embeddings journal, rerank and classify or the lifecycle operators. ``from ... import X`` and
``baseten.X`` both work; nothing here imports the heavy optional stacks (OpenAI SDK, aiohttp, the emulator) either.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from airflow_provider_baseten.operators.scoring import BasetenClassifyOperator, BasetenRerankOperator
    from airflow_provider_baseten.operators.wake import BasetenWakeOperator

#: Exported name -> the module (under ``airflow_provider_baseten.operators``) that defines it.
_MODULES = {
    "BasetenAsyncBatchOperator": "async_batch",
    "BasetenAsyncPredictOperator": "async_predict",
    "BasetenAsyncRequestLink": "links",
    "BasetenBatchPredictOperator": "batch",
    "BasetenBatchWindowOperator": "lifecycle",
    "BasetenChainLink": "links",
    "BasetenChainRunOperator": "predict",
    "BasetenChatOperator": "chat",
    "BasetenClassifyOperator": "scoring",
    "BasetenEmbeddingsOperator": "embeddings",
    "BasetenModelLink": "links",
    "BasetenPredictOperator": "predict",
    "BasetenPromoteOperator": "lifecycle",
    "BasetenRerankOperator": "scoring",
    "BasetenRestoreAutoscalingOperator": "lifecycle",
    "BasetenWakeOperator": "wake",
    "batch_window": "lifecycle",
}

__all__ = [
    "BasetenAsyncBatchOperator",
    "BasetenAsyncPredictOperator",
    "BasetenAsyncRequestLink",
    "BasetenBatchPredictOperator",
    "BasetenBatchWindowOperator",
    "BasetenChainLink",
    "BasetenChainRunOperator",
    "BasetenChatOperator",
    "BasetenClassifyOperator",
    "BasetenEmbeddingsOperator",
    "BasetenModelLink",
    "BasetenPredictOperator",
    "BasetenPromoteOperator",
    "BasetenRerankOperator",
    "BasetenRestoreAutoscalingOperator",
    "BasetenWakeOperator",
    "batch_window",
]


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"airflow_provider_baseten.operators.{module}"), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
