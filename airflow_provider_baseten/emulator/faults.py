"""Fault injection: make chosen routes answer 429/5xx, reset the connection, or answer slowly, on a script or a seed.

A :class:`FaultPlan` matches a route key (and optionally a model or chain id) and either plays a scripted
``sequence`` of actions, one per matching request, or draws ``action`` with ``probability`` from a seeded generator.
Actions: an HTTP status (429, 500, 502, 503, 504, 529, ...), ``"reset_before"`` (the connection is reset before the
model runs), ``"reset_after"`` (after the model ran: the client cannot tell whether it did), ``"slow"`` (answer
normally after ``delay`` wall seconds) and ``"ok"`` (no fault). A status is injected before the model runs unless
``after_model`` is set. A plan with only ``delay`` slows every matching request.

From Python: ``emu.faults.set(FaultPlan(route="predict", sequence=[503, 503]))``; over HTTP:
``POST /_emulator/faults {"plans": [{"route": "predict", "sequence": [503, 503]}]}``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, cast

#: Route keys, as the journal records them.
ROUTES = frozenset(
    {
        "predict",
        "run_remote",
        "async_predict",
        "async_run_remote",
        "async_status",
        "async_cancel",
        "async_queue_status",
        "wake",
        "sync",
        "embeddings",
        "rerank",
        "classify",
        "management",
        "activate",
        "chat",
        "model_apis_models",
    }
)
_BEI_ROUTES = frozenset({"embeddings", "rerank", "classify"})
RESET_BEFORE, RESET_AFTER, SLOW, OK = "reset_before", "reset_after", "slow", "ok"
_NAMED_ACTIONS = frozenset({RESET_BEFORE, RESET_AFTER, SLOW, OK})

FaultAction = int | str

#: What Baseten's edge says with each injected status: (message, error_code).
STATUS_BODIES: dict[int, tuple[str, str]] = {
    429: ("Too many requests: rate limit exceeded", "rate_limited"),
    500: ("Internal server error", "internal_baseten_error"),
    502: ("Bad gateway: the model replica stopped responding", "model_unavailable"),
    503: ("Service unavailable: no replica is ready to take the request", "model_unavailable"),
    504: ("Gateway timeout: the prediction exceeded the request timeout", "timeout"),
    529: ("Model at capacity: no replica slot is free (REJECT_ON_FULL)", "rate_limited"),
}


def _check_action(action: Any) -> FaultAction:
    if isinstance(action, bool) or not ((isinstance(action, int) and 400 <= action <= 599) or action in _NAMED_ACTIONS):
        raise ValueError(f"invalid fault action {action!r}: expected an HTTP status 400-599 or one of {_NAMED_ACTIONS}")
    return cast("FaultAction", action)


@dataclass
class FaultPlan:
    """Faults for requests on ``route`` (``"*"``: every route), optionally only for one model or chain id."""

    route: str = "*"
    target_id: str | None = None
    sequence: list[FaultAction] = field(default_factory=list)
    probability: float = 0.0
    action: FaultAction = 503
    delay: float = 0.0
    """Wall seconds: how long ``"slow"`` (or a delay-only plan) holds the answer, after the model ran."""
    retry_after: float | None = None
    """Sent as ``Retry-After`` with an injected 429/503/529."""
    after_model: bool = False
    seed: int = 0
    repeat: bool = False
    """Start the ``sequence`` again when it is used up (otherwise the plan then lets requests through)."""

    def __post_init__(self) -> None:
        if self.route != "*" and self.route not in ROUTES:
            raise ValueError(f"unknown route {self.route!r}; expected '*' or one of {sorted(ROUTES)}")
        self.sequence = [_check_action(action) for action in self.sequence]
        self.action = _check_action(self.action)
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultPlan:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault plan keys {sorted(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class Fault:
    """The decision for one request."""

    action: FaultAction
    delay: float = 0.0
    retry_after: float | None = None
    after_model: bool = False

    @property
    def status(self) -> int | None:
        return self.action if isinstance(self.action, int) else None


class _Running:
    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self.position = 0
        self.injected = 0
        self.random = random.Random(plan.seed)

    def matches(self, route: str, target_id: str | None) -> bool:
        # A plan for "sync" also covers the BEI routes served under /sync/ (embeddings, rerank, classify).
        routes = ("*", route, "sync") if route in _BEI_ROUTES else ("*", route)
        return self.plan.route in routes and self.plan.target_id in (None, target_id)

    def next_action(self) -> FaultAction | None:
        plan = self.plan
        if plan.sequence:
            if self.position >= len(plan.sequence):
                if not plan.repeat:
                    return None
                self.position = 0
            action = plan.sequence[self.position]
            self.position += 1
            return action
        if plan.probability > 0:
            return plan.action if self.random.random() < plan.probability else OK
        return SLOW if plan.delay > 0 else None


class FaultInjector:
    """The active plans; the first plan matching a request decides for it."""

    def __init__(self) -> None:
        self._plans: list[_Running] = []

    @property
    def active(self) -> bool:
        return bool(self._plans)

    def set(self, *plans: FaultPlan | Mapping[str, Any]) -> None:
        """Replace every plan (no arguments: clear)."""
        self._plans = [_Running(self._plan(plan)) for plan in plans]

    def add(self, *plans: FaultPlan | Mapping[str, Any]) -> None:
        self._plans = [*self._plans, *(_Running(self._plan(plan)) for plan in plans)]

    def clear(self) -> None:
        self._plans = []

    @staticmethod
    def _plan(plan: FaultPlan | Mapping[str, Any]) -> FaultPlan:
        return plan if isinstance(plan, FaultPlan) else FaultPlan.from_dict(plan)

    def decide(self, route: str, target_id: str | None) -> Fault | None:
        for running in self._plans:
            if not running.matches(route, target_id):
                continue
            action = running.next_action()
            if action is None:
                continue
            if action == OK:
                return None
            running.injected += 1
            plan = running.plan
            delay = plan.delay if action == SLOW else 0.0
            return Fault(action, delay, plan.retry_after, plan.after_model or action == RESET_AFTER)
        return None

    def as_json(self) -> list[dict[str, Any]]:
        return [{**asdict(r.plan), "injected": r.injected} for r in self._plans]

    def load(self, data: Any) -> None:
        """Apply a JSON body: a plan, a list of plans, or ``{"plans": [...], "replace": true}``."""
        plans: Iterable[Any]
        replace = True
        if isinstance(data, Mapping) and "plans" in data:
            plans, replace = data["plans"], bool(data.get("replace", True))
        elif isinstance(data, list):
            plans = data
        else:
            plans = [data]
        parsed = [self._plan(plan) for plan in plans]
        (self.set if replace else self.add)(*parsed)
