"""Reading completion files for `grpo-kit score`: JSONL, Parquet, a `datasets` folder or a hub id.

A hub id that cannot be loaded raises :class:`grpo_kit.errors.ConfigError` (see :mod:`grpo_kit.hub`).
Every row is checked as it is read; a malformed one raises :class:`InputError` naming the file,
the line (JSONL) or row (other formats) and the field, unless ``skip_invalid`` is set, in which
case it is skipped and reported in the returned list.
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
    invalid: list[str] = field(default_factory=list)  # "file:line: reason" of skipped rows
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


def _iter_table(path: str, split: str) -> Iterator[tuple[str, dict | None, str | None]]:
    p = Path(path)
    if p.is_file() and p.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(p)
        for i, row in enumerate(table.to_pylist(), 1):
            yield f"{p}, row {i}", row, None
        return
    import datasets

    if p.is_dir():
        ds = datasets.load_from_disk(str(p))
    elif p.exists():
        raise InputError(f"{p}: unknown input format; expected .jsonl, .parquet, a `datasets` folder "
                         "saved with save_to_disk, or a hub dataset id")
    else:  # a hub id; a ConfigError says what failed and how to point at a local copy
        ds = load_hub_dataset(path, None, split, setting="the input", label="input")
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise InputError(f"{p}: has splits {sorted(ds)}, not {split!r}; choose one with --split")
        ds = ds[split]
    for i, row in enumerate(ds, 1):
        yield f"{path}, row {i}", row, None


def read_rows(path: str | Path, *, completion_column: str = "completion", split: str = "train",
              skip_invalid: bool = False) -> Rows:
    """Read and check every row of ``path``."""
    p = Path(path)
    if p.suffix in (".jsonl", ".json") or (p.is_file() and p.suffix not in (".parquet",)):
        if not p.is_file():
            raise InputError(f"{p}: no such file")
        it = _iter_jsonl(p)
    else:
        it = _iter_table(str(path), split)
    rows: list[dict[str, Any]] = []
    invalid: list[str] = []
    for where, obj, reason in it:
        if reason is None:
            reason = check_completion(obj.get(completion_column), completion_column)
        if reason is not None:
            if not skip_invalid:
                raise InputError(f"{where}: {reason} (use --skip-invalid to skip such rows)")
            invalid.append(f"{where}: {reason}")
            continue
        rows.append(obj)
    return Rows(rows, invalid, str(path))
