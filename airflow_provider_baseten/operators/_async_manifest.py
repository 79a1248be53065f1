"""The manifest of an async batch: input index -> request id, status, timestamps, errors; durable, in parts.

Layout, at one folder (a local path or any ``ObjectStoragePath``)::

    index.json                        {"version", "target", "total", "counts", "updated_at"}: a small summary
    part-000000-<writer>.jsonl        records, one JSON object a line
    part-000001-<writer>.jsonl        ...

Every part is one whole object, written once (local files: written beside and renamed into place), so a part is
complete or absent, never torn: an unreadable line is corruption and raises, naming the part. The state is the fold
of every part in name order. ``<writer>`` is random per writer, so two writers (a trigger running twice) never
overwrite each other's part; the fold is order-independent where it matters (a terminal status is never replaced
by a pending one; a newer attempt replaces an older one).

One record a line, ``event`` first::

    {"event": "intent",    "index", "attempt", "input_fp", "input_id", "at"}           before the submit is sent
    {"event": "accepted",  "index", "attempt", "request_id", "at", ["output_uri"]}     Baseten queued it
    {"event": "ambiguous", "index", "attempt", "error", "at"}                          it may have been queued
    {"event": "rejected",  "index", "attempt", "error", "at"}                          refused, never queued
    {"event": "released",  "index", "attempt", "at"}                                   never sent (or provably not
                                                                                       queued): may be sent again
    {"event": "status",    "index", "attempt", "request_id", "status", "at", ["status_at", "errors", "output_uri"]}
    {"event": "cancel",    "index", "attempt", "request_id", "canceled", "message", "at"}

An ``intent`` with no outcome (the worker died between the intent and the outcome part) reads as ``AMBIGUOUS``:
the submit may have reached Baseten, so it is never sent again.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_baseten.exceptions import BasetenError
from airflow_provider_baseten.hooks.statuses import AsyncRequestStatus
from airflow_provider_baseten.operators._storage import as_path, is_local, storage_uri

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

__all__ = [
    "AMBIGUOUS",
    "LOST",
    "NOT_SUBMITTED",
    "REJECTED",
    "RESUBMITTABLE",
    "BasetenManifestError",
    "Entry",
    "Manifest",
]

VERSION = 1
INDEX_NAME = "index.json"
PART_PREFIX = "part-"
PART_SUFFIX = ".jsonl"

#: Statuses of the manifest besides Baseten's own.
AMBIGUOUS = "AMBIGUOUS"  # the submit may have been queued; never sent again
REJECTED = "REJECTED"  # Baseten refused the submit (invalid input, too large): nothing was queued
LOST = "LOST"  # Baseten answered 404 for the id (its status is kept one hour after completion)
NOT_SUBMITTED = "NOT_SUBMITTED"  # no submit yet (max_in_flight, a stop, a deadline)
SUBMITTING = "SUBMITTING"  # an intent of this writer whose outcome is not recorded yet
#: Statuses a task retry may submit again, when ``resubmit`` names them.
RESUBMITTABLE = frozenset({"FAILED", "EXPIRED", LOST, "CANCELED", "WEBHOOK_FAILED"})
_PENDING = frozenset({AsyncRequestStatus.QUEUED.value, AsyncRequestStatus.IN_PROGRESS.value})
_EVENTS = frozenset({"intent", "accepted", "ambiguous", "rejected", "released", "status", "cancel"})


class BasetenManifestError(BasetenError):
    """The manifest cannot be read (a corrupt part) or belongs to other inputs."""


@dataclass(slots=True)
class Entry:
    """What the manifest knows of one input (its latest attempt)."""

    index: int
    attempt: int = 0
    input_fp: str | None = None
    input_id: Any = None
    request_id: str | None = None
    status: str = NOT_SUBMITTED
    submitted_at: float | None = None
    status_at: str | None = None
    errors: tuple[Any, ...] = ()  # a tuple: the empty one is shared by every entry (10,000 entries, no 10,000 lists)
    output_uri: str | None = None

    @property
    def in_flight(self) -> bool:
        """Accepted and not known to be finished: it counts against ``max_in_flight`` and is waited on."""
        return self.request_id is not None and self.status in _PENDING

    @property
    def terminal(self) -> bool:
        return self.status not in _PENDING and self.status not in (NOT_SUBMITTED, SUBMITTING)


def _now() -> float:
    return round(time.time(), 3)


class Manifest:
    """The manifest at ``uri``, loaded into memory (one :class:`Entry` per input seen) and appended to in parts.

    ``keep_output_uris=False``: records still carry their ``output_uri`` into the parts, but the entries do not keep
    it (the batch trigger never reads it back, and 10,000 URIs are about 1.4 MiB of a triggerer's memory).
    """

    def __init__(self, uri: str | ObjectStoragePath, *, keep_output_uris: bool = True) -> None:
        self.keep_output_uris = keep_output_uris
        self.folder: ObjectStoragePath | Path = as_path(uri)
        self.uri = storage_uri(self.folder)
        self.entries: dict[int, Entry] = {}
        self.parts: list[str] = []
        self.writer = secrets.token_hex(4)
        self._next = 0
        self._buffer: list[dict[str, Any]] = []

    # --- reading ------------------------------------------------------------------------------------------------

    def _part_paths(self) -> list[ObjectStoragePath | Path]:
        try:
            children: list[ObjectStoragePath | Path] = list(self.folder.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(
            (child for child in children if child.name.startswith(PART_PREFIX) and child.name.endswith(PART_SUFFIX)),
            key=lambda child: child.name,
        )

    def exists(self) -> bool:
        return bool(self._part_paths())

    def load(self) -> Manifest:
        """Read every part (a fresh fold); raises :class:`BasetenManifestError` on a corrupt line."""
        self.entries = {}
        self.parts = []
        for path in self._part_paths():
            name = path.name
            self.parts.append(name)
            self._next = max(self._next, _part_number(name) + 1)
            with path.open("rb") as handle:
                for number, raw in enumerate(handle, start=1):
                    if not raw.strip():
                        continue
                    self.apply(_parse(raw, f"{storage_uri(path)} line {number}"))
        for entry in self.entries.values():
            if entry.status == SUBMITTING:
                entry.status = AMBIGUOUS  # an intent whose outcome an earlier writer never recorded
        return self

    def apply(self, record: dict[str, Any]) -> None:
        """Fold one record into the state (the same rules when reading and when writing)."""
        index, attempt, event = record["index"], record.get("attempt", 0), record["event"]
        entry = self.entries.get(index)
        if entry is None:
            entry = self.entries[index] = Entry(index)
        if attempt < entry.attempt:
            return  # an older attempt's late news
        if attempt > entry.attempt or event == "intent":
            if event != "intent" and attempt > entry.attempt:
                return  # an outcome without its intent: not this manifest's record
            entry.attempt, entry.request_id, entry.errors, entry.status_at = attempt, None, (), None
            entry.status = SUBMITTING
            entry.input_fp = record.get("input_fp", entry.input_fp)
            entry.input_id = record.get("input_id", entry.input_id)
            entry.submitted_at = record.get("at")
            return
        if event == "accepted":
            entry.request_id = record.get("request_id")
            entry.output_uri = record.get("output_uri") if self.keep_output_uris else None
            if entry.status in (SUBMITTING, AMBIGUOUS, NOT_SUBMITTED):
                entry.status = AsyncRequestStatus.QUEUED.value
        elif event == "ambiguous":
            if entry.request_id is None:
                entry.status, entry.errors = AMBIGUOUS, (record.get("error"),)
        elif event == "rejected":
            entry.status, entry.errors = REJECTED, (record.get("error"),)
        elif event == "released":
            if entry.request_id is None:
                entry.status = NOT_SUBMITTED
        elif event == "status":
            if record.get("request_id") != entry.request_id:
                return
            status = str(record.get("status"))
            if entry.terminal and status in _PENDING:
                return  # a terminal status is final; a slower writer's older read does not undo it
            entry.status = status
            entry.status_at = record.get("status_at", entry.status_at)
            entry.errors = tuple(record.get("errors") or ())
            if self.keep_output_uris:
                entry.output_uri = record.get("output_uri", entry.output_uri)
        elif event == "cancel" and record.get("request_id") == entry.request_id and record.get("canceled"):
            entry.status = AsyncRequestStatus.CANCELED.value

    # --- writing ------------------------------------------------------------------------------------------------

    def write(self, records: Iterable[dict[str, Any]]) -> str | None:
        """Apply ``records`` and store them as one new part (a whole object); its name, or ``None`` if empty."""
        for record in records:
            self.record(record)
        return self.flush()

    def record(self, record: dict[str, Any]) -> None:
        """Apply one record now; it is stored with the others recorded since the last :meth:`flush`."""
        record.setdefault("at", _now())
        self.apply(record)
        self._buffer.append(record)

    def pending_records(self) -> int:
        """Records applied but not stored yet."""
        return len(self._buffer)

    def flush(self) -> str | None:
        """Store the records applied since the last flush as one new part; its name, or ``None`` if none."""
        records, self._buffer = self._buffer, []
        if not records:
            return None
        dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode
        data = ("\n".join(map(dumps, records)) + "\n").encode()
        name = f"{PART_PREFIX}{self._next:06d}-{self.writer}{PART_SUFFIX}"
        try:
            _write_whole(self.folder, name, data)
        except BaseException:
            self._buffer[:0] = records  # kept for the next flush
            raise
        self._next += 1
        self.parts.append(name)
        return name

    def write_index(self, *, target: dict[str, Any], total: int) -> None:
        """The small summary beside the parts (for people and dashboards; the parts are the truth)."""
        summary = {
            "version": VERSION,
            "target": target,
            "total": total,
            "counts": self.counts(total),
            "parts": len(self.parts),
            "updated_at": _now(),
        }
        _write_whole(self.folder, INDEX_NAME, json.dumps(summary, indent=1, sort_keys=True).encode())

    # --- questions ------------------------------------------------------------------------------------------------

    def counts(self, total: int) -> dict[str, int]:
        """Inputs per status; inputs the manifest has not seen count as ``NOT_SUBMITTED``."""
        counts = Counter(entry.status for index, entry in self.entries.items() if index < total)
        counts[NOT_SUBMITTED] += total - sum(counts.values())
        return {status: count for status, count in sorted(counts.items()) if count}

    def in_flight(self) -> list[Entry]:
        """Accepted, not finished: in the order they were submitted (Baseten's queue order at one priority)."""
        return sorted(
            (entry for entry in self.entries.values() if entry.in_flight),
            key=lambda entry: (entry.submitted_at or 0.0, entry.index),
        )

    def check_inputs(self, fingerprints: Iterator[tuple[int, Any, str]]) -> None:
        """Raise when an input the manifest recorded is not the current input at its index."""
        for index, _input_id, fingerprint in fingerprints:
            entry = self.entries.get(index)
            if entry is not None and entry.input_fp is not None and entry.input_fp != fingerprint:
                raise BasetenManifestError(
                    f"The manifest at {self.uri} was written for other inputs: input {index} differs from the one "
                    "it recorded. Point manifest_location at a new place (or move the old manifest away) to run "
                    "these inputs; nothing was submitted."
                )


def _part_number(name: str) -> int:
    digits = name[len(PART_PREFIX) :].split("-", 1)[0].removesuffix(PART_SUFFIX)
    return int(digits) if digits.isdigit() else 0


def _parse(raw: bytes, where: str) -> dict[str, Any]:
    try:
        record = json.loads(raw)
    except ValueError:
        record = None
    index = record.get("index") if isinstance(record, dict) else None
    if (
        not isinstance(record, dict)
        or record.get("event") not in _EVENTS
        or isinstance(index, bool)
        or not isinstance(index, int)
        or index < 0
    ):
        raise BasetenManifestError(
            f"The async batch manifest is corrupt at {where}: not a manifest record ({raw[:80]!r}). Parts are "
            "written whole, so this is damage from outside: restore the part, or move the manifest away to start "
            "over (inputs it recorded as submitted would then be submitted again)."
        )
    return record


def _write_whole(folder: ObjectStoragePath | Path, name: str, data: bytes) -> None:
    if is_local(folder):
        local = Path(str(folder))
        local.mkdir(parents=True, exist_ok=True)
        tmp = local / f".{name}.tmp"
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, local / name)  # complete or absent, never torn
        return
    with (folder / name).open("wb") as handle:  # one whole object on a store that cannot append
        handle.write(data)


def cancel_record(entry: Entry, outcome: Any) -> dict[str, Any]:
    """The ``cancel`` record of one cancel attempt: a ``CancelAsyncResponse`` or the exception it raised."""
    if isinstance(outcome, BaseException):
        canceled, message = False, f"{type(outcome).__name__}: {outcome}"
    else:
        canceled, message = bool(outcome.canceled), outcome.message or ""
    return {
        "event": "cancel",
        "index": entry.index,
        "attempt": entry.attempt,
        "request_id": entry.request_id,
        "canceled": canceled,
        "message": message[:500],
    }
