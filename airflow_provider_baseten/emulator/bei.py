"""BEI deployments (Baseten Embeddings Inference): ``/sync/v1/embeddings``, ``/sync/rerank`` and ``/sync/predict``.

A model whose behaviour is ``"bei"`` (or ``{"kind": "bei", "dimensions": 384, "base_ms": 5, "per_input_ms": 0.05}``)
serves the three routes with the bodies Baseten's ``baseten-performance-client`` sends and reads:

- embeddings: a deterministic, L2-normalised float32 vector per text from a hash of the text, ``dimensions`` long
  (the request's ``dimensions`` or the behaviour's default), ``encoding_format`` ``float`` or ``base64``; usage
  counts whitespace tokens (:func:`vector` is the vector a text gets);
- rerank: each text scored by the share of the query's words it contains, best first;
- classify: ``positive``/``negative``/``neutral`` scores from the emulator's sentiment lexicon, one list per input.

Each request takes ``base_ms + per_input_ms * inputs`` emulated milliseconds, and a deployment runs at most
``predict_concurrency`` requests per active replica at once: the excess queues (``slots_of(deployment)``). Requests
go through the emulator's faults and journal like every route: journal route keys ``embeddings``, ``rerank`` and
``classify`` (a fault plan for ``sync`` covers them too), with the request's input count and customer request id.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import re
import sys
import weakref
from array import array
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from airflow_provider_baseten.emulator.behaviours import Behaviour, ModelRequest, Reply, sentiment_of

if TYPE_CHECKING:
    from airflow_provider_baseten.emulator.lifecycle import DeploymentRuntime
    from airflow_provider_baseten.emulator.responses import Call, Handler

#: ``/sync/{route}`` -> journal and fault route key.
ROUTE_KEYS = {"v1/embeddings": "embeddings", "rerank": "rerank", "predict": "classify"}
#: The most dimensions a request may ask for.
MAX_DIMENSIONS = 8192
_WORD = re.compile(r"\w+")


def _invalid(message: str, status: int = 422) -> Reply:
    """TEI's error body (BEI is built on it): ``{"error", "error_type"}``."""
    return Reply({"error": message, "error_type": "Validation"}, status=status)


#: A vector is ``_CHUNKS`` pieces, each picked by a byte of the text's hash from a pool of 256 (256**4 vectors).
_CHUNKS = 4
_POOL = 256


