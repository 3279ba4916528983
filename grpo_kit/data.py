"""Reading completion files for `grpo-kit score`: JSONL, Parquet, a `datasets` folder or a hub id.

A hub id that cannot be loaded raises :class:`grpo_kit.errors.ConfigError` (see :mod:`grpo_kit.hub`).
Every row is checked as it is read; a malformed one raises :class:`InputError` naming the file,
the line (JSONL) or row (other formats) and the field, unless ``skip_invalid`` is set, in which
case it is skipped and counted.

:class:`RowStream` reads lazily, so memory does not grow with the file: JSONL a line at a time,
Parquet a record batch at a time (``pyarrow``), a `datasets` folder or hub dataset a batch at a
time from its memory-mapped Arrow files (a hub dataset is first downloaded whole into the HF
cache, as ``datasets`` always does; the mapped pages are file-backed and count toward RSS only
while the OS keeps them). Any other file, a pipe included, is read as JSONL. :func:`read_rows`
reads everything into a list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from grpo_kit.hub import load_hub_dataset


class InputError(ValueError):
    """A malformed input; the message names the file, line/row and field."""


@dataclass
class Rows:
    rows: list[dict[str, Any]]
    invalid: list[str] = field(default_factory=list)  # "file:line: reason" of the first 20 skipped rows
    source: str = ""


def check_completion(value: Any, column: str) -> str | None:
    """The reason ``value`` is not a usable completion, or None if it is."""
    if isinstance(value, str):
        return None
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):
        if not value:
            return f"field {column!r}: an empty list of messages"
        for m in value:
            if not isinstance(m, dict) or "content" not in m:
                return f"field {column!r}: a chat completion must be a list of {{role, content}} messages"
        return None
    if value is None:
        return f"field {column!r} is missing or null"
    return f"field {column!r} must be a string or a list of chat messages, got {type(value).__name__}"


def _iter_jsonl(path: Path) -> Iterator[tuple[str, dict | None, str | None]]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}, line {lineno}"
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except UnicodeDecodeError as e:
                yield where, None, f"not UTF-8 text ({e.reason} at byte {e.start})"
                continue
            except json.JSONDecodeError as e:
                yield where, None, f"not valid JSON ({e.msg} at column {e.colno})"
                continue
            if not isinstance(obj, dict):
                yield where, None, f"expected a JSON object, got {type(obj).__name__}"
                continue
            yield where, obj, None


def _iter_table(path: str, split: str, batch_rows: int) -> Iterator[tuple[str, dict | None, str | None]]:
    p = Path(path)
    if p.is_file() and p.suffix == ".parquet":
        import pyarrow.parquet as pq

        batches = pq.ParquetFile(p).iter_batches(batch_size=batch_rows)
    else:
        batches = _dataset(path, split).with_format("arrow").iter(batch_size=batch_rows)
    i = 0
    for batch in batches:
        for row in batch.to_pylist():
            i += 1
            yield f"{path}, row {i}", row, None


def _dataset(path: str, split: str):
    import datasets

    p = Path(path)
    if p.is_dir():
        ds = datasets.load_from_disk(str(p))
    else:  # a hub id; a ConfigError says what failed and how to point at a local copy
        ds = load_hub_dataset(path, None, split, setting="the input", label="input")
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise InputError(f"{p}: has splits {sorted(ds)}, not {split!r}; choose one with --split")
        ds = ds[split]
    return ds


@dataclass
class RowStream:
    """The checked rows of ``path`` as ``(where, row)`` pairs, read lazily (see the module docstring).

    A malformed row raises :class:`InputError`, or with ``skip_invalid`` is skipped and counted in
    ``invalid`` (the first 20 reasons kept in ``invalid_examples``). Iterate it once.

    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "in.jsonl"
    >>> _ = f.write_text('{"completion": "a"}\\n{"completion": 1}\\n{"completion": "b"}\\n')
    >>> stream = RowStream(f, skip_invalid=True)
    >>> [row["completion"] for _, row in stream], stream.invalid
    (['a', 'b'], 1)
    """

    path: str | Path
    completion_column: str = "completion"
    split: str = "train"
    skip_invalid: bool = False
    batch_rows: int = 1024  # rows per Parquet / Arrow batch
    invalid: int = 0
    invalid_examples: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        p = Path(self.path)
        if p.suffix in (".jsonl", ".json") or (p.exists() and not p.is_dir() and p.suffix != ".parquet"):
            if not p.exists() or p.is_dir():  # a pipe is fine: grpo-kit score <(zcat rows.jsonl.gz)
                raise InputError(f"{p}: no such file")
            it = _iter_jsonl(p)
        else:
            it = _iter_table(str(self.path), self.split, self.batch_rows)
        col = self.completion_column
        for where, obj, reason in it:
            if reason is None:
                reason = check_completion(obj.get(col), col)
            if reason is None:
                yield where, obj
                continue
            if not self.skip_invalid:
                raise InputError(f"{where}: {reason} (use --skip-invalid to skip such rows)")
            self.invalid += 1
            if len(self.invalid_examples) < 20:
                self.invalid_examples.append(f"{where}: {reason}")


def read_rows(path: str | Path, *, completion_column: str = "completion", split: str = "train",
              skip_invalid: bool = False) -> Rows:
    """Read and check every row of ``path`` into memory (:class:`RowStream` streams them)."""
    stream = RowStream(path, completion_column, split, skip_invalid)
    rows = [row for _, row in stream]
    return Rows(rows, stream.invalid_examples, str(path))
