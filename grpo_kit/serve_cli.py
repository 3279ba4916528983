"""`grpo-kit serve-reward`: the command line of :mod:`grpo_kit.serve_reward` (arguments in, a server up)."""

from __future__ import annotations

import argparse
from typing import Any

from grpo_kit.config import RewardConfig, build_config, load_config
from grpo_kit.serve_reward import ServeConfig, serve


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve-reward", help="serve rewards over HTTP (for http_reward on other machines)",
                       description="Serve rewards over HTTP: POST /score {completions, COLUMN...} answers "
                       "each reward's scores, the errors and the combined reward; GET /health.")
    p.add_argument("--reward", action="append", default=[], metavar="NAME[=WEIGHT]",
                   help="a reward by registry name, file.py:function or module:function; repeatable")
    p.add_argument("--config", help="YAML with rewards (and their args), scoring and server settings")
    p.add_argument("--host", help="address to bind (default 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, help="port (default 8000; 0 picks a free one, printed at start)")
    p.add_argument("--workers", type=int, help="reward worker processes (default 2)")
    p.add_argument("--timeout", type=float, help="hard per-item time limit, seconds (default 5)")
    p.add_argument("--max-queue", type=int, help="requests that may wait while one is scored (default 8); "
                   "more are refused with 503 and Retry-After")
    p.add_argument("--max-batch", type=int, help="most completions in one request (default 4096)")
    p.add_argument("--token-env", metavar="VAR", help="require `Authorization: Bearer $VAR` on /score")
    p.set_defaults(func=run_serve)


def resolve_config(args: argparse.Namespace) -> ServeConfig:
    data: dict[str, Any] = {}
    if args.config:
        data = load_config(args.config, ServeConfig).model_dump()
    if args.reward:
        data["rewards"] = [RewardConfig.parse_cli(r).model_dump() for r in args.reward]
    scoring, server = data.setdefault("scoring", {}), data.setdefault("server", {})
    for flag, section, key in (("workers", scoring, "workers"), ("timeout", scoring, "timeout"),
                               ("host", server, "host"), ("port", server, "port"),
                               ("max_queue", server, "max_queue"), ("max_batch", server, "max_batch"),
                               ("token_env", server, "token_env")):
        if getattr(args, flag) is not None:
            section[key] = getattr(args, flag)
    return build_config(data, ServeConfig, "command line")


def run_serve(args: argparse.Namespace) -> int:
    serve(resolve_config(args))
    return 0
