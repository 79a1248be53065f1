"""``BasetenEmbeddingsOperator``: embed a document set on a BEI deployment, packed, concurrent and resumable.

It shares batch predict's machinery: the inputs (``_batch_inputs``: a list or a JSONL/CSV/Parquet file read
lazily), the send loop (``_send_loop``: workers on the hot path, stop, grace period, progress), the output journal
(``_batch_journal``: one line per input, an intents sidecar on local files, whole parts on object stores) and its
resume rule (a later try keeps every line whose input is unchanged and sends only the rest). What differs: inputs
are packed ``batch_size`` texts per request (the packed request is the unit of intent), a request still in flight
when a try ends is sent again by the next one (embeddings have no side effects), and Parquet output is written from
the journal at the end of the try.
"""

from __future__ import annotations

import asyncio
import base64
import time
from array import array
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from airflow_provider_baseten.exceptions import BasetenConfigError
from airflow_provider_baseten.hooks.calls import CUSTOMER_REQUEST_ID_HEADER, encode_json
from airflow_provider_baseten.operators._base import ADDRESS_TEMPLATE_FIELDS, BasetenBaseOperator, check_seconds
from airflow_provider_baseten.operators._batch_inputs import (
    Item,
    ListSource,
    Source,
    import_pyarrow_parquet,
    input_error,
    open_file_source,
    parse_list,
)
from airflow_provider_baseten.operators._batch_journal import (
    BatchOutput,
    LocalOutput,
    PartsOutput,
    encode_lines_bytes,
    parse_line,
)
from airflow_provider_baseten.operators._batch_run import BatchRunMixin, Wording, default_output_path
from airflow_provider_baseten.operators._embed_lines import float_lines, raw_lines
from airflow_provider_baseten.operators._lineage import LineageMixin, output_asset
from airflow_provider_baseten.operators._send_loop import Encoded, RunState, Unit, task_prefix
from airflow_provider_baseten.operators._storage import as_path, is_local, storage_uri
from airflow_provider_baseten.operators.batch import OnRerun
from airflow_provider_baseten.operators.links import BasetenModelLink

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context, ObjectStoragePath

    from airflow_provider_baseten.hooks.addressing import Target
    from airflow_provider_baseten.hooks.baseten import BasetenHook
    from airflow_provider_baseten.hooks.engine import EmbedOptions
    from airflow_provider_baseten.hooks.hotpath import HotSender

__all__ = ["BasetenEmbeddingsOperator"]

EMBEDDINGS_FOLDER = "baseten-embeddings"
OutputFormat = Literal["jsonl", "parquet"]
#: Defaults measured against the emulator's BEI deployment (benchmarks/embeddings.py, benchmarks/README.md).
DEFAULT_BATCH_SIZE = 128
DEFAULT_MAX_CHARS = 64_000
#: BEI's ceiling on inputs per request (the performance client's too).
MAX_BATCH_SIZE = 1024
_PARQUET_ROWS = 8192


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BasetenConfigError(f"{name} must be a positive integer, got {value!r}.")
    return value


