"""The ``baseten`` connection, parsed once into :class:`ClientSettings` that both the sync and async clients use.

One function builds the settings and one builds each client from them, so proxies, TLS, timeouts and headers can
never differ between the worker and the triggerer (the http provider's sync and async hooks drifted apart there).
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import json
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_baseten.exceptions import BasetenConfigError

log = logging.getLogger(__name__)

#: Read timeout of predict-like calls: a little above Baseten's 1200 s server timeout, so its 504 arrives first.
DEFAULT_PREDICT_TIMEOUT = 1230.0
#: Read timeout of short calls (status, cancel, wake, management).
DEFAULT_SHORT_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_MAX_RETRIES = 5
#: Status polls per second shared by every Baseten trigger of one triggerer process (Baseten allows 20).
DEFAULT_STATUS_RATE_LIMIT = 15.0

KNOWN_EXTRAS = frozenset(
    {
        "auth_scheme",
        "timeout",
        "connect_timeout",
        "max_retries",
        "verify",
        "proxy",
        "headers",
        "status_rate_limit",
    }
)
_FORBIDDEN_HEADERS = frozenset({"authorization", "host", "content-length"})


@dataclass(frozen=True)
class ClientSettings:
    """Everything the HTTP clients need from a connection. ``repr`` never shows the key."""

    api_key: str = field(repr=False)
    conn_id: str = "baseten_default"
    gateway: str | None = None
    auth_scheme: str = "Api-Key"
    timeout: float = DEFAULT_PREDICT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    verify: bool | str = True
    proxy: str | None = field(default=None, repr=False)
    #: The environment's proxies (``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``/``NO_PROXY``) as httpx reads them:
    #: ``(URL pattern, proxy URL or None for direct)``. Read once, when the connection is parsed; unused when the
    #: connection names a ``proxy``.
    env_proxies: tuple[tuple[str, str | None], ...] = field(default=(), repr=False)
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    status_rate_limit: float = DEFAULT_STATUS_RATE_LIMIT

    @property
    def auth_header(self) -> str:
        return f"{self.auth_scheme} {self.api_key}"

    @property
    def proxy_map(self) -> tuple[tuple[str, str | None], ...]:
        """Which proxy each request URL goes through (httpx mount patterns): the connection's, else the env's."""
        return (("all://", self.proxy),) if self.proxy else self.env_proxies

    def base_url(self, host: str) -> str:
        """Where a request for Baseten host ``host`` is sent: the gateway, or ``https://{host}``."""
        return self.gateway or f"https://{host}"


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def gateway_url(host: str | None, port: int | None) -> str | None:
    """The connection's gateway base URL, or ``None`` for Baseten's own hosts.

    Without a scheme the gateway is HTTPS, except on loopback (``localhost``, 127.0.0.0/8, ``::1``) where it is HTTP.
    """
    if not host:
        return None
    raw = host.strip()
    if "://" not in raw:
        raw = raw.rstrip("/")
        with contextlib.suppress(ValueError):
            raw = f"[{ipaddress.IPv6Address(raw)}]"  # a bare IPv6 address such as ::1 needs brackets in a URL
        # urlsplit finds the name in "[::1]:8765" or "LOCALHOST:80" (lower-cased, without brackets or port).
        name = urlsplit(f"//{raw}").hostname or ""
        raw = f"{'http' if _is_loopback(name) else 'https'}://{raw}"
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BasetenConfigError(f"Invalid gateway host {host!r}: expected e.g. http://127.0.0.1:8765.")
    if parts.query or parts.fragment or parts.username:
        raise BasetenConfigError("The gateway host must not carry a query, fragment or credentials.")
    try:
        explicit_port = parts.port
    except ValueError:
        raise BasetenConfigError(f"Invalid gateway host {host!r}: the port must be a number up to 65535.") from None
    netloc = parts.netloc
    if port and explicit_port is None:
        netloc = f"{netloc}:{int(port)}"
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"


def _number(extras: dict[str, Any], key: str, default: float, *, minimum: float) -> float:
    value = extras.get(key)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BasetenConfigError(f"Connection extra {key!r} must be a number, got {value!r}.") from None
    if isinstance(value, bool) or number < minimum:
        raise BasetenConfigError(f"Connection extra {key!r} must be a number >= {minimum}, got {value!r}.")
    return number


