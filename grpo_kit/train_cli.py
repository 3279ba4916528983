"""`grpo-kit train`, `grpo-kit eval` and `grpo-kit plot`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from grpo_kit.errors import ConfigError
from grpo_kit.demo import DEMO_STEPS, demo_config  # noqa: F401  (moved to grpo_kit.demo; kept for one version)
from grpo_kit.train.config import resolve_train_config

def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="GRPO training (no CONFIG: the built-in CPU demo)",
                       description="Train with GRPO. With no CONFIG, runs the built-in CPU demo.")
    p.add_argument("config", nargs="?", help="YAML training config (see recipes/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.steps=10; seed=N changes every seed")
    p.add_argument("--output-dir", help="run folder (default runs/NAME-TIME)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output-dir")
    p.add_argument("--demo", choices=["sums", "tools"], default="sums",
                   help="with no CONFIG: sums (a+b=, the default) or tools (a*b= with a calculator tool)")
    p.set_defaults(func=run_train)

    e = sub.add_parser("eval", help="pass@k and mean@k of a model on a task's test split")
    e.add_argument("target", help="a run folder (its config and last checkpoint) or a training config")
    e.add_argument("--checkpoint", help="model folder to evaluate (default: the run's last checkpoint)")
    e.add_argument("--k", type=int, default=4, help="completions per prompt (default 4)")
    e.add_argument("--split", help="split to evaluate (default: the task's test split)")
    e.add_argument("--limit", type=int, help="evaluate the first N prompts only")
    e.add_argument("-o", "--output", help="write per-completion rows (JSONL) and a .summary.json")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    e.set_defaults(func=run_eval)

    x = sub.add_parser("export", help="write a run's checkpoint as a plain Hugging Face model folder",
                       description="Export the policy of a checkpoint (either layout: a single process's "
                       "or torchrun's sharded one) to a folder that transformers and vLLM load. A LoRA "
                       "run's checkpoint is merged into its base model, or with --adapter written as the "
                       "peft adapter alone.")
    x.add_argument("run_dir", help="a run folder")
    x.add_argument("--checkpoint", help="checkpoint name (step-000010) or path (default: the last one)")
    x.add_argument("-o", "--output", required=True, help="folder to write")
    x.add_argument("--adapter", action="store_true", help="LoRA runs: write the adapter (peft format) "
                   "instead of a merged model")
    x.add_argument("--base", help="LoRA runs: the base model (default: the one the adapter records, "
                   "the run's model.path)")
    x.set_defaults(func=run_export)

    pl = sub.add_parser("plot", help="draw reward and length curves of a run to a PNG")
    pl.add_argument("run_dir")
    pl.add_argument("-o", "--output", help="PNG path (default RUN_DIR/curves.png)")
    pl.set_defaults(func=run_plot)


def quiet_hf() -> None:
    """No per-call progress bars from datasets/transformers: our own bar is the one to watch."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def run_train(args: argparse.Namespace) -> int:
    from grpo_kit import dist
    from grpo_kit.train.trainer import Trainer

    quiet_hf()
    if args.config is not None and args.demo != "sums":
        raise ConfigError("--demo chooses the built-in demo, which runs without a CONFIG: drop one of them")
    cfg, is_demo = resolve_train_config(args.config, args.set, args.demo)
    if args.resume and not args.output_dir:
        raise ConfigError("--resume needs --output-dir: the run folder to continue")
    if dist.launched() and not (args.output_dir or cfg.run.output_dir):
        raise ConfigError("under torchrun give --output-dir (or run.output_dir): every rank must write "
                          "to the same run folder, on a filesystem they share")
    run_dir = Path(args.output_dir or cfg.run.output_dir or
                   f"runs/{cfg.run.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    main = int(os.environ.get("RANK", "0")) == 0
    if is_demo:
        cfg = _prepare_demo(cfg, run_dir, main, args.demo)
    if main:
        print(f"grpo-kit train: run folder {run_dir}", file=sys.stderr)
    try:
        trainer = Trainer(cfg, run_dir, resume=args.resume)
        try:
            trainer.train()
        except KeyboardInterrupt:
            return 130
    finally:
        dist.close_distributed()
    if main and (is_demo or (run_dir / "metrics.jsonl").exists()):
        png = plot_run(run_dir)
        print(f"grpo-kit train: done; metrics {run_dir / 'metrics.jsonl'}, curves {png}", file=sys.stderr)
    return 0


def _prepare_demo(cfg, run_dir: Path, main: bool = True, demo: str = "sums"):
    """The demo's tiny model, built in the run folder (under torchrun by rank 0; the others wait
    for its file to appear, at most a minute; the tools demo's takes longer to warm-start)."""
    from grpo_kit.demo import build_tiny_model, build_tools_model

    build = build_tools_model if demo == "tools" else build_tiny_model

    model_dir = run_dir / "base-model"
    if main and not (model_dir / "config.json").exists():
        print("grpo-kit train: building the tiny demo model (a few seconds)", file=sys.stderr)
        build(model_dir / "tmp", seed=cfg.train.seed)
        for f in (model_dir / "tmp").iterdir():  # config.json last: its presence means complete
            if f.name != "config.json":
                f.replace(model_dir / f.name)
        (model_dir / "tmp" / "config.json").replace(model_dir / "config.json")
        (model_dir / "tmp").rmdir()
    deadline = time.monotonic() + (60 if demo == "sums" else 300)
    while not (model_dir / "config.json").exists():
        if time.monotonic() > deadline:
            raise ConfigError(f"{model_dir}: rank 0 did not build the demo model in time")
        time.sleep(0.2)
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"path": str(model_dir)})})


