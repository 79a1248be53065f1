"""What a model does when called: deterministic built-ins, wrappers that add time or failures, any Python callable.

A behaviour gets a :class:`ModelRequest` and returns a :class:`Reply` (or a JSON value, or an awaitable of either).
Behaviours hold no mutable state: per-deployment call numbers come in the request, and "random" failures are drawn
from a generator seeded with ``(seed, deployment, call number)``, so a run is reproducible whatever ran before.

In a world file a behaviour is a name (``"echo"``) or an object (``{"kind": "sleep", "seconds": 5, "then": "echo"}``);
see :func:`behaviour_from_spec` and ``docs/emulator.md``.
"""

from __future__ import annotations

import importlib
import inspect
import random
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

#: HTTP statuses an async request's ``inference_retry_config`` retries (Baseten retries only these model errors).
RETRYABLE_MODEL_STATUSES = frozenset({500, 502, 503, 504})


@dataclass(frozen=True)
class ModelRequest:
    """One call of a deployment's model: what it was sent and where."""

    payload: Any
    """The parsed JSON body, or the raw bytes when the body is not JSON."""
    route: str = "predict"
    """``predict``, ``run_remote``, or the ``/sync/`` route (``v1/chat/completions``)."""
    target_id: str = ""
    deployment_id: str = ""
    call_number: int = 1
    """1-based number of this call on this deployment (sync and async calls together)."""
    now: float = 0.0
    """Emulated epoch seconds."""
    is_async: bool = False


@dataclass(frozen=True)
class Reply:
    """A model's answer: JSON ``body`` by default; ``bytes``/``str`` bodies go out as ``content_type``."""

    body: Any = None
    status: int = 200
    content_type: str = "application/json"
    delay: float = 0.0
    """Emulated seconds the model works before answering."""
    chunks: Sequence[bytes | str] | None = None
    """A streamed (chunked) answer instead of ``body``."""
    chunk_interval: float = 0.0
    """Emulated seconds between chunks."""
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class ModelError(Exception):
    """Raise from a Python behaviour to answer with an error status; ``body`` is passed through like Baseten does."""

    def __init__(self, status: int = 500, body: Any = None) -> None:
        self.status = status
        self.body = body if body is not None else {"error": "Error making prediction"}
        super().__init__(f"model answered {status}")


BehaviourResult = Reply | Awaitable[Reply]


class Behaviour:
    """Base class: ``__call__`` answers one request; ``spec`` is its world-file form (``None`` if it has none)."""

    def __call__(self, request: ModelRequest) -> BehaviourResult:
        raise NotImplementedError

    @property
    def spec(self) -> Any:
        return None


def _text_of(payload: Any) -> str | None:
    if isinstance(payload, Mapping):
        value = payload.get("text")
        return value if isinstance(value, str) else None
    return payload if isinstance(payload, str) else None


def _needs_text(route: str) -> Reply:
    return Reply({"error": f"{route}: expected a JSON object with a string field 'text'"}, status=422)


class Echo(Behaviour):
    """Answers with its input unchanged (JSON in, JSON out; other bodies come back as bytes)."""

    def __call__(self, request: ModelRequest) -> Reply:
        if isinstance(request.payload, bytes):
            return Reply(request.payload, content_type="application/octet-stream")
        return Reply(request.payload)

    @property
    def spec(self) -> Any:
        return "echo"


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_POSITIVE = _words(
    "good great excellent amazing awesome love loved lovely like liked happy glad fantastic wonderful best nice "
    "delightful pleasant superb brilliant enjoy enjoyed perfect positive fast helpful recommend beautiful fine "
    "smooth reliable impressive outstanding satisfied thanks"
)
_NEGATIVE = _words(
    "bad terrible awful horrible hate hated poor worst sad angry slow broken bug buggy fail failed failure "
    "disappointing disappointed annoying useless ugly wrong negative problem problems crash crashed refund rude "
    "expensive boring unhappy late"
)
_NEGATORS = _words("not no never isn't wasn't don't doesn't didn't can't won't")
_WORD = re.compile(r"[A-Za-z']+")


def sentiment_of(text: str) -> dict[str, Any]:
    """Lexicon sentiment: ``{"label": "positive|negative|neutral", "score": 0..1}`` (a negator flips the next word)."""
    positive = negative = 0
    flip = False
    for word in (w.lower() for w in _WORD.findall(text)):
        if word in _NEGATORS:
            flip = True
            continue
        polarity = 1 if word in _POSITIVE else -1 if word in _NEGATIVE else 0
        if flip and polarity:
            polarity = -polarity
        flip = False
        positive += polarity > 0
        negative += polarity < 0
    total = positive + negative
    if not total or positive == negative:
        return {"label": "neutral", "score": 0.5}
    label = "positive" if positive > negative else "negative"
    return {"label": label, "score": round(0.5 + 0.5 * abs(positive - negative) / total, 4)}