def _verify(value: Any) -> bool | str:
    if value is None or value == "":
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        return value  # a CA bundle path
    raise BasetenConfigError(f"Connection extra 'verify' must be true, false or a CA bundle path, got {value!r}.")


def _headers(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise BasetenConfigError(f"Connection extra 'headers' is not valid JSON: {err.msg}.") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise BasetenConfigError("Connection extra 'headers' must be a JSON object of strings.")
    bad = sorted(k for k in value if k.lower() in _FORBIDDEN_HEADERS)
    if bad:
        raise BasetenConfigError(f"Connection extra 'headers' may not set {', '.join(bad)}.")
    return tuple(value.items())


def environment_proxies() -> tuple[tuple[str, str | None], ...]:
    """The process environment's proxy settings, parsed by httpx's own rules (so both clients read them alike)."""
    from httpx._utils import get_environment_proxies  # httpx's parser: the sync client honoured it before

    return tuple(sorted(get_environment_proxies().items()))


def _unknown_extras_warning(unknown: list[str], conn_id: str) -> None:
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(KNOWN_EXTRAS), n=1)
        if close:
            hints.append(f"{key!r}: did you mean {close[0]!r}?")
    log.warning(
        "Ignoring unknown extras %s in Baseten connection %s%s",
        unknown,
        conn_id,
        f" ({'; '.join(hints)})" if hints else "",
    )


def parse_extras(extra: str | dict[str, Any] | None) -> dict[str, Any]:
    """The extras as a dict; invalid JSON fails clearly, without echoing the text (it may hold secrets)."""
    if extra is None or extra == "":
        return {}
    if isinstance(extra, dict):
        return extra
    try:
        parsed = json.loads(extra)
    except json.JSONDecodeError as err:
        raise BasetenConfigError(
            f"The Baseten connection's extra is not valid JSON (line {err.lineno}, column {err.colno})."
        ) from None
    if not isinstance(parsed, dict):
        raise BasetenConfigError("The Baseten connection's extra must be a JSON object.")
    return parsed


def settings_from_connection(
    *,
    conn_id: str,
    password: str | None,
    host: str | None,
    port: int | None,
    extra: str | dict[str, Any] | None,
) -> ClientSettings:
    """Validate a connection's fields into :class:`ClientSettings`; errors name the field, never its secret value."""
    if not password or not password.strip():
        raise BasetenConfigError(f"The connection {conn_id!r} has no API key: set its password to a Baseten key.")
    extras = parse_extras(extra)
    unknown = sorted(set(extras) - KNOWN_EXTRAS)
    if unknown:
        _unknown_extras_warning(unknown, conn_id)
    scheme = extras.get("auth_scheme") or "Api-Key"
    schemes = {"api-key": "Api-Key", "bearer": "Bearer"}
    if not isinstance(scheme, str) or scheme.lower() not in schemes:
        raise BasetenConfigError(f"Connection extra 'auth_scheme' must be 'Api-Key' or 'Bearer', got {scheme!r}.")
    retries = _number(extras, "max_retries", DEFAULT_MAX_RETRIES, minimum=0)
    if retries != int(retries) or retries > 20:
        raise BasetenConfigError(f"Connection extra 'max_retries' must be a whole number from 0 to 20, got {retries}.")
    proxy = extras.get("proxy") or None
    if proxy is not None and (not isinstance(proxy, str) or "://" not in proxy):
        raise BasetenConfigError("Connection extra 'proxy' must be a URL such as http://proxy:3128.")
    return ClientSettings(
        api_key=password.strip(),
        conn_id=conn_id,
        gateway=gateway_url(host, port),
        auth_scheme=schemes[scheme.lower()],
        timeout=_number(extras, "timeout", DEFAULT_PREDICT_TIMEOUT, minimum=1),
        connect_timeout=_number(extras, "connect_timeout", DEFAULT_CONNECT_TIMEOUT, minimum=0.1),
        max_retries=int(retries),
        verify=_verify(extras.get("verify")),
        proxy=proxy,
        env_proxies=() if proxy else environment_proxies(),
        headers=_headers(extras.get("headers")),
        status_rate_limit=_number(extras, "status_rate_limit", DEFAULT_STATUS_RATE_LIMIT, minimum=0.1),
    )
