"""The embeddings answer as output lines: the raw path (vector text copied) against the float path (floats decoded)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_baseten.exceptions import BasetenModelError
from airflow_provider_baseten.hooks.baseten import BasetenHook
from airflow_provider_baseten.operators._batch_journal import encode_line_bytes, encode_lines_bytes
from airflow_provider_baseten.operators._embed_lines import float_lines, raw_lines

LINES = [{"index": 7 + k, "id": f"doc-{k}", "input_fp": f"{k:016x}"} for k in range(3)]
VECTORS = [[0.25, -1.5, 0.375, 12.0], [1.0, 2.0, 3.0, 4.0], [-0.125, 0.5, 96.5, -2.75]]  # float32-exact


def heads(lines: list[dict[str, Any]] = LINES) -> bytes:
    """The pack's intents: its lines so far, encoded."""
    return encode_lines_bytes(lines)


def call(dimensions: int | None = None, count: int = len(LINES)) -> Any:
    body: dict[str, Any] = {"input": ["t"] * count, "model": "model"}
    if dimensions is not None:
        body["dimensions"] = dimensions
    return SimpleNamespace(json_body=body, what="embed on model bei123")


def answer(vectors: list[Any], *, order: list[int] | None = None, usage: bool = True) -> bytes:
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    if order is not None:
        data = [data[i] for i in order]
    body: dict[str, Any] = {"object": "list", "data": data, "model": "bei"}
    if usage:
        body["usage"] = {"prompt_tokens": 5, "total_tokens": 6}
    return json.dumps(body, separators=(",", ":")).encode()


def float_path(body: bytes, dimensions: int | None = None) -> bytes:
    response = BasetenHook()._embeddings_answer(body, call(dimensions), lambda: pytest.fail("no error expected"))
    return float_lines(response, LINES, binary=False).data


def test_raw_lines_are_the_float_path_s_lines_byte_for_byte() -> None:
    body = answer(VECTORS, order=[2, 0, 1])  # out of order, as BEI may answer
    raw = raw_lines(body, call(), heads())
    assert raw is not None
    assert raw.data == float_path(body)
    assert [json.loads(line) for line in raw.data.splitlines()] == [
        {**line, "embedding": vector} for line, vector in zip(LINES, VECTORS, strict=True)
    ]
    assert (raw.dimensions, raw.prompt_tokens, raw.total_tokens) == (4, 5, 6)


def test_raw_lines_keep_the_server_s_spelling_and_parse_equal() -> None:
    """Integers (``1`` for ``1.0``) are kept as written, spaces after commas dropped: the same numbers once parsed."""
    text = "[1, 2.50, -3E-2, 0, 1e300]"
    body = ('{"data":[{"index":0,"embedding":' + text + "}]}").encode()
    raw = raw_lines(body, call(count=1), heads(LINES[:1]))
    assert raw is not None
    written = text.replace(" ", "").encode()
    assert raw.data == encode_line_bytes(LINES[0])[:-2] + b',"embedding":' + written + b"}\n"
    assert json.loads(raw.data)["embedding"] == [1.0, 2.5, -0.03, 0.0, 1e300]
    assert (raw.prompt_tokens, raw.total_tokens) == (0, 0)  # no usage: none counted


@pytest.mark.parametrize(
    ("vectors", "dimensions", "why"),
    [
        ([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]], None, "one vector shorter"),
        ([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0]], None, "one vector longer"),
        (VECTORS, 3, "not the dimensions asked for"),
        ([[1.0, "2", 3.0, 4.0]] * 3, None, "a string in a vector"),
        ([[1.0, [2.0, 3.0], 4.0, 5.0]] * 3, None, "a nested array"),
        ([[1.0, None, 3.0, 4.0]] * 3, None, "a null"),
        ([[1.0, True, 3.0, 4.0]] * 3, None, "a boolean"),
        ([{"a": 1.0}] * 3, None, "an object"),
        (["AACAPwAAAEA="] * 3, None, "base64 vectors"),
        ([[0.5]] * 3, None, "one dimension (indistinguishable from [] by shape)"),
    ],
)
def test_raw_lines_refuse_what_they_cannot_prove_right(vectors: list[Any], dimensions: int | None, why: str) -> None:
    assert raw_lines(answer(vectors), call(dimensions), heads()) is None, why


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (answer(VECTORS[:2]), "a vector missing"),
        (answer(VECTORS, order=[0, 0, 1]), "an index repeated"),
        (b'{"data":[{"index":0,"embedding":[1,2]},{"index":1,"embedding":[1,2]},{"index":3,"embedding":[1,2]}]}',
         "an index out of range"),
        (b"not json", "not JSON"),
        (b'{"data":[{"index":0,"embedding":[1,,2]}]}', "malformed JSON"),
    ],
)  # fmt: skip
def test_raw_lines_refuse_answers_of_the_wrong_shape(body: bytes, why: str) -> None:
    assert raw_lines(body, call(), heads()) is None, why


def test_a_vector_broken_over_lines_never_reaches_a_line_but_the_float_path_writes_it() -> None:
    body = answer(VECTORS).replace(b"[0.25,", b"[0.25,\n")
    assert raw_lines(body, call(), heads()) is None
    data = float_path(body)
    assert data.count(b"\n") == 3
    assert json.loads(data.splitlines()[0])["embedding"] == VECTORS[0]


def test_a_dimension_mismatch_is_the_hook_s_clear_error_on_the_float_path() -> None:
    """What the raw path refuses, the float path names: the lengths and the dimensions asked for."""
    body = answer([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]])
    with pytest.raises(BasetenModelError, match=r"vector lengths \[3, 4\] differ from one another"):
        float_path(body)
    with pytest.raises(BasetenModelError, match="differ from the 3 dimensions asked for"):
        float_path(answer(VECTORS), dimensions=3)


def test_the_float_path_writes_float32_base64_for_the_parquet_journal() -> None:
    import base64
    from array import array

    response = BasetenHook()._embeddings_answer(answer(VECTORS[:2]), call(count=2), lambda: pytest.fail("no error"))
    lines = [json.loads(line) for line in float_lines(response, LINES[:2], binary=True).data.splitlines()]
    assert [array("f", base64.b64decode(line["embedding"])).tolist() for line in lines] == VECTORS[:2]


@pytest.mark.parametrize(
    "awkward",
    [
        {"index": 1, "id": float("nan"), "input_fp": "0" * 16},  # msgspec would write null
        {"index": 1, "id": 2**70, "input_fp": "0" * 16},  # past 64 bits
        {"index": 1, "id": {1: "x"}, "input_fp": "0" * 16},  # a non-string key
        {"index": 1, "id": "a}\nb", "input_fp": "0" * 16},  # "}" and a newline inside a string
    ],
)
def test_a_pack_s_lines_encode_as_each_line_alone(awkward: dict[str, Any]) -> None:
    """One msgspec call per pack, the same bytes as one line at a time, and a raw line per text still."""
    lines = [LINES[0], awkward]
    encoded = encode_lines_bytes(lines)
    assert encoded == b"".join(map(encode_line_bytes, lines))
    raw = raw_lines(answer(VECTORS[:2]), call(count=2), encoded)
    assert raw is not None
    assert raw.data.count(b"\n") == 2
    assert raw.data.splitlines()[1].startswith(encode_line_bytes(awkward)[:-2] + b',"embedding":[1.0,')
