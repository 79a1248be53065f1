"""One retry budget for many calls: a failure storm cannot multiply the load a batch puts on Baseten.

Per-call retries alone let a batch of N items send up to ``N x (max_retries + 1)`` requests when everything fails
(a 429 or 503 storm). A :class:`RetryBudget` shared by every call of a batch allows retries only in proportion to
the calls made (``ratio`` of them, plus a small ``minimum`` so a short batch can still ride out a blip), as
Baseten's own ``baseten-performance-client`` and Finagle's retry budgets do. A call refused a retry fails with its
last error (for a batch item: an error line that a task retry re-sends only if the model never ran).
"""

from __future__ import annotations

__all__ = ["RetryBudget"]


class RetryBudget:
    """Retries allowed across many calls: ``minimum + ratio x calls`` in all, never more.

    Not thread-safe: one event loop (the batch operator's) uses it.

    :param ratio: retries earned per call made (0.2: one retry per five calls).
    :param minimum: retries allowed before any call earned one.
    """

    def __init__(self, *, ratio: float = 0.2, minimum: int = 10) -> None:
        if ratio < 0 or minimum < 0:
            raise ValueError("ratio and minimum must not be negative")
        self.ratio = float(ratio)
        self.minimum = int(minimum)
        self.calls = 0
        self.retries = 0
        #: Retries refused because the budget was spent.
        self.refused = 0

    def record_call(self) -> None:
        """A new call (its first attempt): earns ``ratio`` of a retry."""
        self.calls += 1

    @property
    def available(self) -> float:
        return self.minimum + self.ratio * self.calls - self.retries

    def try_retry(self) -> bool:
        """Take one retry if the budget has one left; ``False`` (counted in :attr:`refused`) otherwise."""
        if self.available >= 1:
            self.retries += 1
            return True
        self.refused += 1
        return False
