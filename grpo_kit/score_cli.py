"""`grpo-kit score`: the command line of :mod:`grpo_kit.score_file` (arguments in, summary out)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from grpo_kit.config import RewardConfig, build_config, load_config
from grpo_kit.errors import ConfigError
from grpo_kit.registry import known_rewards
from grpo_kit.score_file import ScoreConfig, format_summary, score_file


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
    p.add_argument("--chunk-rows", type=int, help="rows per scorer call and per write, cut between "
                   "groups (default: max(64, 256 x workers))")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="score on Ray: no ADDRESS starts a local cluster; `auto` or HOST:PORT joins a "
                   "running one (needs pip install grpo-kit[ray]); put it after INPUT, or write --ray=auto")
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
                      ("split", "split"), ("chunk_rows", "chunk_rows")):
        if getattr(args, flag) is not None:
            data[key] = getattr(args, flag)
    if args.skip_invalid:
        data["skip_invalid"] = True
    return build_config(data, ScoreConfig, "command line")


def run_score(args: argparse.Namespace) -> int:
    if args.list_rewards:
        print("\n".join(known_rewards()))
        return 0
    if not args.input or not args.output:
        raise ConfigError("usage: grpo-kit score INPUT -o OUTPUT --reward NAME[=WEIGHT] ...")
    summary = score_file(resolve_config(args), args.input, Path(args.output), overwrite=args.overwrite,
                         progress=not args.no_progress, ray=args.ray)
    print(format_summary(summary))
    return 0