class Sentiment(Behaviour):
    """``{"text": str}`` -> ``{"label": "positive|negative|neutral", "score": float}`` from a small word lexicon."""

    def __call__(self, request: ModelRequest) -> Reply:
        text = _text_of(request.payload)
        return Reply(sentiment_of(text)) if text is not None else _needs_text(request.route)

    @property
    def spec(self) -> Any:
        return "sentiment"


_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")


def text_stats(text: str) -> dict[str, int]:
    sentences = len(_SENTENCE_END.findall(text)) or (1 if text.strip() else 0)
    return {"words": len(text.split()), "characters": len(text), "sentences": sentences}


def summarize(text: str, max_words: int = 20) -> str:
    """The first sentence, cut to ``max_words`` words."""
    first = _SENTENCE_END.split(text.strip(), maxsplit=1)[0].strip()
    words = first.split()
    return " ".join(words[:max_words]) + ("..." if len(words) > max_words else "")


class TextStats(Behaviour):
    """``{"text": str}`` -> ``{"words", "characters", "sentences"}``."""

    def __call__(self, request: ModelRequest) -> Reply:
        text = _text_of(request.payload)
        return Reply(text_stats(text)) if text is not None else _needs_text(request.route)

    @property
    def spec(self) -> Any:
        return "textstats"


class Summarize(Behaviour):
    """``{"text": str}`` -> ``{"summary": first sentence, "words": count}`` (the default chain's entrypoint)."""

    def __call__(self, request: ModelRequest) -> Reply:
        text = _text_of(request.payload)
        if text is None:
            return _needs_text(request.route)
        return Reply({"summary": summarize(text), "words": len(text.split())})

    @property
    def spec(self) -> Any:
        return "summarize"


@dataclass(frozen=True)
class Sleep(Behaviour):
    """The wrapped behaviour, after ``seconds`` of emulated work."""

    seconds: float
    then: Behaviour = field(default_factory=Echo)

    async def __call__(self, request: ModelRequest) -> Reply:
        reply = await resolve_reply(self.then, request)
        return replace(reply, delay=reply.delay + self.seconds)

    @property
    def spec(self) -> Any:
        return {"kind": "sleep", "seconds": self.seconds, "then": self.then.spec}


@dataclass(frozen=True)
class Fail(Behaviour):
    """Answers ``status`` (with ``body``) on every call after the first ``after`` calls; those run ``then``."""

    status: int = 500
    after: int = 0
    body: Any = None
    then: Behaviour = field(default_factory=Echo)

    async def __call__(self, request: ModelRequest) -> Reply:
        if request.call_number <= self.after:
            return await resolve_reply(self.then, request)
        return Reply(self.body if self.body is not None else {"error": "Error making prediction"}, status=self.status)

    @property
    def spec(self) -> Any:
        return {"kind": "fail", "status": self.status, "after": self.after, "body": self.body, "then": self.then.spec}


@dataclass(frozen=True)
class Flaky(Behaviour):
    """Answers ``status`` with probability ``probability`` (seeded per deployment and call number), else ``then``."""

    probability: float = 0.2
    status: int = 503
    seed: int = 0
    then: Behaviour = field(default_factory=Echo)

    async def __call__(self, request: ModelRequest) -> Reply:
        draw = random.Random(f"{self.seed}:{request.deployment_id}:{request.call_number}").random()
        if draw < self.probability:
            return Reply({"error": "Model is temporarily unavailable"}, status=self.status)
        return await resolve_reply(self.then, request)

    @property
    def spec(self) -> Any:
        return {
            "kind": "flaky",
            "probability": self.probability,
            "status": self.status,
            "seed": self.seed,
            "then": self.then.spec,
        }


@dataclass(frozen=True)
class Text(Behaviour):
    """A fixed non-JSON body (e.g. an HTML error page or plain text), with ``status``."""

    body: str = "OK"
    status: int = 200
    content_type: str = "text/plain; charset=utf-8"

    def __call__(self, request: ModelRequest) -> Reply:
        return Reply(self.body, status=self.status, content_type=self.content_type)

    @property
    def spec(self) -> Any:
        return {"kind": "text", "body": self.body, "status": self.status, "content_type": self.content_type}


@dataclass(frozen=True)
class Stream(Behaviour):
    """A chunked answer: ``chunks`` if given, else the words of the input's ``text``, ``interval`` s apart."""

    chunks: tuple[str, ...] = ()
    interval: float = 0.0

    def __call__(self, request: ModelRequest) -> Reply:
        chunks = list(self.chunks)
        if not chunks:
            text = _text_of(request.payload) or ""
            chunks = [word + " " for word in text.split()] or [""]
        return Reply(chunks=chunks, chunk_interval=self.interval, content_type="text/plain; charset=utf-8")

    @property
    def spec(self) -> Any:
        return {"kind": "stream", "chunks": list(self.chunks), "interval": self.interval}


