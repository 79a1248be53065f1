"""Rerank and classify on a BEI deployment: the embeddings operator's siblings (issue 12, deliverable 2).

Same inputs (a templated list or a JSONL/CSV/Parquet file, ``text_field``/``id_field``), same packing
(``embeddings._Packer``: ``batch_size`` texts and ``max_chars_per_request`` characters per request) and the same
journal and resume rule as embeddings; what differs is the request (``/sync/rerank``: a query and the packed
candidates; ``/sync/predict``: the packed texts) and the line an answer becomes. Those two differences are the
:class:`RerankJob` and :class:`ClassifyJob` here, shaped for the shared send loop (``_send_loop.Job``: ``take``,
``send``, ``abandoned``, ``progress_extra``), which is being built on the ``sendloop`` branch.

Their ``execute`` is the shared steps of the batch operators (``_batch_run.BatchRunMixin``: take stock, send
loop, counts, outcome) with one of these jobs; a request in flight when a try ends is sent again by the next one
(rerank and classify have no side effects), as for embeddings.

Why no ``top_n``: candidates are packed across many requests and written as each request answers (that is what
makes the output resumable and memory flat), so a top-n needs every score first; a reader of the output sorts by
``score`` (BEI's sigmoid scores, ``raw_scores=False``, are comparable across requests).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_baseten.exceptions import BasetenConfigError, BasetenModelError
from airflow_provider_baseten.hooks.calls import CUSTOMER_REQUEST_ID_HEADER, encode_json
from airflow_provider_baseten.operators._base import ADDRESS_TEMPLATE_FIELDS, BasetenBaseOperator
from airflow_provider_baseten.operators._batch_inputs import ListSource, Source, open_file_source, parse_list
from airflow_provider_baseten.operators._batch_run import BatchRunMixin, Wording, default_output_path
from airflow_provider_baseten.operators._lineage import LineageMixin
from airflow_provider_baseten.operators._send_loop import task_prefix
from airflow_provider_baseten.operators._storage import as_path
from airflow_provider_baseten.operators.batch import OnRerun
from airflow_provider_baseten.operators.embeddings import TextBatchParams, _EmbedJob, _Packer
from airflow_provider_baseten.operators.links import BasetenModelLink

if TYPE_CHECKING:
    from pathlib import Path

    from airflow.providers.common.compat.sdk import Context, ObjectStoragePath

    from airflow_provider_baseten.hooks.addressing import Target
    from airflow_provider_baseten.hooks.baseten import BasetenHook
    from airflow_provider_baseten.hooks.engine import ClassifyOptions, RerankOptions
    from airflow_provider_baseten.hooks.engine_models import ClassifyLabel, RerankResult
    from airflow_provider_baseten.hooks.hotpath import HotSender
    from airflow_provider_baseten.operators._batch_journal import IndexSet

__all__ = ["BasetenClassifyOperator", "BasetenRerankOperator", "ClassifyJob", "RerankJob"]

Line = dict[str, Any]
TruncationDirection = Literal["Left", "Right"]
#: Rerank and classify requests are small (a score or a few labels per text): the performance client's default.
DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_CHARS = 64_000
SCORES_FOLDER = "baseten-scores"


# --- answer -> lines ------------------------------------------------------------------------------------------------


def rerank_lines(lines: Sequence[Line], results: Sequence[RerankResult], *, return_text: bool) -> list[Line]:
    """One line per candidate, in the pack's order: ``{index, id, input_fp, score[, text]}``.

    ``results`` come best first with indices within the request (checked by the hook); a candidate the answer
    left out is an error line, never a silent gap.
    """
    by_index = {result.index: result for result in results}
    out: list[Line] = []
    for position, line in enumerate(lines):
        result = by_index.get(position)
        if result is None:
            out.append({**line, "error": _answer_error(f"the rerank answer has no score for candidate {position}.")})
            continue
        scored: Line = {**line, "score": result.score}
        if return_text:
            scored["text"] = result.text
        out.append(scored)
    return out


def classify_lines(lines: Sequence[Line], labels: Sequence[Sequence[ClassifyLabel]]) -> list[Line]:
    """One line per text: ``{index, id, input_fp, labels: [{label, score}]}`` (the hook checked the counts)."""
    if len(labels) != len(lines):
        raise BasetenModelError(f"The classify answer has {len(labels)} label lists for {len(lines)} texts.")
    return [
        {**line, "labels": [{"label": label.label, "score": label.score} for label in text_labels]}
        for line, text_labels in zip(lines, labels, strict=True)
    ]


def _answer_error(message: str) -> dict[str, Any]:
    # The request reached the model (it answered): not re-sent by a resume.
    return {"type": "BasetenModelError", "message": message, "status_code": None, "request_id": None,
            "model_may_have_run": True}  # fmt: skip


# --- jobs (the shared send loop's ``Job``) ---------------------------------------------------------------------------


class _ScoringJob:
    """Packs of texts, one engine request each on the hot path; no side effects, so an abandoned pack is released."""

    label = "Scoring"
    noun = "texts"

    def __init__(self, hook: BasetenHook, target: Target, packer: _Packer, prefix: str) -> None:
        self.hook = hook
        self.target = target
        self.packer = packer
        self.prefix = prefix
        self.requests = 0
        self.progress_format = (
            f"{self.label} %s: %d/%s {self.noun} done (%d failed, %d requests in flight, %d from an earlier try), "
            f"%.1f {self.noun}/s, ETA %s, %d requests"
        )

    #: The next pack as a unit (``None`` at the end) and the error lines of invalid records met on the way: the
    #: embeddings job's own ``take`` (the same packer and lines), so a change to how packs are taken serves both.
    take = _EmbedJob.take

    def request_id(self, key: int, size: int) -> str:
        from airflow_provider_baseten.hooks.hotpath import customer_request_id

        return f"{customer_request_id(self.prefix, key)}+{size}"

    def abandoned(self, unit: Any) -> None:
        """No side effects: released, the next try sends it again (at most ``max_concurrency`` paid twice)."""
        return None

    def progress_extra(self) -> tuple[Any, ...]:
        return (self.requests,)

    async def send(self, sender: HotSender, unit: Any) -> list[Line]:
        raise NotImplementedError

    async def _post(self, sender: HotSender, call: Any, key: int, size: int) -> Any:
        reply = await sender.request(
            call, encode_json(call.json_body), headers={CUSTOMER_REQUEST_ID_HEADER: self.request_id(key, size)}
        )
        self.requests += 1
        return sender.result(reply, call).data


class RerankJob(_ScoringJob):
    label = "Rerank"
    noun = "candidates"

    def __init__(
        self, hook: BasetenHook, target: Target, packer: _Packer, prefix: str, query: str, options: RerankOptions
    ) -> None:
        super().__init__(hook, target, packer, prefix)
        self.query = query
        self.options = options

    async def send(self, sender: HotSender, unit: Any) -> list[Line]:
        """``unit``: ``lines`` (intents) and ``payload`` (the candidates' texts), as the send loop's ``Unit``."""
        call = self.hook._rerank_call(self.target, self.query, unit.payload, self.options)
        results = self.hook._rerank_of(await self._post(sender, call, unit.key, len(unit.lines)), call)
        return rerank_lines(unit.lines, results, return_text=bool(self.options.get("return_text")))


class ClassifyJob(_ScoringJob):
    label = "Classify"

    def __init__(
        self, hook: BasetenHook, target: Target, packer: _Packer, prefix: str, options: ClassifyOptions
    ) -> None:
        super().__init__(hook, target, packer, prefix)
        self.options = options

    async def send(self, sender: HotSender, unit: Any) -> list[Line]:
        call = self.hook._classify_call(self.target, unit.payload, self.options)
        labels = self.hook._labels_of(await self._post(sender, call, unit.key, len(unit.lines)), call)
        return classify_lines(unit.lines, labels)


# --- operators: parameters and validation ---------------------------------------------------------------------------


class _BasetenScoringOperator(TextBatchParams, BatchRunMixin, LineageMixin, BasetenBaseOperator):
    """What rerank and classify share: parameters, inputs, packing, and ``execute`` (the batch operators' steps).

    **Inputs** as for :class:`~airflow_provider_baseten.operators.embeddings.BasetenEmbeddingsOperator`:
    ``texts`` (a templated list of strings or records) or ``input_path`` (JSONL, CSV or Parquet, read lazily);
    ``text_field`` and ``id_field`` pick a dict record's text and id; a record without a non-empty text is written
    as an error and never sent. Up to ``batch_size`` texts per request, fewer when their characters would pass
    ``max_chars_per_request``; ``max_concurrency`` requests in flight.

    **Output**: JSONL at ``output_path`` (templated), else ``{[baseten] output_location}/baseten-scores/{dag_id}/
    {run_id}/{task_id}[-{map_index}].jsonl``; one line per text, in completion order (a folder of parts on an
    object store, as for batch predict). The task returns ``{output_path, parts, total, succeeded, failed,
    skipped_existing, requests, duration_s}`` (``requests``: this try's; BEI reports no token usage for these
    routes). A literal ``output_path`` is also an outlet asset.

    **Cost, retries, re-runs.** Each request is billed as compute; none has side effects, so the hook retries
    429s, 5xx and timeouts within the try's retry budget. A re-run (any try after the first) with
    ``on_rerun="resume"`` (default) keeps every line whose text and options are unchanged and sends only the rest
    (errors that never reached the model included); ``"fail"`` refuses to mix outputs of other inputs;
    ``"replace"`` starts over. Requests in flight when a try ends have no line and are sent again by the next
    try: at most ``max_concurrency`` requests are paid twice, and no text is lost.

    :param baseten_conn_id: the ``baseten`` connection (templated).
    :param model_id: the BEI model to call (templated).
    :param environment: ``production`` (default), ``development`` or a named environment (templated).
    :param deployment_id: pin one deployment instead of an environment (templated).
    :param regional: use the regional host ``model-{id}-{environment}.api.baseten.co``.
    :param texts: the texts (templated): a list of strings or records, or a JSON string of one.
    :param input_path: a JSONL, CSV or Parquet file of records (templated). Exactly one of ``texts`` and
        ``input_path``.
    :param output_path: where to write the JSONL lines (templated): local path, URI or ``ObjectStoragePath``.
    :param text_field: key of each dict record holding its text (default ``"text"``).
    :param id_field: key of each dict record whose value is written as ``id``; default: the index.
    :param model: the ``model`` field of each request (default: none sent).
    :param raw_scores: ask for raw scores instead of BEI's sigmoid (or softmax) ones.
    :param truncate: let BEI truncate texts longer than the model's context instead of failing them.
    :param truncation_direction: ``"Right"`` (default) or ``"Left"``: which end ``truncate`` cuts.
    :param batch_size: texts per request (default 32, at most 1024).
    :param max_chars_per_request: characters per request (default 64,000).
    :param max_concurrency: requests in flight at once (default 32).
    :param on_rerun: ``"resume"`` (default), ``"fail"`` or ``"replace"`` (see above).
    :param part_size: object stores: lines per part (default 10,000).
    :param part_interval: object stores: seconds after which a part is written even if not full (default 60).
    :param max_failed_fraction: the task fails when more than this fraction of the texts ends in an error
        (default 0.0).
    :param progress_interval: seconds between progress lines (done, rate, ETA, requests).
    :param kill_grace_period: on ``on_kill``, seconds to let in-flight requests finish before they are dropped.
    :param timeout: read timeout in seconds of each request (default: the connection's).
    """

    template_fields: Sequence[str] = (*ADDRESS_TEMPLATE_FIELDS, "texts", "input_path", "output_path")
    template_fields_renderers = {"texts": "json"}
    operator_extra_links = (BasetenModelLink(),)
    target_kind = "model"
    ui_color = "#e5fff0"

    wording = Wording(title="Scoring", run="scoring", items="texts", sent="scored", results="scores", id_key="id")
    #: No side effects: a request in flight when a try ended is sent again by the next one.
    resends_in_flight = True

    def __init__(
        self,
        *,
        texts: list[Any] | str | None = None,
        input_path: str | ObjectStoragePath | None = None,
        output_path: str | ObjectStoragePath | None = None,
        text_field: str = "text",
        id_field: str | None = None,
        model: str | None = None,
        raw_scores: bool = False,
        truncate: bool = False,
        truncation_direction: TruncationDirection = "Right",
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
        for name, flag in (("raw_scores", raw_scores), ("truncate", truncate)):
            if not isinstance(flag, bool):
                raise BasetenConfigError(f"{name} must be True or False, got {flag!r}.")
        if truncation_direction not in ("Left", "Right"):
            raise BasetenConfigError(f"truncation_direction must be 'Left' or 'Right', got {truncation_direction!r}.")
        self.raw_scores = raw_scores
        self.truncate = truncate
        self.truncation_direction = truncation_direction

    def execute(self, context: Context) -> dict[str, Any]:
        run = self._begin(context, self.batch_size)
        job = self._job(run.target, self._packer(run.source, skip=run.existing.done), task_prefix(context, self))
        self._send_all(run, job)
        manifest = {"output_path": run.output.uri, "parts": run.output.part_uris(), **self._counts(run)}
        manifest["requests"] = job.requests
        return self._outcome(run, manifest)

    def _job(self, target: Target, packer: _Packer, prefix: str) -> _ScoringJob:
        raise NotImplementedError

    def _output_path(self, context: Context | dict[str, Any]) -> ObjectStoragePath | Path:
        return default_output_path(self.output_path, context, SCORES_FOLDER, ".jsonl")

    def options(self) -> ClassifyOptions:
        """The hook options of every request (rerank's add ``return_text``)."""
        options: ClassifyOptions = {
            "raw_scores": self.raw_scores,
            "truncate": self.truncate,
            "truncation_direction": self.truncation_direction,
            "timeout": self.timeout,
        }
        if self.model is not None:
            options["model"] = self.model
        return options

    def _salt(self) -> list[Any]:
        """What else decides a line: a changed option makes every earlier score stale (a resume re-sends it)."""
        return [self.text_field, self.model, self.raw_scores, self.truncate, self.truncation_direction]

    def _source(self) -> Source:
        if self.input_path not in (None, ""):
            if self.texts not in (None, ""):
                raise BasetenConfigError("Pass exactly one of texts= and input_path=.")
            return open_file_source(as_path(self.input_path), self.id_field, None, self._salt())  # type: ignore[arg-type]
        texts: Any = self.texts
        if isinstance(texts, str):
            texts = parse_list(texts)
        if not isinstance(texts, list | tuple):
            raise BasetenConfigError(f"texts must render to a list, got {type(texts).__name__}.")
        return ListSource(list(texts), self.id_field, None, self._salt())

    def _packer(self, source: Source, *, skip: IndexSet | None = None) -> _Packer:
        return _Packer(source.items(skip=skip), self.batch_size, self.max_chars_per_request, self.text_field)


class BasetenRerankOperator(_BasetenScoringOperator):
    """Score candidate texts against one ``query`` on a BEI reranker (``/sync/rerank``), packed and resumable.

    Output: one line ``{index, id, input_fp, score[, text]}`` per candidate (``text`` with ``return_text=True``).
    Rerank has no side effects: the hook retries 429s, 5xx and timeouts within the batch's retry budget.

    :param query: the query every candidate is scored against (templated).
    :param return_text: ask BEI to return each candidate's text with its score.
    """

    template_fields: Sequence[str] = (*_BasetenScoringOperator.template_fields, "query")
    wording = Wording(title="Rerank", run="rerank", items="candidates", sent="scored", results="scores", id_key="id")

    def __init__(self, *, query: str, return_text: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(query, str) or not query:
            raise BasetenConfigError("query must be a non-empty string.")
        if not isinstance(return_text, bool):
            raise BasetenConfigError(f"return_text must be True or False, got {return_text!r}.")
        self.query = query
        self.return_text = return_text

    def _salt(self) -> list[Any]:
        return [*super()._salt(), self.query, self.return_text]

    def _job(self, target: Target, packer: _Packer, prefix: str) -> _ScoringJob:
        if not isinstance(self.query, str) or not self.query:
            raise BasetenConfigError("query must render to a non-empty string.")
        return RerankJob(self.hook, target, packer, prefix, self.query, self.options())

    def options(self) -> RerankOptions:
        return {**super().options(), "return_text": self.return_text}


class BasetenClassifyOperator(_BasetenScoringOperator):
    """The labels and scores of each text on a BEI classifier (``/sync/predict``), packed and resumable.

    Output: one line ``{index, id, input_fp, labels: [{label, score}]}`` per text. An engine's classify has no
    side effects (unlike a custom model's ``/predict``): retried like every engine route.
    """

    wording = Wording(title="Classify", run="classify", items="texts", sent="classified", results="labels", id_key="id")

    def _job(self, target: Target, packer: _Packer, prefix: str) -> _ScoringJob:
        return ClassifyJob(self.hook, target, packer, prefix, self.options())
