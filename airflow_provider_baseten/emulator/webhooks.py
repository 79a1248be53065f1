"""Webhook delivery as Baseten does it: signed POSTs, two attempts with a 10 s timeout each, retried only on 5xx.

The body is ``{request_id, model_id, deployment_id, type: "async_request_completed", time, data, errors}`` (for a
chain, ``chain_id`` too). With webhook secrets configured, ``X-BASETEN-SIGNATURE`` carries ``v1=<hex HMAC-SHA256 of
the raw body>`` for each secret, comma-separated (several while a secret is being rotated).

The emulator only ever sends to loopback URLs (``localhost``, 127.0.0.0/8, ``::1``). A webhook to any other host is
recorded but not sent, and counts as delivered (``deliver_external=False``), as it would be by Baseten to a working
receiver; set ``deliver_external=True`` to make such deliveries fail instead.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

ATTEMPTS = 2


def signature_header(body: bytes, secrets: Sequence[str]) -> str | None:
    """``v1=<hex>`` for each secret, comma-separated; ``None`` without secrets."""
    values = [f"v1={hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}" for secret in secrets]
    return ",".join(values) or None


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class WebhookDelivery:
    """One delivery: what was (or would have been) sent, and each attempt's outcome (status code or error)."""

    request_id: str
    url: str
    body: dict[str, Any]
    headers: dict[str, str]
    attempts: list[int | str] = field(default_factory=list)
    sent: bool = True
    delivered: bool = False


class WebhookSender:
    """Delivers webhooks on the emulator's loop and remembers every delivery (``emu.webhooks``)."""

    def __init__(self, secrets: Sequence[str], *, timeout: float = 10.0, deliver_external: bool = False) -> None:
        self.secrets = list(secrets)
        self.timeout = timeout
        self.deliver_external = deliver_external
        self.deliveries: list[WebhookDelivery] = []
        self._client: httpx.AsyncClient | None = None

    async def deliver(self, url: str, payload: dict[str, Any]) -> bool:
        """POST ``payload`` to ``url``; ``True`` once a 2xx came back."""
        raw = json.dumps(payload, separators=(",", ":")).encode()
        headers = {"content-type": "application/json", "x-baseten-request-id": str(payload["request_id"])}
        signature = signature_header(raw, self.secrets)
        if signature:
            headers["x-baseten-signature"] = signature
        delivery = WebhookDelivery(str(payload["request_id"]), url, payload, headers)
        self.deliveries.append(delivery)
        if not is_loopback_url(url):
            delivery.sent = False
            delivery.delivered = not self.deliver_external
            log.info("Emulator: not sending webhook for %s to non-loopback %s", delivery.request_id, url)
            return delivery.delivered
        for _ in range(ATTEMPTS):
            outcome = await self._post(url, raw, headers)
            delivery.attempts.append(outcome)
            if isinstance(outcome, int) and 200 <= outcome < 300:
                delivery.delivered = True
                return True
            if isinstance(outcome, int) and outcome < 500:
                return False  # Baseten retries only 5xx (and failed connections)
        return False

    async def _post(self, url: str, raw: bytes, headers: dict[str, str]) -> int | str:
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(verify=False, follow_redirects=False)  # loopback only
        try:
            response = await self._client.post(url, content=raw, headers=headers, timeout=self.timeout)
        except httpx.HTTPError as err:
            return type(err).__name__
        return response.status_code

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