class TextBatchParams:
    """The parameters the text-batch operators (embeddings, rerank, classify) share, checked once for all three."""

    texts: list[Any] | str | None
    input_path: str | ObjectStoragePath | None
    output_path: str | ObjectStoragePath | None
    text_field: str
    id_field: str | None
    model: str | None
    batch_size: int
    max_chars_per_request: int
    max_concurrency: int
    on_rerun: str
    part_size: int
    part_interval: float
    max_failed_fraction: float
    progress_interval: float
    kill_grace_period: float
    timeout: float | None
    outlets: Any
    _run_state: RunState | None

    def _set_text_batch_params(
        self,
        *,
        texts: list[Any] | str | None,
        input_path: str | ObjectStoragePath | None,
        output_path: str | ObjectStoragePath | None,
        text_field: str,
        id_field: str | None,
        model: str | None,
        batch_size: int,
        max_chars_per_request: int,
        max_concurrency: int,
        on_rerun: OnRerun,
        part_size: int,
        part_interval: float,
        max_failed_fraction: float,
        progress_interval: float,
        kill_grace_period: float,
        timeout: float | None,
    ) -> None:
        """Check and set what every text-batch operator takes; an output path that names an asset joins the outlets.
        Raises :class:`BasetenConfigError` naming the parameter."""
        if (texts is None) == (input_path is None):
            raise BasetenConfigError(
                "Pass exactly one of texts= (a list) and input_path= (a JSONL, CSV or Parquet file)."
            )
        if isinstance(texts, tuple | set | dict):
            raise BasetenConfigError("texts must be a list (or a templated string rendering to one).")
        self.batch_size = _positive_int("batch_size", batch_size)
        if batch_size > MAX_BATCH_SIZE:
            raise BasetenConfigError(f"batch_size must be at most {MAX_BATCH_SIZE} (BEI's limit), got {batch_size}.")
        self.max_chars_per_request = _positive_int("max_chars_per_request", max_chars_per_request)
        self.max_concurrency = _positive_int("max_concurrency", max_concurrency)
        self.part_size = _positive_int("part_size", part_size)
        if on_rerun not in get_args(OnRerun):
            raise BasetenConfigError(f"on_rerun must be one of {', '.join(get_args(OnRerun))}; got {on_rerun!r}.")
        for name, key in (("text_field", text_field), ("id_field", id_field), ("model", model)):
            if key is not None and (not isinstance(key, str) or not key):
                raise BasetenConfigError(f"{name} must be a non-empty string.")
        fraction_ok = isinstance(max_failed_fraction, int | float) and not isinstance(max_failed_fraction, bool)
        if not fraction_ok or not 0.0 <= max_failed_fraction <= 1.0:
            raise BasetenConfigError(f"max_failed_fraction must be a number from 0 to 1, got {max_failed_fraction!r}.")
        self.texts = texts
        self.input_path = input_path
        self.output_path = output_path
        self.text_field = text_field
        self.id_field = id_field
        self.model = model
        self.on_rerun = on_rerun
        self.max_failed_fraction = float(max_failed_fraction)
        self.part_interval = check_seconds(part_interval, "part_interval")
        self.progress_interval = check_seconds(progress_interval, "progress_interval", allow_zero=True)
        self.kill_grace_period = check_seconds(kill_grace_period, "kill_grace_period", allow_zero=True)
        self.timeout = None if timeout is None else check_seconds(timeout, "timeout")
        asset = output_asset(output_path)
        if asset is not None and asset not in self.outlets:
            self.outlets = [*self.outlets, asset]
        self._run_state = None


