"""Payloads of engine routes (BEI: embeddings, rerank, classify), as Baseten's performance client reads them.

Models use ``defer_build`` so importing this module (through the hook, at DAG-parse time) stays cheap.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow", defer_build=True)


class EmbeddingItem(_Answer):
    """One vector of ``/v1/embeddings``: ``index`` is the input's position in the request."""

    index: int
    embedding: list[float]
    object: str = "embedding"


class EmbeddingsUsage(_Answer):
    prompt_tokens: int = 0
    total_tokens: int = 0


class EmbeddingsResponse(_Answer):
    """OpenAI's embeddings answer; ``data`` sorted by ``index``, base64 vectors already decoded to float32."""

    data: list[EmbeddingItem]
    usage: EmbeddingsUsage = EmbeddingsUsage()
    model: str | None = None
    object: str = "list"

    @property
    def dimensions(self) -> int:
        """The vectors' length (0 for an empty answer)."""
        return len(self.data[0].embedding) if self.data else 0


class RerankResult(_Answer):
    """One scored text of ``/rerank``; ``text`` only when asked for (``return_text=True``)."""

    index: int
    score: float
    text: str | None = None


class ClassifyLabel(_Answer):
    """One label of ``/predict`` (classification) and its score."""

    label: str
    score: float
