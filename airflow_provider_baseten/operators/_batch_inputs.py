"""The inputs of a batch: a list or a JSONL, CSV or Parquet file, read lazily into numbered items."""

from __future__ import annotations

import ast
import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_baseten.exceptions import BasetenConfigError
from airflow_provider_baseten.operators._storage import is_local, storage_uri

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    from airflow_provider_baseten.operators._batch_journal import IndexSet


class Item:
    """One numbered input (a plain slotted class: a frozen dataclass cost 3 times as much per input to build)."""

    __slots__ = ("error", "fingerprint", "index", "input_id", "payload")

    def __init__(
        self, index: int, input_id: Any, fingerprint: str, payload: Any = None, error: dict[str, Any] | None = None
    ) -> None:
        self.index = index
        self.input_id = input_id
        self.fingerprint = fingerprint
        self.payload = payload
        self.error = error

    def __repr__(self) -> str:
        return f"Item(index={self.index!r}, input_id={self.input_id!r}, fingerprint={self.fingerprint!r})"


def make_item(index: int, record: Any, fingerprint: str, id_field: str | None, input_field: str | None) -> Item:
    input_id: Any = index
    for name, key in (("id_field", id_field), ("input_field", input_field)):
        if key is not None and not (isinstance(record, dict) and key in record):
            return Item(index, index, fingerprint, error=input_error(f"the record has no key {key!r} ({name})."))
    if id_field is not None:
        input_id = record[id_field]
    payload = record[input_field] if input_field is not None else record
    return Item(index, input_id, fingerprint, payload)


@cache
def _json_decoder() -> Callable[[bytes], Any]:
    """``msgspec.json.decode`` where installed (Airflow's task SDK brings it): a JSONL record in a tenth of the
    time of ``json.loads``, which was the largest cost of reading an input file."""
    try:
        import msgspec.json
    except ImportError:
        return json.loads
    return msgspec.json.Decoder().decode


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def input_error(message: str) -> dict[str, Any]:
    return {
        "type": "InvalidInput",
        "message": message,
        "status_code": None,
        "request_id": None,
        "model_may_have_run": False,
    }


class Source:
    """Numbered records; each item carries a fingerprint of its record (and of ``id_field``/``input_field``)."""

    total: int | None

    def records(self) -> Iterator[tuple[Any, str | None, bytes]]:
        """``(record, problem, the bytes the fingerprint covers)`` per record."""
        raise NotImplementedError

    def __init__(self, id_field: str | None, input_field: str | None, salt: Any = None) -> None:
        self.id_field = id_field
        self.input_field = input_field
        self.seen = 0  # records read so far: the total once the source is exhausted
        # ``salt``: whatever else decides the output of a record (e.g. the embedding dimensions).
        self._salt = canonical_json([id_field, input_field] if salt is None else [id_field, input_field, salt])

    def items(self, *, skip: IndexSet | None = None) -> Iterator[Item]:
        """Lazily, the items whose index is not in ``skip``."""
        salt, blake2b, id_field, input_field = self._salt, hashlib.blake2b, self.id_field, self.input_field
        plain = id_field is None and input_field is None  # the record is the payload, its index the id
        for index, (record, problem, raw) in enumerate(self.records()):
            self.seen = index + 1
            if skip is not None and index in skip:
                continue
            fingerprint = blake2b(salt + raw, digest_size=8).hexdigest()
            if problem is not None:
                yield Item(index, index, fingerprint, error=input_error(problem))
            elif plain:
                yield Item(index, index, fingerprint, record)
            else:
                yield make_item(index, record, fingerprint, id_field, input_field)

    def fingerprints(self) -> Iterator[tuple[int, Any, str]]:
        """``(index, input_id, fingerprint)`` of every record: one more pass over the inputs."""
        for item in self.items():
            yield item.index, item.input_id, item.fingerprint


class ListSource(Source):
    def __init__(self, inputs: list[Any], id_field: str | None, input_field: str | None, salt: Any = None) -> None:
        super().__init__(id_field, input_field, salt)
        self.inputs = inputs
        self.total = len(inputs)

    def records(self) -> Iterator[tuple[Any, str | None, bytes]]:
        for record in self.inputs:
            yield record, None, canonical_json(record)


