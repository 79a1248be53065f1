"""An embeddings answer as the output lines of its pack: the raw path (JSONL) and the float path (everything else).

JSONL output of float vectors never needs the floats: the raw path decodes the answer with msgspec, keeping each
``embedding`` as its JSON text (``msgspec.Raw``), checks every vector at C speed (an array of numbers, the same
length in the whole answer, the length asked for) and writes each line by joining bytes: the line's head, the
vector's text as the server wrote it (less the spaces some encoders put after commas), ``}``. It parses equal to the
line the float path writes (the same numbers, perhaps spelt otherwise: ``1`` for ``1.0``). Any answer the raw path
cannot prove right (base64 vectors, a vector broken over lines, a missing index, another length) goes through the
float path, which decodes it as :meth:`~airflow_provider_baseten.hooks.engine.EngineMixin.aembed` does and raises the
hook's error naming what is wrong. Parquet output needs float32 vectors, so its journal always takes the float path.
"""

from __future__ import annotations

import base64
from array import array
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

from airflow_provider_baseten.operators._batch_journal import encode_line_bytes

if TYPE_CHECKING:
    from airflow_provider_baseten.hooks.calls import _Call

__all__ = ["EMBEDDING_KEY", "Answer", "float_lines", "raw_lines"]

#: What follows a line's head (its encoded ``{index, id, input_fp}`` without the closing brace).
EMBEDDING_KEY = b',"embedding":'
_END = b"}\n"
#: The bytes of JSON numbers, and the space compact-enough encoders put after commas: deleted, a vector of ``d``
#: numbers leaves ``[`` + ``d - 1`` commas + ``]``. Tabs and newlines are not deleted: a line cannot hold them.
_NUMBER_BYTES = b"0123456789+-.eE "


class Answer:
    """One answer as output: the encoded lines, the tokens it used, the length of its vectors."""

    __slots__ = ("data", "dimensions", "prompt_tokens", "total_tokens")

    def __init__(self, data: bytes, dimensions: int, usage: Any) -> None:
        self.data = data
        self.dimensions = dimensions
        self.prompt_tokens = (usage.prompt_tokens or 0) if usage is not None else 0
        self.total_tokens = (usage.total_tokens or 0) if usage is not None else 0


@cache
def _raw_decoder() -> Callable[[bytes], Any] | None:
    """The answer with each vector kept as its JSON text (syntax checked by msgspec); ``None`` without msgspec."""
    try:
        import msgspec
    except ImportError:
        return None
    vector = msgspec.defstruct("RawVector", [("index", int), ("embedding", msgspec.Raw)])
    usage = msgspec.defstruct("RawUsage", [("prompt_tokens", int, 0), ("total_tokens", int, 0)])
    answer = msgspec.defstruct("RawAnswer", [("data", list[vector]), ("usage", usage | None, None)])  # type: ignore[valid-type]
    return msgspec.json.Decoder(answer).decode


@cache
def _shape(dimensions: int) -> bytes:
    return b"[" + b"," * (dimensions - 1) + b"]"


def _index(item: Any) -> int:
    return int(item.index)


def raw_lines(body: bytes, call: _Call, intents: bytes) -> Answer | None:
    """The lines of a pack (``intents``: its lines so far, encoded, one per text) with the answer's vectors as
    written, or ``None`` when the answer is not plainly right (the float path then decides, and names the error)."""
    decode = _raw_decoder()
    if decode is None:
        return None
    try:
        answer = decode(body)
    except ValueError:
        return None
    data = answer.data
    # Each line without its closing "}\n": a JSON line holds no raw newline, so "}\n" is only ever a line's end.
    heads = intents.split(_END)
    count = len(heads) - 1
    if len(data) != count or not count:
        return None
    in_order = list(range(count))
    if [item.index for item in data] != in_order:
        data = sorted(data, key=_index)
        if [item.index for item in data] != in_order:
            return None
    vectors = [item.embedding for item in data]
    wanted = call.json_body.get("dimensions")
    # The length of the first vector rules the answer, as the float path's "equal lengths" does.
    dimensions = wanted if wanted is not None else len(bytes(vectors[0]).translate(None, _NUMBER_BYTES)) - 1
    if dimensions < 2:  # "[]" and "[0.5]" leave the same shape: the float path tells them apart
        return None
    text = b"".join(vectors)
    if text.translate(None, _NUMBER_BYTES) != _shape(dimensions) * count:
        return None
    if b" " in text:  # "[1.5, 2.0]" (Python's json.dumps) is written as "[1.5,2.0]": output bytes never hang on it
        vectors = [bytes(vector).replace(b" ", b"") for vector in vectors]
    parts: list[Any] = [_END] * (4 * count)
    parts[0::4] = heads[:-1]
    parts[1::4] = [EMBEDDING_KEY] * count
    parts[2::4] = vectors
    return Answer(b"".join(parts), dimensions, answer.usage)


def float_lines(response: Any, lines: list[dict[str, Any]], *, binary: bool) -> Answer:
    """The lines of a decoded, checked answer (``hook._embeddings_answer``); ``binary``: float32 vectors in
    base64 (the Parquet journal), else JSON floats."""
    encoded = []
    for line, entry in zip(lines, response.data, strict=True):
        vector = entry.embedding
        value: Any = base64.b64encode(array("f", vector).tobytes()).decode() if binary else vector
        encoded.append(encode_line_bytes({**line, "embedding": value}))
    dimensions = len(response.data[0].embedding) if response.data else 0
    return Answer(b"".join(encoded), dimensions, response.usage)
