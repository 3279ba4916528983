"""`grpo-kit score`: score a file of completions offline, resumably.

Output rows are the input rows in order plus ``rewards``, ``reward`` and ``reward_errors``. They are
written whole, one JSON line each, chunk by chunk; a killed run leaves at most a cut last line,
which the next run of the same command drops before it continues after the last complete row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from grpo_kit.config import ConfigError, RewardConfig, ScoreConfig, build_config, load_config
from grpo_kit.data import InputError, read_rows
from grpo_kit.metrics import summarize_rows
from grpo_kit.registry import known_rewards
from grpo_kit.scoring import Scorer


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score a file of completions with rewards",
                       description="Score completions offline: INPUT rows in, rows with rewards out.")
    p.add_argument("input", nargs="?", help="JSONL, Parquet, a `datasets` folder, or a hub dataset id")
    p.add_argument("-o", "--output", help="output JSONL (resumed if it exists; see --overwrite)")
    p.add_argument("--reward", action="append", default=[], metavar="NAME[=WEIGHT]",
                   help="a reward by registry name, file.py:function or module:function; repeatable")
    p.add_argument("--workers", type=int, help="worker processes (default 2)")
    p.add_argument("--timeout", type=float, help="hard per-item time limit, seconds (default 5)")
    p.add_argument("--config", help="YAML with rewards (and their args), scoring, group_by, ...")
    p.add_argument("--group-by", help="column grouping completions of one prompt (default: prompt)")
    p.add_argument("--completion-column", help="column holding the completion (default: completion)")
    p.add_argument("--split", help="split of a hub dataset or DatasetDict folder (default: train)")
    p.add_argument("--skip-invalid", action="store_true", help="skip and count malformed rows")
    p.add_argument("--overwrite", action="store_true", help="start afresh instead of resuming")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list-rewards", action="store_true", help="print the built-in reward names")
    p.set_defaults(func=run_score)


def resolve_config(args: argparse.Namespace) -> ScoreConfig:
    data: dict[str, Any] = {}
    if args.config:
        data = load_config(args.config, ScoreConfig).model_dump()
    if args.reward:
        data["rewards"] = [RewardConfig.parse_cli(r).model_dump() for r in args.reward]
    scoring = data.setdefault("scoring", {})
    if args.workers is not None:
        scoring["workers"] = args.workers
    if args.timeout is not None:
        scoring["timeout"] = args.timeout
    for flag, key in (("group_by", "group_by"), ("completion_column", "completion_column"),
                      ("split", "split")):
        if getattr(args, flag) is not None:
            data[key] = getattr(args, flag)
    if args.skip_invalid:
        data["skip_invalid"] = True
    return build_config(data, ScoreConfig, "command line")


def summary_path(output: Path) -> Path:
    return output.with_name(output.stem + ".summary.json")


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


def run_score(args: argparse.Namespace) -> int:
    if args.list_rewards:
        print("\n".join(known_rewards()))
        return 0
    if not args.input or not args.output:
        raise ConfigError("usage: grpo-kit score INPUT -o OUTPUT --reward NAME[=WEIGHT] ...")
    cfg = resolve_config(args)
    output = Path(args.output)
    data = read_rows(args.input, completion_column=cfg.completion_column, split=cfg.split,
                     skip_invalid=cfg.skip_invalid)
    rows, col = data.rows, cfg.completion_column
    group_col = cfg.group_by or ("prompt" if any("prompt" in r for r in rows[:1]) else None)
    if cfg.group_by and rows and cfg.group_by not in rows[0]:
        raise InputError(f"{args.input}: --group-by column {cfg.group_by!r} is not in the input; "
                         f"columns: {', '.join(rows[0])}")
    gids = [_group_key(r.get(group_col)) for r in rows] if group_col else None

    with Scorer(cfg.rewards, cfg.scoring) as scorer:
        if scorer.group_rewards and gids is None:
            raise ConfigError(f"rewards {scorer.group_rewards} score a completion against the others "
                              "of its prompt: the input needs a `prompt` column, or give --group-by COLUMN")
        if args.overwrite and output.exists():
            output.unlink()
        done_rows = _existing_rows(output)
        _check_resume(done_rows, rows, col, output)
        t0, start = time.perf_counter(), len(done_rows)
        output.parent.mkdir(parents=True, exist_ok=True)
        with open(output, "a", encoding="utf-8") as out:
            _score_into(scorer, rows, gids, col, start, out, progress=not args.no_progress)
        wall = time.perf_counter() - t0

    all_rows = _existing_rows(output)
    summary = summarize_rows(all_rows, [r.key for r in cfg.rewards], gids, cfg.pass_threshold)
    summary.update(input=str(args.input), output=str(output), invalid_rows=len(data.invalid),
                   invalid_examples=data.invalid[:20], resumed_from_row=start,
                   scored_this_run=len(rows) - start, wall_time_s=round(wall, 3),
                   rows_per_s=round((len(rows) - start) / wall, 2) if wall > 0 else None,
                   worker_restarts=scorer.pool.restarts if scorer.pool else 0,
                   weights={r.key: r.weight for r in cfg.rewards})
    summary_path(output).write_text(json.dumps(summary, indent=2) + "\n")
    print(format_summary(summary))
    return 0


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
                    cache[j] = res.row(pos)
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