class FileSource(Source):
    """JSONL read line by line; for local files the lines are counted first (one cheap pass) for the ETA."""

    def __init__(
        self, path: ObjectStoragePath | Path, id_field: str | None, input_field: str | None, salt: Any = None
    ) -> None:
        super().__init__(id_field, input_field, salt)
        self.path = path
        if not path.exists():
            raise BasetenConfigError(f"input_path {storage_uri(path)} does not exist.")
        self.total = self._count() if is_local(path) else None

    def _count(self) -> int | None:
        with self.path.open("rb") as handle:
            return sum(1 for line in handle if not line.isspace())

    def records(self) -> Iterator[tuple[Any, str | None, bytes]]:
        decode = _json_decoder()
        number = 0
        with self.path.open("rb") as handle:
            for line in handle:
                raw = line.strip()
                if not raw:
                    continue
                try:
                    record, problem = decode(raw), None
                except ValueError:
                    record, problem = self._slow_record(raw, number)
                number += 1
                yield record, problem, raw

    def _slow_record(self, raw: bytes, number: int) -> tuple[Any, str | None]:
        """What msgspec refuses: json may accept it (NaN, an int past 64 bits), else its message names the fault."""
        try:
            return json.loads(raw), None
        except ValueError as err:
            return None, f"record {number} of {storage_uri(self.path)} is not valid JSON: {err}"


class CsvSource(FileSource):
    """A CSV file with a header row: each row is a record ``{column: value}`` (values are strings)."""

    def _rows(self) -> Iterator[dict[str, Any]]:
        with self.path.open("rb") as handle:
            yield from csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8-sig", newline=""))

    def _count(self) -> int | None:
        return sum(1 for _ in self._rows())

    def records(self) -> Iterator[tuple[Any, str | None, bytes]]:
        for row in self._rows():
            yield row, None, canonical_json(row)


class ParquetSource(FileSource):
    """A Parquet file read one row batch at a time (needs the ``parquet`` extra: pyarrow); the total is metadata."""

    def __init__(
        self, path: ObjectStoragePath | Path, id_field: str | None, input_field: str | None, salt: Any = None
    ) -> None:
        super().__init__(path, id_field, input_field, salt)
        parquet = import_pyarrow_parquet("reading the Parquet input")
        with self.path.open("rb") as handle:
            self.total = parquet.ParquetFile(handle).metadata.num_rows  # the footer only, also on object stores

    def _count(self) -> int | None:
        return None

    def records(self) -> Iterator[tuple[Any, str | None, bytes]]:
        parquet = import_pyarrow_parquet("reading the Parquet input")
        with self.path.open("rb") as handle:
            reader = parquet.ParquetFile(handle)
            for batch in reader.iter_batches(batch_size=1024):
                for row in batch.to_pylist():
                    yield row, None, canonical_json(row)


def import_pyarrow_parquet(purpose: str) -> Any:
    """``pyarrow.parquet``, or a clear error naming the extra that brings it."""
    try:
        import pyarrow.parquet
    except ImportError:
        raise BasetenConfigError(
            f"pyarrow is needed for {purpose}: pip install 'airflow-provider-baseten[parquet]'."
        ) from None
    return pyarrow.parquet


#: File sources by the suffix of the input path (anything else is JSONL).
FILE_SOURCES: dict[str, type[FileSource]] = {".csv": CsvSource, ".parquet": ParquetSource, ".pq": ParquetSource}


def open_file_source(
    path: ObjectStoragePath | Path, id_field: str | None, input_field: str | None, salt: Any = None
) -> FileSource:
    """The source for ``path`` by its suffix: ``.csv``, ``.parquet``/``.pq``, else JSONL."""
    kind = FILE_SOURCES.get(Path(str(path.name)).suffix.lower(), FileSource)
    return kind(path, id_field, input_field, salt)


def parse_list(text: str) -> Any:
    """A rendered template: JSON, or the Python literal a plain ``{{ ... }}`` of a list renders to."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise BasetenConfigError("inputs rendered to a string that is neither a JSON list nor a Python list.") from None