class Chat(Behaviour):
    """An OpenAI-compatible chat engine (``/sync/v1/chat/completions``, ``/sync/v1/models``, and ``predict``)."""

    def __init__(self, model_name: str = "emulated-llm") -> None:
        self.model_name = model_name

    def __call__(self, request: ModelRequest) -> Reply:
        from airflow_provider_baseten.emulator import chat

        route = request.route.strip("/")
        if route == "v1/models":
            return Reply(chat.models_list([self.model_name], now=request.now))
        if route not in ("v1/chat/completions", "predict"):
            return Reply({"error": f"Not Found: /{route}"}, status=404)
        if not isinstance(request.payload, dict):
            return Reply({"error": "expected a JSON chat completion request"}, status=400)
        # On a deployment the ``model`` field is ignored, as Baseten's engines do.
        return chat.complete(
            request.payload, model=str(request.payload.get("model") or self.model_name), now=request.now
        )

    @property
    def spec(self) -> Any:
        return {"kind": "chat", "model_name": self.model_name}


class Python(Behaviour):
    """Any callable: ``fn(payload)`` or ``fn(payload, request)``, sync or async.

    It returns a JSON value or a :class:`Reply`, or raises :class:`ModelError` to answer an error status; any other
    exception answers 500 with the exception text, as a crashing model would. A sync callable runs on the emulator's
    event loop: keep it quick and express model time as ``Reply(delay=...)``.
    """

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None) -> None:
        self.fn = fn
        self.name = name
        try:
            params = [
                p
                for p in inspect.signature(fn).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
            ]
            self._wants_request = len(params) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)
        except (TypeError, ValueError):
            self._wants_request = False

    async def __call__(self, request: ModelRequest) -> Reply:
        try:
            result = self.fn(request.payload, request) if self._wants_request else self.fn(request.payload)
            if inspect.isawaitable(result):
                result = await result
        except ModelError as err:
            return Reply(err.body, status=err.status)
        except Exception as err:
            return Reply({"error": f"{type(err).__name__}: {err}"}, status=500)
        return result if isinstance(result, Reply) else Reply(result)

    @property
    def spec(self) -> Any:
        return {"kind": "python", "callable": self.name} if self.name else None


async def resolve_reply(behaviour: Behaviour, request: ModelRequest) -> Reply:
    """Run a behaviour and normalise what it returns to a :class:`Reply`."""
    result: Any = behaviour(request)
    if inspect.isawaitable(result):
        result = await result
    return result if isinstance(result, Reply) else Reply(result)


_NAMED: dict[str, Callable[[], Behaviour]] = {
    "echo": Echo,
    "sentiment": Sentiment,
    "textstats": TextStats,
    "summarize": Summarize,
    "chat": Chat,
}


def _import_callable(path: str) -> Callable[..., Any]:
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"python behaviour {path!r}: expected 'package.module:function'")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"python behaviour {path!r} is not callable")
    return cast("Callable[..., Any]", target)


def behaviour_from_spec(spec: Any) -> Behaviour:
    """A behaviour from its world-file form, a :class:`Behaviour`, or a plain callable.

    Names: ``echo``, ``sentiment``, ``textstats``, ``summarize``, ``chat``, ``bei``. Objects (``kind`` plus parameters,
    ``then`` for the wrapped behaviour): ``sleep {seconds}``, ``fail {status, after, body}``, ``flaky {probability,
    status, seed}``, ``text {body, status, content_type}``, ``stream {chunks, interval}``, ``chat {model_name}``,
    ``bei {dimensions, base_ms, per_input_ms, max_inputs, model_name}`` (also the name ``bei``; see :mod:`.bei`),
    ``python {callable: "module:function"}``.
    """
    if isinstance(spec, Behaviour):
        return spec
    if spec == "bei":
        return behaviour_from_spec({"kind": "bei"})
    if isinstance(spec, str):
        if spec not in _NAMED:
            raise ValueError(f"unknown behaviour {spec!r}; expected one of {sorted(_NAMED)} or an object with 'kind'")
        return _NAMED[spec]()
    if callable(spec):
        return Python(spec)
    if not isinstance(spec, Mapping) or "kind" not in spec:
        raise ValueError(f"invalid behaviour {spec!r}: expected a name, an object with 'kind', or a callable")
    options = {key: value for key, value in spec.items() if key != "kind"}
    kind = spec["kind"]
    if "then" in options:
        options["then"] = behaviour_from_spec(options["then"])
    try:
        if kind in _NAMED and kind != "chat":
            return _NAMED[kind]()
        if kind == "sleep":
            return Sleep(**options)
        if kind == "fail":
            return Fail(**options)
        if kind == "flaky":
            return Flaky(**options)
        if kind == "text":
            return Text(**options)
        if kind == "stream":
            return Stream(chunks=tuple(options.pop("chunks", ())), **options)
        if kind == "chat":
            return Chat(**options)
        if kind == "bei":
            from airflow_provider_baseten.emulator.bei import Bei

            return Bei(**options)
        if kind == "python":
            path = options.pop("callable")
            return Python(_import_callable(path), name=path, **options)
    except TypeError as err:
        raise ValueError(f"invalid options for behaviour {kind!r}: {err}") from None
    raise ValueError(f"unknown behaviour kind {kind!r}")
