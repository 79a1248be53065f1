"""Receive Baseten's async webhook deliveries: verify them, and store each output where the batch can find it.

Baseten signs each delivery with the workspace's webhook secret: ``X-BASETEN-SIGNATURE: v1=<hex hmac-sha256 of the raw
body>``, with several comma-separated ``v1=`` values while a secret is being rotated. The body is
``{request_id, model_id, deployment_id, type: "async_request_completed", time, data, errors}``. Baseten does not keep
outputs: the webhook is the only copy, so a receiver answers 2xx only once the output is stored (Baseten retries a
5xx once, then the output is lost; it never retries a 4xx).

:class:`WebhookReceiver` is framework-neutral: call ``handle(raw_body, headers)`` from any web app and answer its
``(status, body)``. It writes the verified body to ``{store}/{prefix}/{request_id}.json`` (:func:`output_uri`), any
``ObjectStoragePath`` URI or local path, or hands it to your callable. For a demo or a test,
``python -m airflow_provider_baseten.webhooks serve --port 8099 --store s3://bucket/outputs`` runs it on a stdlib
HTTP server (secrets from ``BASETEN_WEBHOOK_SECRETS``, comma-separated).

Verification alone (any web framework; read the *raw* body before parsing it)::

    from airflow_provider_baseten.webhooks import WebhookVerificationError, verify_webhook_signature

    try:
        payload = verify_webhook_signature(raw_body, headers.get("X-BASETEN-SIGNATURE"), [current, previous])
    except WebhookVerificationError:
        return 401
    store(payload["request_id"], payload["data"])  # the output: Baseten does not keep it anywhere else

Importing this module imports nothing from Airflow; a receiver with an object-store URI loads ``ObjectStoragePath``
when it is built.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import http.server
    import threading
    from pathlib import Path

    from airflow.providers.common.compat.sdk import ObjectStoragePath

__all__ = [
    "SIGNATURE_HEADER",
    "WebhookReceiver",
    "WebhookServer",
    "WebhookVerificationError",
    "output_uri",
    "verify_webhook_signature",
]

SIGNATURE_HEADER = "X-BASETEN-SIGNATURE"
#: Environment variable ``serve`` reads the webhook secrets from (comma-separated: current first, then old ones).
SECRETS_ENV = "BASETEN_WEBHOOK_SECRETS"
#: Largest body the stdlib server reads (Baseten's edge limit for any request).
MAX_BODY_BYTES = 100 * 1024 * 1024
#: Request ids become object keys, so only these characters are accepted (Baseten's ids are hex).
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

log = logging.getLogger(__name__)

#: ``store(request_id, payload)`` for outputs that go somewhere else than a path; may return the URI it wrote.
StoreCallable = Callable[[str, dict[str, Any]], object]


class WebhookVerificationError(ValueError):
    """The delivery is not authentic (no or wrong signature) or too old (replay); reject it."""


def _signatures(header: str | None) -> list[bytes]:
    values = []
    for part in (header or "").split(","):
        scheme, _, value = part.strip().partition("=")
        if scheme.strip() == "v1" and value.strip():
            values.append(value.strip().lower().encode("utf-8", "replace"))
    return values


def _timestamp(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        if when.tzinfo is None:
            return None  # no zone: ambiguous, so not trusted
        return when.timestamp()
    return None


def verify_webhook_signature(
    body: bytes | str,
    signature_header: str | None,
    secrets: str | Sequence[str],
    *,
    tolerance_s: float | None = 300,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a delivery's signature and age; return the parsed payload.

    Every expected signature (one per secret, so a receiver can accept the old and the new secret during rotation)
    is compared in constant time with every ``v1=`` value of the header; all comparisons run, whatever matches.
    Only then is the body parsed, and its ``time`` must be within ``tolerance_s`` seconds of ``now`` (either way,
    to bound replays and clock skew); ``tolerance_s=None`` skips that check.

    :param body: the raw request body, exactly as received.
    :param signature_header: the ``X-BASETEN-SIGNATURE`` header value.
    :param secrets: the webhook secret, or several (rotation).
    :param tolerance_s: the accepted age of the payload's ``time`` in seconds (default 300).
    :param now: the current epoch time (tests).
    :raises WebhookVerificationError: missing or wrong signature, unparseable body, missing or stale ``time``.
    :raises ValueError: no secret given (a configuration error, not a bad delivery).
    """
    secret_list = [secrets] if isinstance(secrets, str) else list(secrets)
    keys = [secret.encode() for secret in secret_list if secret]
    if not keys:
        raise ValueError("verify_webhook_signature needs at least one non-empty webhook secret.")
    raw = body.encode() if isinstance(body, str) else bytes(body)
    received = _signatures(signature_header)
    if not received:
        raise WebhookVerificationError(f"No v1= signature in the {SIGNATURE_HEADER} header.")
    expected = [hmac.new(key, raw, hashlib.sha256).hexdigest().encode() for key in keys]
    matched = False
    for want in expected:
        for got in received:
            matched |= hmac.compare_digest(want, got)
    if not matched:
        raise WebhookVerificationError("The webhook signature does not match the body for any configured secret.")
    try:
        payload = json.loads(raw)
    except ValueError:
        raise WebhookVerificationError("The signed webhook body is not JSON.") from None
    if not isinstance(payload, dict):
        raise WebhookVerificationError("The signed webhook body is not a JSON object.")
    if tolerance_s is not None:
        sent_at = _timestamp(payload.get("time"))
        if sent_at is None:
            raise WebhookVerificationError("The webhook payload has no valid 'time' (ISO 8601 with a zone).")
        age = (time.time() if now is None else now) - sent_at
        if abs(age) > tolerance_s:
            raise WebhookVerificationError(
                f"The webhook payload's time is {age:.0f} s from now, outside the {tolerance_s:.0f} s tolerance "
                "(a replay, or a clock that is off)."
            )
    return payload


