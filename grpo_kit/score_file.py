"""Scoring a file of completions offline, resumably, in bounded memory: the engine of ``grpo-kit score``.

Output rows are the input rows in order plus ``rewards``, ``reward`` and ``reward_errors``. They are
written whole, one JSON line each, chunk by chunk, and fsynced; a killed run leaves at most a cut
last line, which the next run of the same command drops before it continues after the last
complete row. The rows of a chunk go through the scorer as one
:class:`~grpo_kit.records.RolloutBatch` (the same record and scorer as training).

**Streaming.** The input is read lazily (:class:`~grpo_kit.data.RowStream`) and cut into chunks of
about ``chunk_rows`` rows, only between groups, so a group reward sees its whole group in one
call. The summary is accumulated chunk by chunk (:class:`~grpo_kit.metrics.RunningSummary`), and
a resumed output is read a row at a time beside the input, each row's completion compared with
the input's. Memory is about one chunk (a few in flight on Ray) plus 8 bytes per group seen,
whatever the size of the file. So **the rows of a group must be contiguous**: a group that comes
back after another group started is an error naming the file, the line and the group column
(sort the input by that column first).

**Ray.** With ``ray=ADDRESS`` the chunks are scored by Ray actors (see :mod:`grpo_kit.score_ray`);
reading, chunking, resuming, writing and the summary stay here, so the output is the same as a
local run's, row for row, and resumes the same way.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from pydantic import Field, field_validator

from grpo_kit.config import RewardConfig, ScoringConfig, Strict, unique_reward_keys
from grpo_kit.data import InputError, RowStream
from grpo_kit.errors import ConfigError
from grpo_kit.metrics import RunningSummary
from grpo_kit.score_ray import LocalScorer, Payload, RayScorer

OUTPUT_FIELDS = ("rewards", "reward", "reward_errors")


class ScoreConfig(Strict):
    """Settings of `grpo-kit score` (a YAML file given with --config; flags override it).

    >>> from grpo_kit.config import load_config_text
    >>> load_config_text("rewards:\\n  - name: think_format\\n    wieght: 2\\n", ScoreConfig)
    Traceback (most recent call last):
    ...
    grpo_kit.errors.ConfigError: <string>: rewards.0.wieght: unknown key; did you mean 'weight'? valid keys: name, weight, args, label, scope
    """

    rewards: list[RewardConfig] = Field(default_factory=list, description="rewards and weights")
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    completion_column: str = Field("completion", description="column holding the completion")
    group_by: str | None = Field(None, description="column grouping completions of one prompt "
                                 "(default: `prompt` when the input has it)")
    skip_invalid: bool = Field(False, description="skip and count malformed input rows")
    pass_threshold: float = Field(1.0, description="a completion counts as solved for pass@k "
                                  "when its score is at least this")
    split: str = Field("train", description="split to read from a hub dataset or DatasetDict")
    chunk_rows: int | None = Field(None, ge=1, description="rows per scorer call and per fsynced "
                                   "write, cut between groups (default: max(64, 256 x workers)); "
                                   "memory in use grows with it, not with the file")

    @field_validator("rewards")
    @classmethod
    def _unique_keys(cls, v: list[RewardConfig]) -> list[RewardConfig]:
        return unique_reward_keys(v)


def summary_path(output: Path) -> Path:
    return output.with_name(output.stem + ".summary.json")


def score_file(cfg: ScoreConfig, input: str, output: Path, *, overwrite: bool = False,
               progress: bool = True, ray: str | None = None) -> dict[str, Any]:
    """Score ``input`` into ``output`` (resuming it unless ``overwrite``); write and return the summary.

    ``ray``: None scores here; ``"local"`` (a new local cluster), ``"auto"`` or ``HOST:PORT``
    scores on Ray actors (see :class:`~grpo_kit.score_ray.RayScorer`)."""
    stream = RowStream(input, cfg.completion_column, cfg.split, cfg.skip_invalid)
    rows = iter(stream)
    first = next(rows, None)
    if cfg.group_by and first and cfg.group_by not in first[1]:
        raise InputError(f"{input}: --group-by column {cfg.group_by!r} is not in the input; "
                         f"columns: {', '.join(first[1])}")
    group_col = cfg.group_by or ("prompt" if first and "prompt" in first[1] else None)
    rows = itertools.chain([first] if first else [], rows)
    chunk_rows = cfg.chunk_rows or max(64, 256 * cfg.scoring.workers)

    executor = RayScorer(cfg.rewards, cfg.scoring, ray) if ray else LocalScorer(cfg.rewards, cfg.scoring)
    with executor:
        if executor.group_rewards and group_col is None:
            raise ConfigError(f"rewards {executor.group_rewards} score a completion against the others "
                              "of its prompt: the input needs a `prompt` column, or give --group-by COLUMN")
        if overwrite and output.exists():
            output.unlink()
        previous = PreviousOutput(output)
        summary = RunningSummary([r.key for r in cfg.rewards], group_col is not None, cfg.pass_threshold)
        jobs = _jobs(chunks(rows, group_col, chunk_rows), previous, cfg.completion_column,
                     bool(executor.group_rewards))
        t0 = time.perf_counter()
        output.parent.mkdir(parents=True, exist_ok=True)
        with open(output, "a", encoding="utf-8") as out:
            _write(executor.map(jobs), out, summary, progress)
        wall = time.perf_counter() - t0
        if previous.rows_left():
            raise InputError(f"{output} has more rows than the {summary.rows} of the input: it is the "
                             "output of another input; use --overwrite or another -o")
        restarts = executor.restarts()

    start, scored = previous.count, summary.rows - previous.count
    result = summary.result()
    result.update(input=str(input), output=str(output), invalid_rows=stream.invalid,
                  invalid_examples=stream.invalid_examples, resumed_from_row=start,
                  scored_this_run=scored, wall_time_s=round(wall, 3),
                  rows_per_s=round(scored / wall, 2) if wall > 0 else None,
                  worker_restarts=restarts, weights={r.key: r.weight for r in cfg.rewards})
    summary_path(output).write_text(json.dumps(result, indent=2) + "\n")
    return result


# ---------------------------------------------------------------------------- chunks of whole groups
class SeenGroups:
    """The groups already met, as 64-bit hashes in a sorted array (8 bytes per group). A hash
    collision (odds about groups² / 2^65) would be reported as a group met twice.

    >>> seen = SeenGroups()
    >>> seen.add("a"), seen.add("b"), seen.add("a")
    (True, True, False)
    """

    def __init__(self, buffer: int = 1 << 14):
        self._sorted = np.empty(0, np.int64)
        self._recent: set[int] = set()
        self._buffer = buffer

    def add(self, key: str) -> bool:
        """Record ``key``; False if it was met before."""
        h = hash(key)
        i = int(np.searchsorted(self._sorted, h))
        if h in self._recent or (i < len(self._sorted) and self._sorted[i] == h):
            return False
        self._recent.add(h)
        if len(self._recent) >= self._buffer:
            recent = np.fromiter(self._recent, np.int64, len(self._recent))
            self._sorted = np.union1d(self._sorted, recent)
            self._recent.clear()
        return True


def chunks(rows: Iterable[tuple[str, dict]], group_col: str | None,
           size: int) -> Iterator[tuple[list[dict], list[str] | None]]:
    """``(rows, group ids)`` chunks of ``size`` rows or a little more: a chunk ends only where a group
    ends, so it holds at most ``size`` + the largest group - 1 rows. A group whose rows are not
    contiguous raises :class:`InputError` naming the file, line and column.

    >>> rows = [("f, line 1", {"p": "a"}), ("f, line 2", {"p": "a"}), ("f, line 3", {"p": "b"})]
    >>> [(len(r), g) for r, g in chunks(rows, "p", 1)]
    [(2, ['a', 'a']), (1, ['b'])]
    >>> list(chunks(rows + [("f, line 4", {"p": "a"})], "p", 1))
    Traceback (most recent call last):
    ...
    grpo_kit.data.InputError: f, line 4: group 'a' (column 'p') came before, then other groups: ...
    """
    chunk: list[dict] = []
    gids: list[str] = []
    seen, last = SeenGroups(), None
    for where, row in rows:
        g = _group_key(row.get(group_col)) if group_col else None
        new_group = g != last or not group_col
        if new_group and group_col and not seen.add(g):
            shown = g if len(g) <= 60 else g[:57] + "..."
            raise InputError(f"{where}: group {shown!r} (column {group_col!r}) came before, then other "
                             f"groups: streaming needs the rows of a group together; sort the input by "
                             f"{group_col!r} (or pick another --group-by)")
        if new_group and len(chunk) >= size:
            yield chunk, gids if group_col else None
            chunk, gids = [], []
        last = g
        chunk.append(row)
        gids.append(g)
    if chunk:
        yield chunk, gids if group_col else None


def _group_key(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


# ---------------------------------------------------------------------------- resume
class PreviousOutput:
    """The complete rows of an existing output, read one at a time (a cut last line, left by a
    killed write, is truncated away first). ``count``: rows read so far."""

    def __init__(self, output: Path):
        self.output, self.count = output, 0
        self._file = open(output, "rb") if output.exists() and _drop_cut_line(output) else None

    def next(self) -> dict | None:
        """The next row, or None once there are no more (it is never read again)."""
        while self._file is not None:
            line = self._file.readline()
            if not line:
                self._file.close()
                self._file = None
            elif line.strip():
                self.count += 1
                try:
                    return json.loads(line)
                except ValueError as e:
                    raise InputError(f"{self.output}:{self.count}: not a JSON row of an output ({e}); "
                                     "use --overwrite or another -o") from None
        return None

    def rows_left(self) -> bool:
        return self.next() is not None


def _drop_cut_line(path: Path) -> int:
    """Truncate ``path`` after its last newline; return the size kept. Reads only the tail."""
    with open(path, "r+b") as f:
        end = pos = f.seek(0, os.SEEK_END)
        keep = 0
        while pos > 0:
            step = min(1 << 16, pos)
            f.seek(pos - step)
            i = f.read(step).rfind(b"\n")
            if i >= 0:
                keep = pos - step + i + 1
                break
            pos -= step
        if keep < end:
            f.truncate(keep)
    return keep


@dataclass
class _Job:
    """A chunk: its rows, group ids, the output fields of its first rows that a previous run wrote
    (``done``), and what goes to the scorer: rows ``start:`` (``start`` < ``len(done)`` when a group
    reward must see the done rows of a group again), or None when every row is done."""

    rows: list[dict]
    gids: list[str] | None
    done: list[dict]
    start: int
    payload: Payload | None


def _jobs(chunks: Iterable[tuple[list[dict], list[str] | None]], previous: PreviousOutput, col: str,
          whole_groups: bool) -> Iterator[_Job]:
    columns: set[str] = set()  # every column met so far goes to the rewards (None where a row lacks it)
    for rows, gids in chunks:
        done: list[dict] = []
        while len(done) < len(rows) and (old := previous.next()) is not None:
            if old.get(col) != rows[len(done)].get(col):
                raise InputError(f"{previous.output}:{previous.count}: this row's {col!r} differs from "
                                 f"input row {previous.count}: the file is the output of another input; "
                                 "use --overwrite or another -o")
            if not isinstance(old.get("rewards"), dict) or "reward" not in old:
                raise InputError(f"{previous.output}:{previous.count}: a row without `rewards` and `reward`: "
                                 "not an output of grpo-kit score; use --overwrite or another -o")
            done.append({k: old[k] for k in OUTPUT_FIELDS if k in old})
        start = len(done)
        while whole_groups and gids and 0 < start < len(rows) and gids[start - 1] == gids[len(done)]:
            start -= 1
        for r in rows:
            columns.update(r)
        payload = None
        if start < len(rows):
            names = sorted(columns - {col, *OUTPUT_FIELDS})
            part = rows[start:]
            payload = ([r[col] for r in part], {k: [r.get(k) for r in part] for k in names},
                       gids[start:] if gids else None)
        yield _Job(rows, gids, done, start, payload)


def _write(results: Iterable[tuple[_Job, list[dict]]], out, summary: RunningSummary, progress: bool) -> None:
    """Append each chunk's new rows to ``out`` (fsynced) and add every row to the summary."""
    from tqdm import tqdm

    with tqdm(unit="row", file=sys.stderr, disable=not progress, dynamic_ncols=True, desc="score") as bar:
        for job, fields in results:
            n_done = len(job.done)
            new = fields[n_done - job.start:]
            if new:
                out.write("".join(json.dumps({**row, **f}, ensure_ascii=False, default=str) + "\n"
                                  for row, f in zip(job.rows[n_done:], new)))
                out.flush()
                os.fsync(out.fileno())
            summary.add(job.done + new, job.gids)
            bar.update(len(job.rows))


def format_summary(s: dict) -> str:
    lines = [f"scored {s['rows']} rows ({s['scored_this_run']} this run, {s['wall_time_s']} s, "
             f"{s['rows_per_s']} rows/s); invalid rows skipped: {s['invalid_rows']}"]
    head = f"{'reward':<24}{'weight':>7}{'mean':>10}{'count':>7}{'none':>6}{'errors':>7}{'timeouts':>9}"
    lines.append(head)
    for key, st in s["rewards"].items():
        mean = "-" if st["mean"] is None else f"{st['mean']:.4f}"
        w = s["weights"].get(key, "")
        lines.append(f"{key:<24}{w!s:>7}{mean:>10}{st['count']:>7}{st['none']:>6}"
                     f"{st.get('errors', ''):>7}{st.get('timeouts', ''):>9}")
        extra = {k: v for k, v in st.items() if k.startswith(("pass@", "mean@"))}
        if extra:
            lines.append("    " + "  ".join(f"{k}={v}" for k, v in extra.items())
                         + f"  ({st['groups']} groups)")
    return "\n".join(lines)
