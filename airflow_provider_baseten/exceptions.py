"""Errors raised by the Baseten provider.

Every error derives from :class:`BasetenError`. Messages name what went wrong (the URL path, the status, Baseten's
``error``/``error_code``/``detail``) and never contain the API key: the hook builds them from response bodies and
paths only, never from request headers.
"""

from __future__ import annotations

from typing import Any, TypeVar

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException


class BasetenError(AirflowException):
    """Base class of every error this provider raises."""


_E = TypeVar("_E", bound=BasetenError)


class BasetenConfigError(BasetenError, AirflowFailException, ValueError):
    """A connection field, an id, an environment name or an operator argument is invalid. Nothing was sent.

    Fails the task without Airflow retries: trying the same input again cannot succeed.
    """


class BasetenAPIError(BasetenError):
    """Baseten (or the model behind it) answered with an error status.

    :param status_code: HTTP status of the response.
    :param error: Baseten's ``error`` message, or the model's own (possibly non-JSON) body, truncated.
    :param error_code: Baseten's machine-readable ``error_code`` when the body carried one.
    :param detail: Baseten's ``detail`` when the body carried one.
    :param request_id: the ``X-BASETEN-REQUEST-ID`` response header, for Baseten support.
    """

    hint: str = ""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error: str | None = None,
        error_code: str | None = None,
        detail: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status_code = status_code  # type: ignore[assignment]
        self.error = error
        self.error_code = error_code
        self.detail = detail
        self.request_id = request_id
        self.retry_after = retry_after
        super().__init__(f"{message} Hint: {self.hint}" if self.hint else message)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the error picklable (Airflow ships exceptions between processes).
        return (_rebuild, (type(self), self.args[0], self.__dict__))


def _rebuild(cls: type[_E], message: str, state: dict[str, Any]) -> _E:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class BasetenAuthError(BasetenAPIError, AirflowFailException):
    """401/403: the key is missing, invalid, or not allowed here. Never retried, by the hook or by Airflow."""

    hint = "check the API key in the Baseten connection; invoke-only workspace keys cannot call the management API."


class BasetenNotFoundError(BasetenAPIError, AirflowFailException):
    """404: wrong or deleted id, a deactivated deployment, an unknown async request, or a Model APIs slug.

    Fails the task without Airflow retries: the same address answers 404 again.
    """

    hint = "check the model/chain id, environment and deployment id; a deactivated deployment also answers 404."


class BasetenModelAPINotEnabledError(BasetenNotFoundError):
    """404 from Model APIs: the slug is unknown or not enabled for this workspace."""

    hint = (
        "the Model APIs slug is unknown or not enabled for this workspace; "
        "list the enabled slugs with BasetenHook.list_model_api_models()."
    )


class BasetenPayloadTooLargeError(BasetenAPIError, AirflowFailException):
    """413 (or refused before sending): over Baseten's 100 MB edge limit, or over 256 KiB for an async request.

    Fails the task without Airflow retries: the same input is as large on the next try.
    """

    hint = "pass a URL to the data (for example an object-storage URI) in the input instead of the data itself."


class BasetenRateLimitError(BasetenAPIError):
    """429 or 529 that outlasted the retry budget."""

    hint = "lower the concurrency or poll less often; Baseten limits status calls to 20 req/s."


class BasetenTimeoutError(BasetenAPIError):
    """504 from Baseten, or a client read timeout on a call that is safe to report as timed out."""

    hint = "the model took longer than Baseten's sync timeout; use BasetenAsyncPredictOperator for long predictions."


class BasetenModelError(BasetenAPIError):
    """Any other error status: Baseten's error body, or the model's own body passed through."""


class BasetenConnectionError(BasetenError):
    """A request failed in transport (DNS, refused, connect or read timeout, reset, TLS, proxy) after the retries.

    The message names where it went (the gateway or the Baseten host, and the proxy if any), what failed, the
    attempt count and a hint. Airflow retries the task as usual: the cause is usually passing.

    :param kind: ``dns``, ``refused``, ``connect_timeout``, ``read_timeout``, ``pool_timeout``, ``proxy``, ``tls``,
        ``disconnected`` or ``network``.
    :param host: where the request was sent (the gateway's host and port, or the Baseten host).
    :param attempts: how many times it was sent (or tried to be).
    :param never_sent: whether the request provably never left this process (then even a predict is safe to resend).
    """

    def __init__(self, message: str, *, kind: str, host: str, attempts: int, never_sent: bool) -> None:
        self.kind = kind
        self.host = host
        self.attempts = attempts
        self.never_sent = never_sent
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args[0], self.__dict__))


class BasetenAmbiguousSubmitError(BasetenError):
    """A POST failed after it may have reached the model (read timeout, reset mid-response).

    The request may have run and may be billed: it is not retried automatically. Retrying the task submits again.
    """


class BasetenAsyncRequestError(BasetenError):
    """An async request ended in a state other than success (failed, expired, canceled, lost, timeout)."""

    def __init__(self, message: str, *, manifest: dict[str, Any] | None = None) -> None:
        self.manifest = manifest or {}
        super().__init__(message)


class BasetenDeploymentError(BasetenError):
    """A deployment is in a failed or inactive state, or did not become ready in time."""
