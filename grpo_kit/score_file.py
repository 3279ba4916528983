"""Scoring a file of completions offline, resumably: the engine of ``grpo-kit score``.

Output rows are the input rows in order plus ``rewards``, ``reward`` and ``reward_errors``. They are
written whole, one JSON line each, chunk by chunk, and fsynced; a killed run leaves at most a cut
last line, which the next run of the same command drops before it continues after the last
complete row. The rows of a chunk go through the scorer as one
:class:`~grpo_kit.records.RolloutBatch` (the same record and scorer as training).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from grpo_kit.config import RewardConfig, ScoringConfig, Strict, unique_reward_keys
from grpo_kit.data import InputError, read_rows
from grpo_kit.errors import ConfigError
from grpo_kit.metrics import summarize_rows
from grpo_kit.scoring import Scorer

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

    @field_validator("rewards")
    @classmethod
    def _unique_keys(cls, v: list[RewardConfig]) -> list[RewardConfig]:
        return unique_reward_keys(v)


def summary_path(output: Path) -> Path:
    return output.with_name(output.stem + ".summary.json")


def score_file(cfg: ScoreConfig, input: str, output: Path, *, overwrite: bool = False,
               progress: bool = True) -> dict[str, Any]:
    """Score ``input`` into ``output`` (resuming it unless ``overwrite``); write and return the summary."""
    data = read_rows(input, completion_column=cfg.completion_column, split=cfg.split,
                     skip_invalid=cfg.skip_invalid)
    rows, col = data.rows, cfg.completion_column
    group_col = cfg.group_by or ("prompt" if any("prompt" in r for r in rows[:1]) else None)
    if cfg.group_by and rows and cfg.group_by not in rows[0]:
        raise InputError(f"{input}: --group-by column {cfg.group_by!r} is not in the input; "
                         f"columns: {', '.join(rows[0])}")
    gids = [_group_key(r.get(group_col)) for r in rows] if group_col else None

    with Scorer(cfg.rewards, cfg.scoring) as scorer:
        if scorer.group_rewards and gids is None:
            raise ConfigError(f"rewards {scorer.group_rewards} score a completion against the others "
                              "of its prompt: the input needs a `prompt` column, or give --group-by COLUMN")
        if overwrite and output.exists():
            output.unlink()
        done_rows = _existing_rows(output)
        _check_resume(done_rows, rows, col, output)
        t0, start = time.perf_counter(), len(done_rows)
        output.parent.mkdir(parents=True, exist_ok=True)
        with open(output, "a", encoding="utf-8") as out:
            _score_into(scorer, rows, gids, col, start, out, progress=progress)
        wall = time.perf_counter() - t0

    all_rows = _existing_rows(output)
    summary = summarize_rows(all_rows, [r.key for r in cfg.rewards], gids, cfg.pass_threshold)
    summary.update(input=str(input), output=str(output), invalid_rows=len(data.invalid),
                   invalid_examples=data.invalid[:20], resumed_from_row=start,
                   scored_this_run=len(rows) - start, wall_time_s=round(wall, 3),
                   rows_per_s=round((len(rows) - start) / wall, 2) if wall > 0 else None,
                   worker_restarts=scorer.pool.restarts if scorer.pool else 0,
                   weights={r.key: r.weight for r in cfg.rewards})
    summary_path(output).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _existing_rows(output: Path) -> list[dict]:
    """Complete rows already in ``output``; a cut last line (a killed write) is truncated away."""
    if not output.exists():
        return []
    raw = output.read_bytes()
    end = raw.rfind(b"\n") + 1
    if end < len(raw):
        with open(output, "r+b") as f:
            f.truncate(end)
    return [json.loads(line) for line in raw[:end].splitlines() if line.strip()]


def _group_key(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _check_resume(done: list[dict], rows: list[dict], col: str, output: Path) -> None:
    if len(done) > len(rows):
        raise InputError(f"{output} already has {len(done)} rows but the input has {len(rows)}: it is "
                         "the output of another input; use --overwrite or another -o")
    for i, d in enumerate(done):
        if d.get(col) != rows[i].get(col):
            raise InputError(f"{output}:{i + 1}: this row's {col!r} differs from input row {i + 1}: the "
                             "file is the output of another input; use --overwrite or another -o")


def _score_into(scorer: Scorer, rows, gids, col, start: int, out, progress: bool) -> None:
    from tqdm import tqdm

    n = len(rows)
    columns = sorted({k for r in rows for k in r} - {col, "rewards", "reward", "reward_errors"})
    members: dict[str, list[int]] = {}
    for i, g in enumerate(gids or []):
        members.setdefault(g, []).append(i)
    workers = scorer.pool and len(scorer.pool._workers) or 1
    chunk = max(64, 32 * workers)
    cache: dict[int, dict] = {}
    bar = tqdm(total=n, initial=start, unit="row", file=sys.stderr, disable=not progress,
               dynamic_ncols=True, desc="score")
    i = start
    while i < n:
        want = [j for j in range(i, min(i + chunk, n)) if j not in cache]
        if scorer.group_rewards and want:  # a group reward sees its whole group
            want = sorted({m for j in want for m in members[gids[j]]})
        if want:
            res = scorer.score([rows[j][col] for j in want],
                               {k: [rows[j].get(k) for j in want] for k in columns},
                               [gids[j] for j in want] if gids else None)
            for pos, j in enumerate(want):
                if j >= i:
                    cache[j] = res.score_fields(pos)
        stop = min(i + chunk, n)
        lines = [json.dumps({**rows[j], **cache.pop(j)}, ensure_ascii=False, default=str) + "\n"
                 for j in range(i, stop)]
        out.write("".join(lines))
        out.flush()
        os.fsync(out.fileno())
        bar.update(stop - i)
        i = stop
    bar.close()


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