@lru_cache(maxsize=64)
def _pieces(dimensions: int) -> tuple[tuple[tuple[bytes, str], ...], ...]:
    """Per piece of a ``dimensions`` vector, 256 float32 pieces of norm ``1/sqrt(pieces)`` (little-endian bytes,
    JSON text): any choice of one per piece is a unit vector, built by joining, so answering costs no float math."""
    chunks = min(_CHUNKS, dimensions)
    sizes = [dimensions // chunks + (1 if chunk < dimensions % chunks else 0) for chunk in range(chunks)]
    scale = 1.0 / math.sqrt(chunks)
    pools = []
    for chunk, size in enumerate(sizes):
        pool = []
        for choice in range(_POOL):
            raw = hashlib.shake_256(f"{dimensions}:{chunk}:{choice}".encode()).digest(size)
            values = [byte - 127.5 for byte in raw]
            norm = math.sqrt(sum(value * value for value in values)) or 1.0
            piece = array("f", [value / norm * scale for value in values])
            text = ",".join(map(repr, piece.tolist()))
            if sys.byteorder == "big":
                piece.byteswap()
            pool.append((piece.tobytes(), text))
        pools.append(tuple(pool))
    return tuple(pools)


def _chosen(text: str, dimensions: int) -> list[tuple[bytes, str]]:
    pools = _pieces(dimensions)
    digest = hashlib.blake2b(text.encode(), digest_size=len(pools)).digest()
    return [pool[index] for pool, index in zip(pools, digest, strict=True)]


def packed(text: str, dimensions: int) -> bytes:
    """The text's deterministic unit vector as little-endian float32 bytes."""
    return b"".join(piece for piece, _ in _chosen(text, dimensions))


def vector(text: str, dimensions: int) -> list[float]:
    """The text's deterministic unit vector (float32 values), from a hash of the text."""
    values = array("f")
    values.frombytes(packed(text, dimensions))
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()


def _embedding_json(text: str, dimensions: int, encoding: str) -> str:
    if encoding == "base64":
        return '"' + base64.b64encode(packed(text, dimensions)).decode() + '"'
    return "[" + ",".join(piece for _, piece in _chosen(text, dimensions)) + "]"


def tokens(text: str) -> int:
    return len(text.split())


def _strings(value: Any, field: str) -> list[str] | Reply:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        return _invalid(f"'{field}' must be a string or a non-empty list of strings")
    return value


@dataclass(frozen=True)
class Bei(Behaviour):
    """A BEI engine: embeddings, rerank and classify, with latency growing with the batch."""

    dimensions: int = 384
    base_ms: float = 5.0
    per_input_ms: float = 0.05
    max_inputs: int = 1024
    """Inputs one request may carry (the performance client packs up to 1,024); more answers 413."""
    model_name: str = "bei-emulated"

    def __call__(self, request: ModelRequest) -> Reply:
        route = request.route.strip("/")
        payload = request.payload
        if not isinstance(payload, dict):
            return _invalid("expected a JSON object")
        if route == "v1/embeddings":
            reply = self.embeddings(payload)
        elif route == "rerank":
            reply = self.rerank(payload)
        elif route == "predict":
            reply = self.classify(payload)
        else:
            return Reply({"error": f"Not Found: /{route}"}, status=404)
        return reply

    def _timed(self, body: Any, inputs: int) -> Reply:
        if inputs > self.max_inputs:
            return _invalid(f"batch size {inputs} > maximum allowed batch size {self.max_inputs}", 413)
        return Reply(body, delay=(self.base_ms + self.per_input_ms * inputs) / 1000.0)

    def embeddings(self, payload: dict[str, Any]) -> Reply:
        texts = _strings(payload.get("input"), "input")
        if isinstance(texts, Reply):
            return texts
        dimensions = payload.get("dimensions")
        dimensions = self.dimensions if dimensions is None else dimensions
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or not 0 < dimensions <= MAX_DIMENSIONS:
            return _invalid(f"'dimensions' must be an integer between 1 and {MAX_DIMENSIONS}")
        encoding = payload.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            return _invalid("'encoding_format' must be 'float' or 'base64'")
        # Written as JSON text from pre-rendered pieces: a 128-text request at 384 dimensions costs a few ms (157 ms
        # with json.dumps of fresh floats), so the emulator is not what an embeddings benchmark measures.
        items = ",".join(
            f'{{"object":"embedding","embedding":{_embedding_json(text, dimensions, encoding)},"index":{index}}}'
            for index, text in enumerate(texts)
        )
        used = sum(tokens(text) for text in texts)
        model = json.dumps(str(payload.get("model") or self.model_name))
        usage = f'{{"prompt_tokens":{used},"total_tokens":{used}}}'
        body = f'{{"object":"list","data":[{items}],"model":{model},"usage":{usage}}}'.encode()
        return self._timed(body, len(texts))

    def rerank(self, payload: dict[str, Any]) -> Reply:
        query, texts = payload.get("query"), _strings(payload.get("texts"), "texts")
        if isinstance(texts, Reply):
            return texts
        if not isinstance(query, str):
            return _invalid("'query' must be a string")
        wanted = {word.lower() for word in _WORD.findall(query)}
        results = []
        for index, text in enumerate(texts):
            found = wanted & {word.lower() for word in _WORD.findall(text)}
            share = len(found) / len(wanted) if wanted else 0.0
            result: dict[str, Any] = {"index": index, "score": share * 10 - 5 if payload.get("raw_scores") else share}
            if payload.get("return_text"):
                result["text"] = text
            results.append(result)
        results.sort(key=lambda result: -result["score"])
        return self._timed(results, len(texts))

    def classify(self, payload: dict[str, Any]) -> Reply:
        inputs = payload.get("inputs")
        if isinstance(inputs, list) and all(isinstance(item, list) and len(item) == 1 for item in inputs):
            inputs = [item[0] for item in inputs]  # the performance client sends [["text"], ...]
        texts = _strings(inputs, "inputs")
        if isinstance(texts, Reply):
            return texts
        answer = []
        for text in texts:
            sentiment = sentiment_of(text)
            rest = round((1.0 - sentiment["score"]) / 2, 4)
            labels = [{"label": sentiment["label"], "score": sentiment["score"]}] + [
                {"label": other, "score": rest}
                for other in ("positive", "negative", "neutral")
                if other != sentiment["label"]
            ]
            answer.append(labels)
        return self._timed(answer, len(texts))

    @property
    def spec(self) -> Any:
        return {
            "kind": "bei",
            "dimensions": self.dimensions,
            "base_ms": self.base_ms,
            "per_input_ms": self.per_input_ms,
            "max_inputs": self.max_inputs,
            "model_name": self.model_name,
        }


# --- the per-replica concurrency limit -------------------------------------------------------------------------


class Slots:
    """Requests a BEI deployment runs at once: ``predict_concurrency`` per active replica; the rest wait in order."""

    def __init__(self, deployment: DeploymentRuntime) -> None:
        self._deployment = weakref.ref(deployment)
        self.busy = 0
        self.peak = 0
        self.served = 0
        self.waiting: deque[asyncio.Future[None]] = deque()

    @property
    def capacity(self) -> int:
        deployment = self._deployment()
        if deployment is None:
            return 1
        return deployment.spec.predict_concurrency * max(1, deployment.active_replicas)

    async def acquire(self) -> bool:
        """Take a slot, or wait in line for one (a released slot is handed to the first in line); True if it waited."""
        waited = not (self.busy < self.capacity and not self.waiting)
        if not waited:
            self.busy += 1
        else:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.waiting.append(future)
            try:
                await future
            except BaseException:
                if future in self.waiting:
                    self.waiting.remove(future)
                elif future.done() and not future.cancelled():
                    self.release()  # handed a slot while being cancelled: pass it on
                raise
        self.peak = max(self.peak, self.busy)
        return waited

    def release(self) -> None:
        self.served += 1
        self.busy -= 1
        while self.waiting and self.busy < self.capacity:
            future = self.waiting.popleft()
            if not future.done():
                self.busy += 1
                future.set_result(None)


_SLOTS: weakref.WeakKeyDictionary[DeploymentRuntime, Slots] = weakref.WeakKeyDictionary()


def slots_of(deployment: DeploymentRuntime) -> Slots:
    """The deployment's concurrency slots (``busy``, ``peak``, ``served``, ``waiting``), for tests and benchmarks."""
    slots = _SLOTS.get(deployment)
    if slots is None:
        slots = _SLOTS[deployment] = Slots(deployment)
    return slots


def _inputs_of(route: str, payload: Any) -> int:
    field = {"v1/embeddings": "input", "rerank": "texts", "predict": "inputs"}[route]
    value = payload.get(field) if isinstance(payload, dict) else None
    return 1 if isinstance(value, str) else len(value) if isinstance(value, list) else 0


def routed(call: Call) -> Handler | None:
    """For a ``/sync/{route}`` call on a BEI deployment: set its route key and return its handler (else ``None``)."""
    deployment = call.deployment
    route = "/".join(call.params)
    if deployment is None or not isinstance(deployment.behaviour, Bei) or route not in ROUTE_KEYS:
        return None
    call.route = ROUTE_KEYS[route]
    return serve


async def serve(call: Call) -> Any:
    """Run one BEI request in a free slot of its deployment (the model's latency runs on the emulator clock)."""
    from airflow_provider_baseten.emulator.inference import _run_model

    assert call.deployment is not None
    route = "/".join(call.params)
    call.inputs = _inputs_of(route, await call.json())
    slots = slots_of(call.deployment)
    if await slots.acquire():
        call.arrived = call.state.scheduler.now()  # a queued request's model time starts when it gets its slot
    try:
        return await _run_model(call, route)
    finally:
        slots.release()