class BasetenEmbeddingsOperator(TextBatchParams, BatchRunMixin, LineageMixin, BasetenBaseOperator):
    """Embed many texts on a BEI deployment (``/sync/v1/embeddings``), packed, concurrent, resumable.

    **Inputs.** ``texts`` (a templated list of strings, or of records) or ``input_path`` (a JSONL, CSV or Parquet
    file by its suffix, at a local path or any ``ObjectStoragePath`` URI, read lazily: memory stays flat in the
    number of texts). A record that is a string is the text; of a dict record, ``text_field`` (default ``"text"``)
    is the text and ``id_field`` (optional) the ``id`` written with it (default: the 0-based ``index``). A record
    without a non-empty string text is written as an error and never sent.

    **Packing.** Up to ``batch_size`` texts per request, and fewer when their characters would pass
    ``max_chars_per_request`` (a text longer than that goes alone); ``max_concurrency`` requests in flight.

    **Outputs.** ``output_path`` (templated; ``.parquet`` picks Parquet, anything else JSONL unless
    ``output_format`` says), else ``{[baseten] output_location}/baseten-embeddings/{dag_id}/{run_id}/{task_id}
    [-{map_index}].jsonl``. JSONL: one line ``{"index", "id", "input_fp", "embedding": [floats]}`` per text (or
    ``"error": {...}`` instead of ``embedding``), in completion order; on an object store it is a folder of parts,
    as for batch predict. Parquet (the ``parquet`` extra, pyarrow): one file with the columns ``index`` (int64),
    ``id`` (string), ``embedding`` (list of float32; null on error) and ``error`` (string), written at the end of
    each try from a journal kept beside it (``{output}.journal.jsonl``, or a ``.journal`` folder on object stores;
    float32 vectors in base64, so a resume reads it back exactly). The task returns ``{output_path, parts, total,
    succeeded, failed, skipped_existing, dimensions, usage, duration_s}`` (``usage``: the tokens of this try's
    requests). A literal ``output_path`` is also declared as an outlet asset, so a DAG can be scheduled on it.

    **Cost, retries, re-runs.** Each request is billed by its tokens. Embeddings have no side effects, so the hook
    retries 429s, 5xx and timeouts within its budget. A request that still fails writes an error line for each of
    its texts; a re-run (any try after the first) with ``on_rerun="resume"`` (default) keeps every line whose text
    is unchanged (same index, fingerprint, ``model`` and ``dimensions``) and sends only the rest, errors that
    never reached the model included; ``"fail"`` refuses to mix outputs of other inputs; ``"replace"`` starts over.
    Requests still in flight when a try ends (kill, timeout, SIGTERM, even SIGKILL on a local output, whose
    intents record them) have no line and are sent again by the next try: at most ``max_concurrency`` requests
    are paid twice, and no text is lost. Authentication and not-found errors stop the task at once.

    Rerank and classify are not options of this operator: their inputs (a query with candidate lists; one text
    per label set) and outputs (scores per candidate, labels per text) have other shapes, so they belong in small
    siblings built on the same inputs and journal, not behind a ``task=`` switch that changes every column.

    :param baseten_conn_id: the ``baseten`` connection (templated).
    :param model_id: the BEI model to call (templated).
    :param environment: ``production`` (default), ``development`` or a named environment (templated).
    :param deployment_id: pin one deployment instead of an environment (templated).
    :param regional: use the regional host ``model-{id}-{environment}.api.baseten.co``.
    :param texts: the texts (templated): a list of strings or records, or a JSON string of one.
    :param input_path: a JSONL, CSV or Parquet file of records (templated). Exactly one of ``texts`` and
        ``input_path``.
    :param output_path: where to write the vectors (templated): local path, URI or ``ObjectStoragePath``.
    :param output_format: ``"jsonl"`` or ``"parquet"``; default: by the suffix of ``output_path``, else JSONL.
    :param text_field: key of each dict record holding its text (default ``"text"``).
    :param id_field: key of each dict record whose value is written as ``id``; default: the index.
    :param model: the ``model`` field of each request (BEI ignores it; default ``"model"``).
    :param dimensions: the vector size to ask for (Matryoshka models), default: the model's.
    :param encoding_format: ``"float"`` or ``"base64"`` on the wire (default: the server's, float); the output is
        the same either way.
    :param batch_size: texts per request (default 128, at most 1024).
    :param max_chars_per_request: characters per request (default 64,000).
    :param max_concurrency: requests in flight at once (default 32).
    :param on_rerun: ``"resume"`` (default), ``"fail"`` or ``"replace"`` (see above).
    :param part_size: object stores: lines per part (default 10,000).
    :param part_interval: object stores: seconds after which a part is written even if not full (default 60).
    :param max_failed_fraction: the task fails when more than this fraction of the texts ends in an error
        (default 0.0).
    :param progress_interval: seconds between progress lines (done, rate, ETA, tokens).
    :param kill_grace_period: on ``on_kill``, seconds to let in-flight requests finish before they are dropped.
    :param timeout: read timeout in seconds of each request (default: the connection's).
    """

    template_fields: Sequence[str] = (*ADDRESS_TEMPLATE_FIELDS, "texts", "input_path", "output_path")
    template_fields_renderers = {"texts": "json"}
    operator_extra_links = (BasetenModelLink(),)
    target_kind = "model"
    ui_color = "#e5fff0"

    #: Retries the whole try affords per request sent (at least 10; 429/529 spend none), as batch predict.
    retry_budget_fraction = 0.05
    wording = Wording(
        title="Embeddings", run="embeddings", items="texts", sent="embedded", results="embeddings", id_key="id"
    )
    #: Embeddings have no side effects: a request in flight when a try ended is sent again by the next one.
    resends_in_flight = True
    model: str  # the OpenAI ``model`` field BEI ignores; always sent

    _clock: Callable[[], float] = staticmethod(time.monotonic)
    _sleep: Callable[[float], Awaitable[None]] = staticmethod(asyncio.sleep)

    def __init__(
        self,
        *,
        texts: list[Any] | str | None = None,
        input_path: str | ObjectStoragePath | None = None,
        output_path: str | ObjectStoragePath | None = None,
        output_format: OutputFormat | None = None,
        text_field: str = "text",
        id_field: str | None = None,
        model: str = "model",
        dimensions: int | None = None,
        encoding_format: Literal["float", "base64"] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_chars_per_request: int = DEFAULT_MAX_CHARS,
        max_concurrency: int = 32,
        on_rerun: OnRerun = "resume",
        part_size: int = 10_000,
        part_interval: float = 60.0,
        max_failed_fraction: float = 0.0,
        progress_interval: float = 10.0,
        kill_grace_period: float = 10.0,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._set_text_batch_params(
            texts=texts,
            input_path=input_path,
            output_path=output_path,
            text_field=text_field,
            id_field=id_field,
            model=model,
            batch_size=batch_size,
            max_chars_per_request=max_chars_per_request,
            max_concurrency=max_concurrency,
            on_rerun=on_rerun,
            part_size=part_size,
            part_interval=part_interval,
            max_failed_fraction=max_failed_fraction,
            progress_interval=progress_interval,
            kill_grace_period=kill_grace_period,
            timeout=timeout,
        )
        if output_format is not None and output_format not in get_args(OutputFormat):
            raise BasetenConfigError(f"output_format must be 'jsonl' or 'parquet', got {output_format!r}.")
        if encoding_format not in (None, "float", "base64"):
            raise BasetenConfigError(f"encoding_format must be 'float' or 'base64', got {encoding_format!r}.")
        if dimensions is not None and (
            isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1
        ):
            raise BasetenConfigError(f"dimensions must be a positive integer or None, got {dimensions!r}.")
        self.output_format = output_format
        self.dimensions = dimensions
        self.encoding_format = encoding_format

    # --- execute ----------------------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        run = self._begin(context, self.batch_size)
        parquet = self._format(run.path) == "parquet"
        packer = _Packer(
            run.source.items(skip=run.existing.done), self.batch_size, self.max_chars_per_request, self.text_field
        )
        options: EmbedOptions = {
            "model": self.model,
            "dimensions": self.dimensions,
            "encoding_format": self.encoding_format,
            "timeout": self.timeout,
        }
        job = _EmbedJob(self.hook, run.target, packer, options, task_prefix(context, self), parquet)
        self._send_all(run, job)
        self._raise_if_write_failed(run)
        if parquet and not run.state.stop_reason and run.state.fatal is None:
            write_parquet(reopen(run.output), run.path)
        manifest: dict[str, Any] = {
            "output_path": storage_uri(run.path),
            "parts": [storage_uri(run.path)] if parquet else run.output.part_uris(),
            **self._counts(run),
            "dimensions": job.dimensions or self.dimensions,
            "usage": {"prompt_tokens": job.prompt_tokens, "total_tokens": job.total_tokens},
        }
        return self._outcome(run, manifest)

    # --- inputs and outputs -------------------------------------------------------------------------------------

    def _output_of(self, path: ObjectStoragePath | Path) -> BatchOutput:
        """Parquet: the JSONL journal beside the file (pyarrow checked first: nothing is sent without it)."""
        if self._format(path) != "parquet":
            return super()._output_of(path)
        import_pyarrow_parquet("Parquet output")
        return BatchOutput.at(journal_path(path), part_size=self.part_size, part_interval=self.part_interval)

    def _format(self, path: ObjectStoragePath | Path) -> OutputFormat:
        if self.output_format is not None:
            return self.output_format
        return "parquet" if Path(str(path.name)).suffix.lower() in (".parquet", ".pq") else "jsonl"

    def _source(self) -> Source:
        # What else decides a line: a changed model or size makes every earlier vector stale.
        salt = [self.text_field, self.model, self.dimensions]
        if self.input_path not in (None, ""):
            if self.texts not in (None, ""):
                raise BasetenConfigError("Pass exactly one of texts= and input_path=.")
            return open_file_source(as_path(self.input_path), self.id_field, None, salt)  # type: ignore[arg-type]
        texts: Any = self.texts
        if isinstance(texts, str):
            texts = parse_list(texts)
        if not isinstance(texts, list | tuple):
            raise BasetenConfigError(f"texts must render to a list, got {type(texts).__name__}.")
        return ListSource(list(texts), self.id_field, None, salt)

    def _output_path(self, context: Context | dict[str, Any]) -> ObjectStoragePath | Path:
        suffix = ".parquet" if self.output_format == "parquet" else ".jsonl"
        return default_output_path(self.output_path, context, EMBEDDINGS_FOLDER, suffix)


# --- packing and lines -----------------------------------------------------------------------------------------


class _Packer:
    """Packs from the shared item iterator in one pass; ``next()`` never awaits, so workers take disjoint packs."""

    def __init__(self, items: Iterator[Item], batch_size: int, max_chars: int, text_field: str) -> None:
        self.items = items
        self.batch_size = batch_size
        self.max_chars = max_chars
        self.text_field = text_field
        self.exhausted = False
        self._carry: Item | None = None

    def next(self) -> tuple[list[dict[str, Any]], list[str], list[dict[str, Any]]]:
        """The next pack (each text's line so far, and the texts) and the error lines of invalid records met."""
        lines: list[dict[str, Any]] = []
        texts: list[str] = []
        invalid: list[dict[str, Any]] = []
        chars = 0
        batch_size, max_chars, field, items = self.batch_size, self.max_chars, self.text_field, self.items
        while len(texts) < batch_size:
            item = self._carry
            if item is None:
                item = next(items, None)
                if item is None:
                    self.exhausted = True
                    break
            else:
                self._carry = None
            record = item.payload
            text = record.get(field) if isinstance(record, dict) else record
            if item.error is not None or not isinstance(text, str) or not text:
                invalid.append({**_line_of(item), "error": item.error or input_error(self._problem(record, text))})
                continue
            size = len(text)
            if texts and chars + size > max_chars:
                self._carry = item  # opens the next pack
                break
            lines.append({"index": item.index, "id": item.input_id, "input_fp": item.fingerprint})
            texts.append(text)
            chars += size
        return lines, texts, invalid

    def _problem(self, record: Any, text: Any) -> str:
        where = f"its {self.text_field!r}" if isinstance(record, dict) else "the record"
        return f"{where} is not a non-empty string ({type(text).__name__})."


def _line_of(item: Item) -> dict[str, Any]:
    return {"index": item.index, "id": item.input_id, "input_fp": item.fingerprint}


class _EmbedJob:
    """Packs of texts, one ``/sync/v1/embeddings`` request each on the hot path; counts tokens and dimensions.

    Each pack's lines are encoded once, when it is taken: the intents are those bytes, and each output line is
    its head joined to the vector (``_embed_lines``: the raw path for JSONL of float vectors, chosen once here;
    the float path for Parquet, base64 on the wire, and any answer the raw path cannot prove right).
    """

    progress_format = (
        "Embeddings %s: %d/%s texts done (%d failed, %d requests in flight, %d from an earlier try), "
        "%.1f texts/s, ETA %s, %d tokens"
    )

    def __init__(
        self, hook: BasetenHook, target: Target, packer: _Packer, options: EmbedOptions, prefix: str, binary: bool
    ) -> None:
        from airflow_provider_baseten.hooks.hotpath import customer_request_id

        self.hook = hook
        self.target = target
        self.packer = packer
        self.options = options
        self.prefix = prefix
        self.binary = binary
        self.raw = not binary and options.get("encoding_format") != "base64"
        self.request_id = customer_request_id
        self.prompt_tokens = 0
        self.total_tokens = 0
        self.dimensions: int | None = None

    def take(self) -> tuple[Unit | None, list[dict[str, Any]]]:
        lines, texts, invalid = self.packer.next()
        if not lines:
            return None, invalid
        return Unit(lines, texts, encode_lines_bytes(lines)), invalid

    async def send(self, sender: HotSender, unit: Unit) -> Encoded:
        hook = self.hook
        call = hook._embed_call(self.target, unit.payload, self.options)
        request_id = self.request_id(self.prefix, unit.key) + f"+{len(unit.lines)}"
        reply = await sender.request(
            call, encode_json(call.json_body), headers={CUSTOMER_REQUEST_ID_HEADER: request_id}
        )
        answer = raw_lines(reply.body, call, unit.intents) if self.raw and unit.intents is not None else None
        if answer is None:
            response = hook._embeddings_answer(reply.body, call, reply.as_httpx)
            answer = float_lines(response, unit.lines, binary=self.binary)
        self.prompt_tokens += answer.prompt_tokens
        self.total_tokens += answer.total_tokens
        self.dimensions = self.dimensions or answer.dimensions
        return Encoded(answer.data, len(unit.lines))

    def abandoned(self, unit: Unit) -> None:
        """No side effects: released, the next try sends it again (at most ``max_concurrency`` paid twice)."""
        return None

    def progress_extra(self) -> tuple[Any, ...]:
        return (self.total_tokens,)


# --- Parquet ------------------------------------------------------------------------------------------------------


def journal_path(path: ObjectStoragePath | Path) -> ObjectStoragePath | Path:
    """The JSONL journal a Parquet output is written from: a file beside it, or a folder on an object store."""
    return path.with_name(path.name + (".journal.jsonl" if is_local(path) else ".journal"))


def reopen(output: BatchOutput) -> list[ObjectStoragePath | Path]:
    """The files of a journal as they are now (the parts written by this try included)."""
    if isinstance(output, LocalOutput):
        return [output.path] if output.path.exists() else []
    assert isinstance(output, PartsOutput)
    return list(PartsOutput(output.folder, part_size=1, part_interval=1.0).parts())


def journal_records(files: list[ObjectStoragePath | Path]) -> Iterator[dict[str, Any]]:
    for file in files:
        with file.open("rb") as handle:
            for raw in handle:
                record = parse_line(raw if raw.endswith(b"\n") else raw + b"\n")
                if record is not None:
                    yield record


def write_parquet(files: list[ObjectStoragePath | Path], path: ObjectStoragePath | Path) -> None:
    """The journal as one Parquet file, ``_PARQUET_ROWS`` rows per row group: memory flat in the number of texts."""
    import pyarrow as pa

    parquet = import_pyarrow_parquet("Parquet output")
    schema = pa.schema(
        [("index", pa.int64()), ("id", pa.string()), ("embedding", pa.list_(pa.float32())), ("error", pa.string())]
    )
    if is_local(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    records = journal_records(files)
    with path.open("wb") as handle, parquet.ParquetWriter(handle, schema) as out:
        while True:
            rows = [record for _, record in zip(range(_PARQUET_ROWS), records, strict=False)]
            if not rows:
                break
            out.write_batch(_record_batch(pa, schema, rows))


def _record_batch(pa: Any, schema: Any, rows: list[dict[str, Any]]) -> Any:
    offsets: list[int | None] = [0]
    chunks: list[bytes] = []
    size = 0
    errors: list[str | None] = []
    for row in rows:
        vector = row.get("embedding")
        if vector is None:
            offsets[-1] = None  # a null list: its end offset repeats the start
            offsets.append(size)
            error = row.get("error")
            errors.append(str(error.get("message")) if isinstance(error, dict) else str(error))
            continue
        raw = base64.b64decode(vector) if isinstance(vector, str) else array("f", vector).tobytes()
        chunks.append(raw)
        size += len(raw) // 4
        offsets.append(size)
        errors.append(None)
    values = pa.Array.from_buffers(pa.float32(), size, [None, pa.py_buffer(b"".join(chunks))])
    embedding = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)
    ids = [None if row.get("id") is None else str(row["id"]) for row in rows]
    return pa.record_batch(
        [
            pa.array([row["index"] for row in rows], pa.int64()),
            pa.array(ids, pa.string()),
            embedding,
            pa.array(errors, pa.string()),
        ],
        schema=schema,
    )
