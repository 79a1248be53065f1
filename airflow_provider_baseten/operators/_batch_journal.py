"""The output of a batch is its journal: one JSONL line per finished input, scanned on a retry to resume.

A local file is appended and flushed as lines complete; an object store receives whole objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from airflow_provider_baseten.exceptions import BasetenError
from airflow_provider_baseten.operators._storage import is_local, storage_uri

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

_FSYNC_INTERVAL = 1.0


class IndexSet:
    """A set of non-negative indices as a growable bitmap: 1 bit per input, flat enough at millions of inputs."""

    def __init__(self) -> None:
        self._bits = bytearray()

    def add(self, index: int) -> None:
        byte = index >> 3
        if byte >= len(self._bits):
            self._bits.extend(bytes(byte - len(self._bits) + 1024))
        self._bits[byte] |= 1 << (index & 7)

    def __contains__(self, index: int) -> bool:
        byte = index >> 3
        return byte < len(self._bits) and bool(self._bits[byte] & (1 << (index & 7)))


@dataclass
class Existing:
    """What an earlier try left in the output file (after dropping re-sendable errors and a torn tail)."""

    done: IndexSet = field(default_factory=IndexSet)
    kept: int = 0
    succeeded: int = 0
    failed: int = 0
    dropped_retryable: int = 0
    torn_bytes: int = 0


class Sink:
    """Where the writer puts bytes: a local file (flushed per write) or an object-store stream."""

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def sync(self) -> None:
        """Make written data durable (local files: ``fsync``); object stores write at close."""


class OutputFile:
    """The output JSONL: appended and flushed line by line when local; written as a whole on an object store."""

    def __init__(self, path: ObjectStoragePath | Path) -> None:
        self.path = path
        self.local = is_local(path)
        self.uri = storage_uri(path)
        self._carry_over = False  # object store: copy the kept lines of the earlier try into the new object

    def prepare(self, *, resume: bool, log: Any) -> Existing:
        """Start fresh (first try) or take stock of an earlier try's lines, repairing the file if needed."""
        existing = Existing()
        if self.local:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            return existing
        if not resume:
            log.info("First try: replacing the existing %s.", self.uri)
            if self.local:
                self.path.unlink()
            return existing
        changed = False
        with self.path.open("rb") as handle:
            for _line, keep, normalized in scan_lines(handle, existing, self.uri, log):
                changed = changed or not keep or normalized
        if self.local and changed:
            self._rewrite_local()
        elif not self.local:
            self._carry_over = existing.kept > 0
        return existing

    def _rewrite_local(self) -> None:
        """Keep only the kept lines: written to a temporary file, synced, then swapped in atomically."""
        assert isinstance(self.path, Path)
        tmp = self.path.with_name(self.path.name + ".resume-tmp")
        try:
            with self.path.open("rb") as source, tmp.open("wb") as out:
                for line, keep, _ in scan_lines(source, Existing(), self.uri, None):
                    if keep:
                        out.write(line)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    @contextlib.contextmanager
    def open_append(self) -> Iterator[Sink]:
        if self.local:
            local = self.path.open("ab")
            try:
                yield LocalSink(local)
            finally:
                local.flush()
                os.fsync(local.fileno())
                local.close()
            return
        if not self._carry_over:
            with self.path.open("wb") as handle:
                yield StreamSink(handle)
            return
        # Object stores cannot append: write a new object (the kept lines, then the new ones) and move it into
        # place when the task ends (also when it fails: every line in it is complete), so a crash before then
        # leaves the earlier try's object intact.
        tmp = self.path.with_name(self.path.name + ".resume-tmp")
        copied = False
        try:
            with tmp.open("wb") as handle:
                with self.path.open("rb") as source:
                    for line, keep, _ in scan_lines(source, Existing(), self.uri, None):
                        if keep:
                            handle.write(line)
                copied = True
                yield StreamSink(handle)
        finally:
            if copied:
                tmp.rename(self.path)  # type: ignore[arg-type]


def scan_lines(handle: IO[bytes], existing: Existing, uri: str, log: Any) -> Iterator[tuple[bytes, bool, bool]]:
    """Each line of an earlier try's output: ``(line, keep, normalized)``; counts the kept ones into ``existing``.

    Dropped: a torn last line (a crash mid-write), a repeated index, and errors that never reached the model (they
    are predicted again). A last line that is complete but lost its newline is kept, with the newline restored.
    Any other unreadable line means the file is not this batch's output: that raises.
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
            existing.torn_bytes = len(raw)
            yield raw, False, True
            return
        index = record["index"]
        error = record.get("error")
        if index in existing.done:
            yield line, False, normalized
        elif isinstance(error, dict) and error.get("model_may_have_run") is False:
            existing.dropped_retryable += 1
            yield line, False, normalized
        else:
            existing.done.add(index)
            existing.kept += 1
            if error is not None:
                existing.failed += 1
            else:
                existing.succeeded += 1
            yield line, True, normalized
        raw = following


class LocalSink(Sink):
    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        self.handle.flush()  # to the OS: a crash of this process loses nothing written

    def sync(self) -> None:
        os.fsync(self.handle.fileno())  # to the disk, about once a second


class StreamSink(Sink):
    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle

    def write(self, data: bytes) -> None:
        self.handle.write(data)


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
    if "output" not in record and "error" not in record:
        return None
    return record


class LineWriter:
    """Lines finished within one event-loop tick go to the file in one write, at the end of that tick.

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
        self.buffer: list[str] = []
        self.scheduled = False
        self.last_sync = clock()
        self.syncing: asyncio.Future[None] | None = None
        self.error: BaseException | None = None

    def add(self, line: dict[str, Any]) -> None:
        self.buffer.append(json.dumps(line, ensure_ascii=False, separators=(",", ":"), default=str) + "\n")
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        if not self.buffer or self.error is not None:
            return
        data = "".join(self.buffer).encode()
        self.buffer.clear()
        try:
            self.sink.write(data)
        except Exception as err:
            self._failed(err)
            return
        now = self.clock()
        if now - self.last_sync >= _FSYNC_INTERVAL and (self.syncing is None or self.syncing.done()):
            # fsync can take a while on a busy disk: in a thread, so the event loop keeps sending.
            self.last_sync = now
            self.syncing = self.loop.run_in_executor(None, self.sink.sync)
            self.syncing.add_done_callback(self._synced)

    def _synced(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None:
            self._failed(future.exception())  # type: ignore[arg-type]

    def _failed(self, err: BaseException) -> None:
        if self.error is None:
            self.error = err
            self.on_error(err)
