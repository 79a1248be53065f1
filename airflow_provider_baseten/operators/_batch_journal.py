"""The output of a batch is its journal: one JSONL line per finished input, scanned on a later try to resume.

Two layouts, one line format (``{"index", "input_id", "input_fp", "output" | "error"}``):

* a local (or mounted) file: appended and flushed as lines complete; before each send an intent record goes to a
  sidecar file (``{output}.inflight``), so even a SIGKILLed try leaves a record of what may have run;
* an object store (no append): a folder of whole objects ``part-00000.jsonl``, ``part-00001.jsonl``, ... written
  every ``part_size`` lines or ``part_interval`` seconds, so a crash loses at most the part being filled.

``input_fp`` is a fingerprint of the input a line was written for; a resume keeps a line only when the current
input at that index has the same fingerprint.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from airflow_provider_baseten.exceptions import BasetenError
from airflow_provider_baseten.operators._storage import is_local, storage_uri

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

_FSYNC_INTERVAL = 1.0
PART_PREFIX = "part-"
PART_SUFFIX = ".jsonl"
INTENTS_SUFFIX = ".inflight"


class IndexSet:
    """A set of non-negative indices as a growable bitmap: 1 bit per input, flat enough at millions of inputs."""

    def __init__(self) -> None:
        self._bits = bytearray()
        self.count = 0

    def add(self, index: int) -> None:
        byte = index >> 3
        if byte >= len(self._bits):
            self._bits.extend(bytes(byte - len(self._bits) + 1024))
        mask = 1 << (index & 7)
        if not self._bits[byte] & mask:
            self._bits[byte] |= mask
            self.count += 1

    def __contains__(self, index: int) -> bool:
        byte = index >> 3
        return byte < len(self._bits) and bool(self._bits[byte] & (1 << (index & 7)))

    def __bool__(self) -> bool:
        return self.count > 0

    def at_or_after(self, start: int) -> Iterator[int]:
        """The members ``>= start``, in order."""
        for byte in range(start >> 3, len(self._bits)):
            if self._bits[byte]:
                for bit in range(8):
                    index = (byte << 3) | bit
                    if index >= start and self._bits[byte] & (1 << bit):
                        yield index


class Fingerprints:
    """The ``input_fp`` of each kept line, by index: 8 bytes per input (0: the line had none)."""

    def __init__(self) -> None:
        self._values = array("Q")

    def set(self, index: int, fingerprint: Any) -> None:
        if index >= len(self._values):
            self._values.frombytes(bytes(8 * (index - len(self._values) + 1024)))
        self._values[index] = parse_fingerprint(fingerprint)

    def get(self, index: int) -> int:
        return self._values[index] if index < len(self._values) else 0


def parse_fingerprint(value: Any) -> int:
    if not isinstance(value, str) or len(value) != 16:
        return 0
    try:
        return int(value, 16)
    except ValueError:
        return 0


@dataclass
class Existing:
    """What earlier tries left in the output (after dropping re-sendable errors, a torn tail and stale lines)."""

    done: IndexSet = field(default_factory=IndexSet)
    kept: int = 0
    succeeded: int = 0
    failed: int = 0
    #: The ``input_fp`` of each kept line.
    fingerprints: Fingerprints = field(default_factory=Fingerprints)
    dropped_retryable: int = 0
    dropped_stale: int = 0
    torn_bytes: int = 0
    #: Intent records of items that were sent by an earlier try but have no line: they may have run.
    stranded: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: Every index with a complete line (kept or not): an intent for one of them is not stranded.
    answered: IndexSet = field(default_factory=IndexSet)


@dataclass
class Stale:
    """Lines of an earlier try whose input is not the current input at their index."""

    indices: IndexSet = field(default_factory=IndexSet)
    first: tuple[int, Any] | None = None  # (index, the current input_id there, or None past the end)


def find_stale(existing: Existing, current: Iterable[tuple[int, Any, str]]) -> Stale:
    """Compare each kept line's fingerprint with the current input's (``(index, input_id, fingerprint)``).

    Stranded intents for another input are forgotten (the current input there was never sent).
    """
    stale = Stale()
    seen = 0
    for index, input_id, fingerprint in current:
        seen = index + 1
        now = parse_fingerprint(fingerprint)
        if index in existing.done and existing.fingerprints.get(index) != now:
            stale.indices.add(index)
            stale.first = stale.first or (index, input_id)
        intent = existing.stranded.get(index)
        if intent is not None and parse_fingerprint(intent.get("input_fp")) != now:
            del existing.stranded[index]
    for index in existing.done.at_or_after(seen):
        stale.indices.add(index)  # the inputs got shorter
        stale.first = stale.first or (index, None)
    for index in [index for index in existing.stranded if index >= seen]:
        del existing.stranded[index]
    return stale


def scan_lines(
    handle: IO[bytes], existing: Existing, uri: str, log: Any, stale: IndexSet | None = None
) -> Iterator[tuple[bytes, bool, bool]]:
    """Each line of an earlier try's output: ``(line, keep, normalized)``; counts the kept ones into ``existing``.

    Dropped: a torn last line (a crash mid-write), a repeated index, errors that never reached the model (they
    are predicted again) and lines in ``stale``. A last line that is complete but lost its newline is kept, with
    the newline restored. Any other unreadable line means the file is not this batch's output: that raises.
    """
    lines = iter(handle)
    raw = next(lines, None)
    number = 0
    while raw is not None:
        number += 1
        following = next(lines, None)
        line, normalized = raw, False
        if following is None and not raw.endswith(b"\n"):
            line, normalized = raw + b"\n", True
        record = parse_line(line)
        if record is None:
            if following is not None:
                raise BasetenError(
                    f"Line {number} of {uri} is not a batch result line; move the file away or choose another "
                    "output_path."
                )
            if log is not None:
                log.warning("Dropping a torn last line (%d bytes) of %s.", len(raw), uri)
            existing.torn_bytes += len(raw)
            yield raw, False, True
            return
        index = record["index"]
        error = record.get("error")
        existing.answered.add(index)
        if index in existing.done:
            yield line, False, normalized
        elif stale is not None and index in stale:
            existing.dropped_stale += 1
            yield line, False, normalized
        elif isinstance(error, dict) and error.get("model_may_have_run") is False:
            existing.dropped_retryable += 1
            yield line, False, normalized
        else:
            existing.done.add(index)
            existing.fingerprints.set(index, record.get("input_fp"))
            existing.kept += 1
            if error is not None:
                existing.failed += 1
            else:
                existing.succeeded += 1
            yield line, True, normalized
        raw = following


def parse_line(raw: bytes) -> dict[str, Any] | None:
    if not raw.endswith(b"\n"):
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    index = record.get("index")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        return None
    if "output" not in record and "error" not in record and "embedding" not in record:  # embedding: embeddings
        return record if "score" in record or "labels" in record else None  # rerank, classify
    return record


def encode_line(line: dict[str, Any]) -> str:
    """One compact JSON line (see :func:`encode_line_bytes`)."""
    return encode_line_bytes(line).decode()


def encode_line_bytes(line: dict[str, Any]) -> bytes:
    """One compact JSON line, as UTF-8 bytes ending in a newline. msgspec (Airflow brings it) encodes a line of 64
    floats about 10 times faster than ``json.dumps``, which took half the client CPU of an embeddings run; what it
    refuses (an int past 64 bits, a non-string key) or would write differently (NaN, which it writes as null) goes
    through ``json.dumps``. A ``msgspec.Raw`` value (an answer kept undecoded) is written as-is."""
    data = compact_json(line)
    if data is not None:
        return data + b"\n"
    return (json.dumps(line, ensure_ascii=False, separators=(",", ":"), default=_fallback) + "\n").encode()


def compact_json(value: Any) -> bytes | None:
    """``value`` as compact JSON by msgspec, or ``None`` where ``json.dumps`` must decide (see :func:`encode_line`)."""
    if _msgspec_encode is not None:
        try:
            return _msgspec_encode(value)
        except (TypeError, ValueError, OverflowError):
            pass
    return None


def _fallback(value: Any) -> Any:
    if _Raw is not None and isinstance(value, _Raw):
        return json.loads(bytes(value))
    return str(value)


def encode_lines_bytes(lines: list[dict[str, Any]]) -> bytes:
    """:func:`encode_line_bytes` of each line, joined: one msgspec call for them all where it can."""
    if _msgspec_encode_lines is not None:
        try:
            return _msgspec_encode_lines(lines)
        except (TypeError, ValueError, OverflowError):
            pass
    return b"".join(map(encode_line_bytes, lines))


def _msgspec_encoders() -> tuple[Callable[[Any], bytes], Callable[[list[Any]], bytes]] | tuple[None, None]:
    try:
        import msgspec.json
    except ImportError:
        return None, None
    encoder = msgspec.json.Encoder(enc_hook=_refuse_nan_and_others)

    def encode(line: Any) -> bytes:
        data = encoder.encode(line)
        if b"null" in data and _has_nan(line):
            raise ValueError("NaN")  # json.dumps keeps NaN as NaN; msgspec would write null
        return data

    def encode_lines(lines: list[dict[str, Any]]) -> bytes:
        data = encoder.encode_lines(lines)
        if b"null" in data and _has_nan(lines):
            raise ValueError("NaN")
        return data

    return encode, encode_lines


def _refuse_nan_and_others(value: Any) -> Any:
    raise TypeError(type(value).__name__)  # json.dumps(default=str) decides, as before


def _has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return value != value or value in (float("inf"), float("-inf"))
    if isinstance(value, dict):
        return any(_has_nan(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(_has_nan(item) for item in value)
    return False


_msgspec_encode, _msgspec_encode_lines = _msgspec_encoders()
try:
    from msgspec import Raw as _Raw
except ImportError:  # pragma: no cover - Airflow's task SDK brings msgspec
    _Raw = None  # type: ignore[assignment,misc]


# --- sinks ---------------------------------------------------------------------------------------------------------


class Sink:
    """Where the writer puts bytes. ``intend`` records an item before it is sent (where the store can append)."""

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def intend(self, data: bytes) -> None:
        """Record intents durably enough to survive a kill of this process (default: not possible, no-op)."""

    def due(self, now: float) -> bool:
        """Whether ``sync`` should run now rather than at the next interval."""
        return False

    def sync(self) -> None:
        """Make written data durable (local files: ``fsync``; object stores: write a part when one is due)."""


class LocalSink(Sink):
    def __init__(self, handle: IO[bytes], intents: IO[bytes]) -> None:
        self.handle = handle
        self.intents = intents

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        self.handle.flush()  # to the OS: a crash of this process loses nothing written

    def intend(self, data: bytes) -> None:
        self.intents.write(data)
        self.intents.flush()

    def sync(self) -> None:
        os.fsync(self.handle.fileno())  # to the disk, about once a second
        os.fsync(self.intents.fileno())


class PartSink(Sink):
    """Lines collect in memory and go out as one whole object per part (``sync`` runs in a thread)."""

    def __init__(
        self, folder: ObjectStoragePath, number: int, part_size: int, part_interval: float, clock: Callable[[], float]
    ) -> None:
        self.folder = folder
        self.number = number
        self.part_size = part_size
        self.part_interval = part_interval
        self.clock = clock
        self.written: list[str] = []
        self._lock = threading.Lock()
        self._chunks: list[bytes] = []
        self._lines = 0
        self._started: float | None = None
        self._sealed: list[bytes] = []

    def write(self, data: bytes) -> None:
        with self._lock:
            self._chunks.append(data)
            self._lines += data.count(b"\n")
            if self._started is None:
                self._started = self.clock()
            if self._lines >= self.part_size:  # sealed now, uploaded by the next sync: parts stay part_size lines
                self._sealed.append(b"".join(self._chunks))
                self._chunks, self._lines, self._started = [], 0, None

    def due(self, now: float) -> bool:
        started = self._started
        return bool(self._sealed) or (started is not None and now - started >= self.part_interval)

    def sync(self) -> None:
        while self._sealed:
            self.write_part()
        if self.due(self.clock()):
            self.write_part()

    def write_all(self) -> None:
        """Every sealed part, then the one being filled (the task's end)."""
        while self._sealed:
            self.write_part()
        self.write_part()

    def write_part(self) -> None:
        """Upload the oldest sealed part, else the part being filled, as one whole object."""
        with self._lock:
            if self._sealed:
                data = self._sealed.pop(0)
            else:
                data, self._chunks, self._lines, self._started = b"".join(self._chunks), [], 0, None
            if not data:
                return
            number = self.number
            self.number += 1
        path = self.folder / part_name(number)
        with path.open("wb") as handle:  # one whole object: it appears complete or not at all
            handle.write(data)
        self.written.append(storage_uri(path))


def part_name(number: int) -> str:
    return f"{PART_PREFIX}{number:05d}{PART_SUFFIX}"


# --- the two layouts --------------------------------------------------------------------------------------------


class BatchOutput:
    """The journal at ``uri``: load what earlier tries left, drop what must go, and take new lines."""

    uri: str

    @staticmethod
    def at(path: ObjectStoragePath | Path, *, part_size: int, part_interval: float) -> BatchOutput:
        if is_local(path):
            return LocalOutput(path)  # type: ignore[arg-type]
        return PartsOutput(path, part_size=part_size, part_interval=part_interval)  # type: ignore[arg-type]

    def exists(self) -> bool:
        raise NotImplementedError

    def delete(self) -> None:
        raise NotImplementedError

    def load(self, log: Any) -> Existing:
        """Take stock of earlier tries' lines (and, locally, their intents) without changing anything."""
        raise NotImplementedError

    def compact(self, stale: IndexSet, loaded: Existing) -> Existing:
        """Drop stale, torn and re-sendable lines from the stored output; the counts of what stays."""
        raise NotImplementedError

    def open_sink(self, clock: Callable[[], float]) -> contextlib.AbstractContextManager[Sink]:
        raise NotImplementedError

    def part_uris(self) -> list[str]:
        """Every object or file holding this output's lines, as URIs that open as returned."""
        raise NotImplementedError

    def forget_intents(self) -> None:
        """After a try whose every sent item has a line: the intents are no longer needed."""


class LocalOutput(BatchOutput):
    """One local JSONL file, appended as lines complete, with an intents sidecar beside it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.intents = path.with_name(path.name + INTENTS_SUFFIX)
        self.uri = storage_uri(path)
        self._changed = False

    def exists(self) -> bool:
        return self.path.exists() or self.intents.exists()

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)
        self.intents.unlink(missing_ok=True)

    def load(self, log: Any) -> Existing:
        existing = Existing()
        if self.path.exists():
            with self.path.open("rb") as handle:
                for _line, keep, normalized in scan_lines(handle, existing, self.uri, log):
                    self._changed = self._changed or not keep or normalized
        if self.intents.exists():
            with self.intents.open("rb") as handle:
                for raw in handle:
                    intent = _parse_intent(raw)
                    if intent is None or intent["index"] in existing.answered:
                        continue
                    if intent.get("released"):
                        existing.stranded.pop(intent["index"], None)  # it provably never reached the model
                    else:
                        existing.stranded[intent["index"]] = intent
        return existing

    def compact(self, stale: IndexSet, loaded: Existing) -> Existing:
        if not stale and not self._changed:
            return loaded
        kept = Existing(stranded=loaded.stranded)
        if not self.path.exists():
            return kept
        tmp = self.path.with_name(self.path.name + ".resume-tmp")
        try:
            with self.path.open("rb") as source, tmp.open("wb") as out:
                for line, keep, _ in scan_lines(source, kept, self.uri, None, stale):
                    if keep:
                        out.write(line)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)  # atomically: a crash leaves the old file or the new one
        finally:
            tmp.unlink(missing_ok=True)
        kept.torn_bytes, kept.dropped_retryable = loaded.torn_bytes, loaded.dropped_retryable
        return kept

    @contextlib.contextmanager
    def open_sink(self, clock: Callable[[], float]) -> Iterator[Sink]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as handle, self.intents.open("ab") as intents:
            try:
                yield LocalSink(handle, intents)
            finally:
                handle.flush()
                os.fsync(handle.fileno())

    def part_uris(self) -> list[str]:
        return [self.uri]

    def forget_intents(self) -> None:
        self.intents.unlink(missing_ok=True)


class PartsOutput(BatchOutput):
    """A folder of whole-object parts on a store that cannot append (S3, GCS, Azure Blob)."""

    def __init__(self, folder: ObjectStoragePath, *, part_size: int, part_interval: float) -> None:
        self.folder = folder
        self.uri = storage_uri(folder)
        self.part_size = part_size
        self.part_interval = part_interval
        self._parts: list[ObjectStoragePath] | None = None
        self._sink: PartSink | None = None

    def parts(self) -> list[ObjectStoragePath]:
        if self._parts is None:
            try:
                children = list(self.folder.iterdir())
            except (FileNotFoundError, NotADirectoryError):
                children = []
            self._parts = sorted(
                (child for child in children if _part_number(child.name) is not None), key=lambda child: child.name
            )
        return self._parts

    def exists(self) -> bool:
        return bool(self.parts())

    def delete(self) -> None:
        for part in self.parts():
            part.unlink(missing_ok=True)
        self._parts = []

    def load(self, log: Any) -> Existing:
        existing = Existing()
        for part in self.parts():
            with part.open("rb") as handle:
                for _line in scan_lines(handle, existing, storage_uri(part), log):
                    pass
        return existing

    def compact(self, stale: IndexSet, loaded: Existing) -> Existing:
        kept = Existing(stranded=loaded.stranded)
        remaining: list[ObjectStoragePath] = []
        for part in self.parts():
            with part.open("rb") as handle:
                lines = list(scan_lines(handle, kept, storage_uri(part), None, stale))
            if all(keep and not normalized for _line, keep, normalized in lines):
                remaining.append(part)
                continue
            data = b"".join(line for line, keep, _ in lines if keep)
            if data:
                with part.open("wb") as handle:  # rewritten whole; the other parts are untouched
                    handle.write(data)
                remaining.append(part)
            else:
                part.unlink(missing_ok=True)
        self._parts = remaining
        kept.torn_bytes, kept.dropped_retryable = loaded.torn_bytes, loaded.dropped_retryable
        return kept

    @contextlib.contextmanager
    def open_sink(self, clock: Callable[[], float]) -> Iterator[Sink]:
        numbers = [_part_number(part.name) or 0 for part in self.parts()]
        sink = self._sink = PartSink(
            self.folder, max(numbers, default=-1) + 1, self.part_size, self.part_interval, clock
        )
        try:
            yield sink
        finally:
            sink.write_all()  # the last parts: on success, an exception, a timeout or SIGTERM alike

    def part_uris(self) -> list[str]:
        written = self._sink.written if self._sink is not None else []
        return [storage_uri(part) for part in self.parts()] + written


def _part_number(name: str) -> int | None:
    if not (name.startswith(PART_PREFIX) and name.endswith(PART_SUFFIX)):
        return None
    digits = name[len(PART_PREFIX) : -len(PART_SUFFIX)]
    return int(digits) if digits.isdigit() else None


def _parse_intent(raw: bytes) -> dict[str, Any] | None:
    try:
        intent = json.loads(raw)
    except ValueError:
        return None  # a torn last intent: its item was never sent (the send waits for the write)
    if not isinstance(intent, dict):
        return None
    index = intent.get("index")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        return None
    return intent


# --- the writer -----------------------------------------------------------------------------------------------------


class LineWriter:
    """Lines finished within one event-loop tick go to the sink in one write, at the end of that tick.

    A write error stops the batch (through ``on_error``) and is raised by the operator after the loop.
    """

    def __init__(
        self,
        sink: Sink,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self.sink = sink
        self.loop = loop
        self.clock = clock
        self.on_error = on_error
        self.buffer: list[bytes] = []
        self.scheduled = False
        self.last_sync = clock()
        self.syncing: asyncio.Future[None] | None = None
        self.error: BaseException | None = None

    def add(self, line: dict[str, Any]) -> None:
        self.add_encoded(encode_line_bytes(line))

    def add_encoded(self, data: bytes) -> None:
        """Whole lines already encoded (one or many, each ending in a newline), written with this tick's."""
        self.buffer.append(data)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def intend_many(self, intents: list[dict[str, Any]], encoded: bytes | None = None) -> bool:
        """Record, before they are sent, the inputs of one request, in one write (the unit of intent); ``False``
        (and a stop) if that failed. ``encoded``: the same intents already encoded as lines (the caller's cache)."""
        if self.error is not None:
            return False
        try:
            self.sink.intend(encoded if encoded is not None else encode_lines_bytes(intents))
        except Exception as err:
            self._failed(err)
            return False
        return True

    def release(self, index: int) -> None:
        """Withdraw an intent: the item provably never reached the model and has no line (left for a retry)."""
        with contextlib.suppress(Exception):
            self.sink.intend(encode_line_bytes({"index": index, "released": True}))

    def flush(self) -> None:
        self.scheduled = False
        if not self.buffer or self.error is not None:
            return
        data = b"".join(self.buffer)
        self.buffer.clear()
        try:
            self.sink.write(data)
        except Exception as err:
            self._failed(err)
            return
        now = self.clock()
        due = now - self.last_sync >= _FSYNC_INTERVAL or self.sink.due(now)
        if due and (self.syncing is None or self.syncing.done()):
            # fsync (or a part upload) can take a while: in a thread, so the event loop keeps sending.
            self.last_sync = now
            self.syncing = self.loop.run_in_executor(None, self.sink.sync)
            self.syncing.add_done_callback(self._synced)

    def _synced(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None:
            self._failed(future.exception())  # type: ignore[arg-type]
        elif self.error is None and self.sink.due(self.clock()) and not self.loop.is_closed():
            # parts sealed while this upload ran: send them now, not only after the next finished line
            self.syncing = self.loop.run_in_executor(None, self.sink.sync)
            self.syncing.add_done_callback(self._synced)

    def _failed(self, err: BaseException) -> None:
        if self.error is None:
            self.error = err
            self.on_error(err)
