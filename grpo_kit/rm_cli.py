"""`grpo-kit rm train` and `grpo-kit rm eval`: train and evaluate reward models."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from grpo_kit.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    rm = sub.add_parser("rm", help="train (rm train) and evaluate (rm eval) reward models",
                        description="Reward models: train a Bradley-Terry RM on preference pairs, "
                        "evaluate an RM or a rule reward on them.")
    verbs = rm.add_subparsers(dest="rm_verb", metavar="ACTION")
    t = verbs.add_parser("train", help="train a reward model (no CONFIG: the built-in CPU demo)",
                         description="Train a Bradley-Terry reward model on pairs (prompt, chosen, "
                         "rejected[, margin, category]). With no CONFIG, runs the built-in demo.")
    t.add_argument("config", nargs="?", help="YAML config (model, data, loss, optim, train, run)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.steps=100; seed=N is train.seed")
    t.add_argument("--output-dir", help="run folder (default runs/NAME-TIME)")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output-dir")
    t.set_defaults(func=run_rm_train, verb="rm train")

    e = verbs.add_parser("eval", help="pairwise accuracy, margins and calibration of a reward on pairs",
                         description="Score the chosen and rejected completions of each pair with a "
                         "reward model (any AutoModelForSequenceClassification) and/or rewards by name.")
    e.add_argument("model", nargs="?", help="a reward model folder or hub id (scored as reward_model)")
    e.add_argument("--data", required=True, help="pairs: JSONL/Parquet/datasets folder/hub id")
    e.add_argument("--split", default="test", help="split of a datasets folder or hub id (default test)")
    e.add_argument("--reward", action="append", default=[], metavar="NAME",
                   help="also evaluate this reward (a built-in name, file.py:fn or module:fn) on the same "
                   "pairs; it gets the data's other columns (e.g. answer); repeatable")
    e.add_argument("--batch-size", type=int, default=16, help="the model's batch size (default 16)")
    e.add_argument("--workers", type=int, default=1, help="reward worker processes (default 1)")
    e.add_argument("--timeout", type=float, default=5.0, help="per-item reward timeout in s (default 5)")
    e.add_argument("-o", "--output", help="write the JSON summary here")
    e.set_defaults(func=run_rm_eval, verb="rm eval")
    rm.set_defaults(func=lambda args: (rm.print_help(), 2)[1])


def run_rm_train(args: argparse.Namespace) -> int:
    from grpo_kit.rm.config import resolve_rm_config
    from grpo_kit.rm.train import RMTrainer
    from grpo_kit.train_cli import quiet_hf

    from grpo_kit import dist

    quiet_hf()
    cfg, is_demo = resolve_rm_config(args.config, args.set)
    if args.resume and not args.output_dir:
        raise ConfigError("--resume needs --output-dir: the run folder to continue")
    if dist.launched() and not (args.output_dir or cfg.run.output_dir):
        raise ConfigError("under torchrun give --output-dir (or run.output_dir): every rank must write "
                          "to the same run folder, on a filesystem they share")
    run_dir = Path(args.output_dir or cfg.run.output_dir or
                   f"runs/{cfg.run.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        world = dist.init_distributed(cfg.distributed.timeout_s)  # a single process without torchrun

        def say(msg: str) -> None:  # rank 0 speaks for the job
            if world.is_main:
                print(f"grpo-kit rm train: {msg}", file=sys.stderr)

        say(f"run folder {run_dir}" + (f", {world.size} ranks" if world.distributed else ""))
        if is_demo:
            from grpo_kit.rm.demo import prepare_demo

            say("demo: a tiny model (124k parameters, built locally) learns to prefer the right sum of a+b= "
                "over a wrong one from 1,440 generated pairs; 360 held-out pairs test it")
            cfg = world.broadcast_object(prepare_demo(cfg, run_dir) if world.is_main else None)  # rank 0 builds it
        out = RMTrainer(cfg, run_dir, resume=args.resume).train()
    finally:
        dist.close_distributed()
    if not world.is_main:
        return 0
    stats = json.loads((out / "reward_stats.json").read_text())
    say(f"done; reward model {out} (an AutoModelForSequenceClassification; reward mean "
        f"{stats['reward_mean']:.3f}, std {stats['reward_std']:.3f} and pairwise accuracy {stats['accuracy']:.3f} "
        f"on {stats['measured_on']}, in {out / 'reward_stats.json'}); metrics {run_dir / 'metrics.jsonl'}")
    say(f"use it: grpo-kit score FILE --config C.yaml with rewards: [{{name: reward_model, args: {{model: {out}}}}}]")
    return 0


def run_rm_eval(args: argparse.Namespace) -> int:
    from grpo_kit.rm.evaluate import evaluate_rewards, format_table
    from grpo_kit.train_cli import quiet_hf

    quiet_hf()
    if not args.model and not args.reward:
        raise ConfigError("nothing to evaluate: give a MODEL and/or --reward NAME")
    summary = evaluate_rewards(args.data, model=args.model, rewards=args.reward, split=args.split,
                               batch_size=args.batch_size, workers=args.workers,
                               timeout=args.timeout)
    print(format_table(summary))
    if args.output:
        Path(args.output).write_text(json.dumps(summary, indent=2) + "\n")
        print(f"grpo-kit rm eval: summary {args.output}", file=sys.stderr)
    return 0
