"""When a failed call is retried, and how long to wait: one policy for the sync and async clients.

A call is *idempotent* (GET, DELETE, wake, activate) or not (predict, run_remote, async submit, chat). Only
idempotent calls are retried after a request may have reached the model; a non-idempotent POST is retried only
when it provably never did, because a retry of a predict can run and bill it twice. Baseten passes a model's own
error status through (a model can answer 503 itself), so a 5xx proves nothing by its status alone: only Baseten's
own ``error_code`` saying the request was refused before any replica took it (``model_not_ready``,
``model_unavailable``, ``rate_limited``) does.

| outcome                                        | idempotent | not idempotent                                   |
| ---------------------------------------------- | ---------- | ------------------------------------------------ |
| connect error / connect timeout / pool         | retry      | retry                                            |
| 429, 529                                       | retry      | retry                                            |
| 500, 503 with a never-reached ``error_code``   | retry      | retry                                            |
| 502; 503 otherwise (a crash, the model's own)  | retry      | raise :class:`BasetenAmbiguousSubmitError`       |
| 500, 504 otherwise (the model raised, timeout) | retry      | raise                                            |
| 408 (the server timed out reading the request) | retry      | raise                                            |
| read timeout, reset after the request          | retry      | raise :class:`BasetenAmbiguousSubmitError`       |
| any other status                               | raise      | raise                                            |
"""

from __future__ import annotations

import datetime
import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import RetryCallState

from airflow_provider_baseten.exceptions import BasetenAmbiguousSubmitError, BasetenAPIError, BasetenConnectionError

ALWAYS_RETRIED_STATUSES = frozenset({429, 529})
IDEMPOTENT_ONLY_STATUSES = frozenset({408, 500, 502, 503, 504})
#: Baseten's ``error_code`` values that say a request was refused before it reached the model.
NEVER_REACHED_ERROR_CODES = frozenset({"model_not_ready", "model_unavailable", "rate_limited"})
#: Statuses that, without such a code, leave open whether a POST ran (the model's own answer, or a crash).
AMBIGUOUS_STATUSES = frozenset({502, 503})
#: Statuses Baseten's edge answers when it refuses a request before routing it. A 502 is not one: it means the
#: replica failed while it had the request (the emulator's injected 502 says so), whatever the code.
REFUSAL_STATUSES = frozenset({500, 503})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date; ``None`` if absent or invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # "-0000" or no zone: HTTP dates are GMT, never the machine's local time
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retry_after_of(response: httpx.Response, body: Any = None) -> float | None:
    """The server's requested wait: the ``Retry-After`` header, else a ``retry_after`` body field (seconds)."""
    header = parse_retry_after(response.headers.get("retry-after"))
    if header is not None:
        return header
    if isinstance(body, dict):
        value = body.get("retry_after")
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value)
    return None


def never_reached_server(exc: BaseException) -> bool:
    """True when the request provably never left this process (so even a POST may be sent again).

    httpx's own transport raises ``ConnectError``/``ConnectTimeout``/``PoolTimeout`` only before sending. The aiohttp
    transport maps *every* ``aiohttp.ClientConnectionError`` (a server disconnect mid-response included) to
    ``ConnectTimeout``, so there the underlying aiohttp error must be a connector error to count.
    """
    if isinstance(exc, BasetenConnectionError):
        return exc.never_sent
    if isinstance(exc, httpx.PoolTimeout):
        return True
    if not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return False
    cause = exc.__cause__
    if cause is None or not type(cause).__module__.startswith("aiohttp"):
        return True
    import aiohttp

    return isinstance(cause, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)


def is_retryable(exc: BaseException, *, idempotent: bool) -> bool:
    """The table in this module's docstring."""
    if isinstance(exc, BasetenAPIError):
        status = exc.status_code or 0
        if status in ALWAYS_RETRIED_STATUSES or refused_before_the_model(exc):
            return True
        return idempotent and status in IDEMPOTENT_ONLY_STATUSES
    if isinstance(exc, httpx.TransportError | BasetenConnectionError):
        return idempotent or never_reached_server(exc)
    return False


def refused_before_the_model(exc: BasetenAPIError) -> bool:
    """Baseten's own 500/503 says no replica took the request (so even a billed POST may be sent again)."""
    return (exc.status_code or 0) in REFUSAL_STATUSES and (exc.error_code or "").lower() in NEVER_REACHED_ERROR_CODES


def ambiguous_answer(exc: BasetenAPIError) -> bool:
    """A 502/503 to a non-idempotent call that Baseten does not say it refused: the model may have run."""
    return (exc.status_code or 0) in AMBIGUOUS_STATUSES and not refused_before_the_model(exc)


def ambiguous_submit(exc: httpx.TransportError, what: str) -> BasetenAmbiguousSubmitError:
    """The error for a non-idempotent call that failed after it may have reached the model."""
    # Both transports name errors as httpx does (hooks.clients renames httpx-aiohttp's), so the type says it.
    cause = type(exc).__name__
    return BasetenAmbiguousSubmitError(
        f"{what} failed after the request may have reached the model ({cause}); it was not retried "
        "because the model may have run (and been billed). Retrying the task submits it again."
    )


def deadline_bounded(kwargs: dict[str, Any], end: float, clock: Callable[[], float]) -> dict[str, Any]:
    """``stop``/``wait`` of :meth:`RetryPolicy.tenacity_kwargs`, changed so no retry wait or attempt starts after
    ``end`` (by ``clock``): a read with 0.3 s left ends by its deadline, not one backoff later."""
    from tenacity.stop import stop_base

    class _StopAt(stop_base):  # type: ignore[misc]
        def __call__(self, retry_state: RetryCallState) -> bool:
            return clock() >= end

    wait = kwargs["wait"]

    def bounded_wait(state: RetryCallState) -> float:
        return float(min(wait(state), max(0.0, end - clock())))

    return {"stop": kwargs["stop"] | _StopAt(), "wait": bounded_wait}


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, raised to any server-requested wait, capped per wait and in total."""

    max_retries: int = 5
    initial: float = 0.5
    max_wait: float = 30.0
    total_budget: float = 300.0
    jitter: Callable[[], float] = random.random

    def wait_seconds(self, attempt: int, retry_after: float | None) -> float:
        backoff = min(self.max_wait, self.initial * 2 ** (attempt - 1))
        jittered = backoff / 2 + self.jitter() * backoff / 2
        if retry_after is not None:
            return min(max(retry_after, jittered), self.max_wait * 4)
        return jittered

    def tenacity_kwargs(self, *, idempotent: bool) -> dict[str, Any]:
        """Arguments for ``tenacity.Retrying``/``AsyncRetrying`` (the caller adds its own ``sleep``)."""
        from tenacity import retry_if_exception, stop_after_attempt, stop_after_delay

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            retry_after = getattr(exc, "retry_after", None)
            return self.wait_seconds(state.attempt_number, retry_after)

        return {
            "stop": stop_after_attempt(self.max_retries + 1) | stop_after_delay(self.total_budget),
            "wait": wait,
            "retry": retry_if_exception(lambda exc: is_retryable(exc, idempotent=idempotent)),
            "reraise": True,
        }