def _secret_list(secrets: str | Sequence[str], who: str) -> list[str]:
    secret_list = [secrets] if isinstance(secrets, str) else list(secrets)
    if not any(secret_list):
        raise ValueError(f"{who} needs at least one non-empty webhook secret.")
    return [secret for secret in secret_list if secret]


def output_uri(store: str, request_id: str, *, prefix: str = "") -> str:
    """Where :class:`WebhookReceiver` writes ``request_id``'s delivery: ``{store}/{prefix}/{request_id}.json``."""
    parts = [store.rstrip("/"), prefix.strip("/"), f"{request_id}.json"]
    return "/".join(part for part in parts if part)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


class WebhookReceiver:
    """Verify a delivery, then store its body (``data`` and ``errors``) once per request id.

    The stored object is the signed body exactly as Baseten sent it. A redelivery of an id already stored answers
    200 without writing again (Baseten resends after a timeout or a 5xx, and the first try may have been stored), so
    handling is idempotent. A store that fails answers 500, so Baseten retries once; a bad signature, a stale
    ``time`` or an unusable ``request_id`` answers 4xx, which Baseten does not retry.

    :param secrets: the webhook secret, or several while rotating (any of them verifies).
    :param store: a directory as an ``ObjectStoragePath`` URI (``s3://bucket/outputs``), local path or
        ``ObjectStoragePath``; or a callable ``store(request_id, payload)`` that keeps the output itself (it should
        be idempotent too; a string it returns is reported as the output's URI).
    :param prefix: a folder under ``store`` (e.g. the batch's run id).
    :param tolerance_s: accepted age of the payload's ``time`` (``None``: no replay check).
    :param clock: the current epoch time (tests).
    """

    def __init__(
        self,
        secrets: str | Sequence[str],
        store: str | ObjectStoragePath | Path | StoreCallable,
        *,
        prefix: str = "",
        tolerance_s: float | None = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secrets = _secret_list(secrets, "WebhookReceiver")
        self.prefix = prefix.strip("/")
        self.tolerance_s = tolerance_s
        self._clock = clock
        self._callable: StoreCallable | None = None
        self._base: ObjectStoragePath | Path | None = None
        if isinstance(store, str) or hasattr(store, "joinpath"):
            from airflow_provider_baseten.operators._storage import as_path

            self._base = as_path(store)  # type: ignore[arg-type]
        elif callable(store):
            self._callable = store
        else:
            raise TypeError(f"WebhookReceiver store must be a URI, a path or a callable, not {type(store).__name__}.")

    @property
    def store_uri(self) -> str | None:
        """The URI of the store directory (``None`` for a callable store)."""
        from airflow_provider_baseten.operators._storage import storage_uri

        return storage_uri(self._base) if self._base is not None else None

    def uri_for(self, request_id: str) -> str | None:
        """The URI ``request_id``'s output is (or will be) stored at; ``None`` for a callable store."""
        store = self.store_uri
        return output_uri(store, request_id, prefix=self.prefix) if store is not None else None

    def handle(self, raw_body: bytes, headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """Answer one delivery: ``(HTTP status, JSON body)``. Never raises for a bad delivery or a failed store."""
        try:
            payload = verify_webhook_signature(
                raw_body,
                _header(headers, SIGNATURE_HEADER),
                self._secrets,
                tolerance_s=self.tolerance_s,
                now=self._clock(),
            )
        except WebhookVerificationError as err:
            log.warning("Rejected a webhook delivery: %s", err)
            return 401, {"error": str(err)}
        request_id = payload.get("request_id")
        if not isinstance(request_id, str) or not _REQUEST_ID.match(request_id):
            return 400, {"error": "The payload's request_id is missing or not a Baseten request id."}
        try:
            written, uri = self._store(request_id, bytes(raw_body), payload)
        except Exception as err:  # answered 500 so that Baseten retries the delivery
            log.warning("Could not store the webhook output of %s: %s: %s", request_id, type(err).__name__, err)
            return 500, {"error": f"Could not store the output of {request_id} ({type(err).__name__}); retry."}
        log.info("Stored the webhook output of %s at %s (%s)", request_id, uri, "new" if written else "duplicate")
        return 200, {"request_id": request_id, "stored": "new" if written else "duplicate", "uri": uri}

    def _store(self, request_id: str, raw: bytes, payload: dict[str, Any]) -> tuple[bool, str | None]:
        if self._callable is not None:
            returned = self._callable(request_id, payload)
            return True, returned if isinstance(returned, str) else None
        from airflow_provider_baseten.operators._storage import is_local

        assert self._base is not None
        folder = self._base / self.prefix if self.prefix else self._base
        target = folder / f"{request_id}.json"
        uri = self.uri_for(request_id)
        if target.exists():
            return False, uri
        if is_local(target):
            folder.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            partial.write_bytes(raw)
            os.replace(str(partial), str(target))  # readers never see half an output
        else:
            target.write_bytes(raw)  # one object PUT: all or nothing
        return True, uri


class WebhookServer:
    """A :class:`WebhookReceiver` behind a stdlib ``ThreadingHTTPServer`` (demos and tests; in production, call
    ``receiver.handle`` from your own web app behind HTTPS). Binds at once, so :attr:`url` is known before
    :meth:`start`; ``POST`` any path delivers, ``GET /health`` answers ``{"status": "ok"}``."""

    def __init__(
        self,
        receiver: WebhookReceiver,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        import http.server

        self.receiver = receiver
        self.max_body_bytes = max_body_bytes
        #: Answers given, by HTTP status.
        self.answers: dict[int, int] = {}

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            #: The listen backlog. The stdlib's 5 refuses connections when a batch's deliveries arrive together (as
            #: fast as the deployment finishes requests), and Baseten tries each delivery only twice.
            request_queue_size = 1024

        self._server = Server((host, port), self._handler_class())
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/"

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        import http.server

        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: a sender reuses its connections (every answer has a length)

            def do_POST(self) -> None:
                length = self.headers.get("content-length")
                if length is None or not length.isdigit():
                    self.close_connection = True  # the unread body would be taken for the next request
                    self._answer(411, {"error": "A content-length header is required."})
                elif int(length) > server.max_body_bytes:
                    self.close_connection = True
                    self._answer(413, {"error": f"The body is over {server.max_body_bytes} bytes."})
                else:
                    raw = self.rfile.read(int(length))
                    self._answer(*server.receiver.handle(raw, dict(self.headers.items())))

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/health":
                    self._answer(200, {"status": "ok"})
                else:
                    self._answer(404, {"error": "POST webhook deliveries; GET /health only."})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                server.answers[status] = server.answers.get(status, 0) + 1
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("webhook server: %s", format % args)

        return Handler

    def start(self) -> WebhookServer:
        """Serve on a daemon thread."""
        import threading

        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="baseten-webhooks", daemon=True
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever(poll_interval=0.2)

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> WebhookServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m airflow_provider_baseten.webhooks serve --store URI [--port N]``: run a receiver until killed."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_baseten.webhooks", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="receive deliveries on a stdlib HTTP server and store their outputs")
    serve.add_argument("--store", required=True, help="directory URI or path the outputs go to (s3://b/p, /tmp/out)")
    serve.add_argument("--prefix", default="", help="folder under --store")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8099, help="port (0: a free one; the URL is printed)")
    serve.add_argument("--secrets-env", default=SECRETS_ENV, help=f"variable with the secrets (default {SECRETS_ENV})")
    serve.add_argument("--tolerance", type=float, default=300.0, help="accepted age of 'time' in seconds (0: off)")
    args = parser.parse_args(argv)
    secrets = [part.strip() for part in os.environ.get(args.secrets_env, "").split(",") if part.strip()]
    if not secrets:
        parser.error(f"no webhook secret: set {args.secrets_env} (comma-separated, current secret first)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    receiver = WebhookReceiver(secrets, args.store, prefix=args.prefix, tolerance_s=args.tolerance or None)
    server = WebhookServer(receiver, host=args.host, port=args.port)
    print(f"Receiving Baseten webhooks on {server.url} -> {receiver.uri_for('<request_id>')}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