def run_export(args: argparse.Namespace) -> int:
    from grpo_kit.train import checkpoint as ckpt

    run_dir = Path(args.run_dir)
    if args.checkpoint:
        path = Path(args.checkpoint)
        path = path if path.is_dir() else run_dir / "checkpoints" / args.checkpoint
        if not path.is_dir():
            raise ConfigError(f"--checkpoint {args.checkpoint}: no such checkpoint in {run_dir / 'checkpoints'}")
    else:
        found = ckpt.list_checkpoints(run_dir)
        if not found:
            raise ConfigError(f"{run_dir}: no checkpoint (not a run folder, or no step saved yet)")
        path = found[-1]
    if (args.adapter or args.base) and not ckpt.is_lora_checkpoint(path):
        raise ConfigError(f"{path} is not a LoRA checkpoint: --adapter and --base apply to LoRA runs only")
    out = ckpt.export_checkpoint(path, Path(args.output), adapter=args.adapter, base=args.base)
    print(f"grpo-kit export: {path} -> {out}", file=sys.stderr)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from grpo_kit.train.evaluate import evaluate

    quiet_hf()
    target = Path(args.target)
    if target.is_dir():
        cfg, _ = resolve_train_config(str(target / "config.yaml"), args.set)
    else:
        cfg, _ = resolve_train_config(args.target, args.set)
    summary = evaluate(cfg, run_dir=target if target.is_dir() else None, checkpoint=args.checkpoint,
                       k=args.k, split=args.split, limit=args.limit, output=args.output)
    print(json.dumps(summary, indent=2))
    return 0


def run_plot(args: argparse.Namespace) -> int:
    print(plot_run(Path(args.run_dir), Path(args.output) if args.output else None))
    return 0


def plot_run(run_dir: Path, out: Path | None = None) -> Path:
    """Reward (per step and a moving average) and completion length curves of a run, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from grpo_kit.train.logger import read_metrics

    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise ConfigError(f"{run_dir}: no metrics.jsonl (not a run folder?)")
    rows = read_metrics(path)
    if not rows:
        raise ConfigError(f"{path}: no steps logged yet")
    steps = [r["step"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    rew = [r.get("reward/mean") for r in rows]
    a.plot(steps, rew, lw=0.6, alpha=0.5, label="reward/mean")
    w = max(1, len(rows) // 30)
    if w > 1:
        avg = [sum(x for x in rew[max(0, i - w + 1):i + 1] if x is not None) / min(w, i + 1)
               for i in range(len(rew))]
        a.plot(steps, avg, lw=1.8, label=f"moving average ({w} steps)")
    a.set(xlabel="step", ylabel="reward", title="reward")
    a.legend()
    b.plot(steps, [r.get("completion/length_mean") for r in rows], label="mean")
    b.plot(steps, [r.get("completion/length_max") for r in rows], label="max", alpha=0.6)
    b.set(xlabel="step", ylabel="tokens", title="completion length")
    b.legend()
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    out = out or run_dir / "curves.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
