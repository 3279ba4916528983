"""The `grpo-kit` command line. Each verb lives in its own module; this file only dispatches.

Errors a user can fix (a bad config, a malformed input row, a reward that failed under
``scoring.on_error: fail``) print one clear message and exit 2, never a traceback. Anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from grpo_kit.data import InputError
from grpo_kit.errors import ConfigError, RolloutProcessError
from grpo_kit.scoring import RewardFailure


def build_parser() -> argparse.ArgumentParser:
    from grpo_kit import score_cli, train_cli
    from grpo_kit import serve_cli

    from grpo_kit import rm_cli

    parser = argparse.ArgumentParser(prog="grpo-kit", description="Rewards and GRPO/PPO training "
                                     "for R1-Zero style RL of language models.")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    score_cli.add_parser(sub)
    train_cli.add_parsers(sub)
    rm_cli.add_parser(sub)
    serve_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return _record(_run)(args)


def _run(args: argparse.Namespace) -> int:
    where = f" [rank {os.environ['RANK']}]" if "RANK" in os.environ and "WORLD_SIZE" in os.environ else ""
    try:
        return args.func(args)
    except (ConfigError, InputError, RewardFailure) as e:
        print(f"grpo-kit {args.verb}{where}: error: {e}", file=sys.stderr)
        return 2
    except RolloutProcessError as e:
        print(f"grpo-kit {args.verb}{where}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"grpo-kit {args.verb}{where}: interrupted; completed rows are saved, run the same command "
              "to continue", file=sys.stderr)
        return 130


def _record(fn):
    """Under torchrun, an uncaught exception (a bug) is also written where torchrun reads it, so its
    summary names the failing rank with the traceback's message (``torch.distributed.elastic``)."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return fn
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(fn)


if __name__ == "__main__":
    sys.exit(main())
