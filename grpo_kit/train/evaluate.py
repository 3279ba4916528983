"""`grpo-kit eval`: pass@k and mean@k of a model on a task's test split, with the task's rewards
scored by the same engine as training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grpo_kit.errors import ConfigError
from grpo_kit.metrics import group_stats
from grpo_kit.rollout import make_sampler
from grpo_kit.scoring import Scorer
from grpo_kit.train import checkpoint as ckpt
from grpo_kit.train.config import TrainConfig
from grpo_kit.train.models import encode_prompt, load_policy
from tasks import get_task


def evaluate(cfg: TrainConfig, *, run_dir: Path | None = None, checkpoint: str | None = None, k: int = 4,
             split: str | None = None, limit: int | None = None, output: str | None = None,
             batch_prompts: int = 32) -> dict[str, Any]:
    if k < 1:
        raise ConfigError("--k must be at least 1")
    model_path = checkpoint
    if model_path is None and run_dir is not None:
        found = ckpt.list_checkpoints(run_dir)
        if not found:
            raise ConfigError(f"{run_dir}: no checkpoint yet; pass --checkpoint PATH")
        model_path = str(found[-1])
    if model_path is not None and (ckpt.is_sharded_checkpoint(Path(model_path))  # torchrun's layout
                                   or ckpt.is_lora_checkpoint(Path(model_path))):  # merged into its base
        import tempfile

        with tempfile.TemporaryDirectory(prefix="grpo-kit-eval-") as tmp:
            exported = str(ckpt.export_checkpoint(Path(model_path), Path(tmp)))
            summary = evaluate(cfg, checkpoint=exported, k=k, split=split, limit=limit, output=output,
                               batch_prompts=batch_prompts)
        return {**summary, "model": model_path}
    # a LoRA run's checkpoint arrives merged (above); without one its adapter is zero: the base
    model_cfg = cfg.model.model_copy(update={"lora": None, **({"path": model_path} if model_path else {})})
    task = get_task(cfg.task)
    split = split or ("test" if "test" in task.splits else "train")
    if split not in task.splits:
        raise ConfigError(f"task {task.name!r} has splits {list(task.splits)}, not {split!r}")
    ds = task.load(split)
    rows = [ds[i] for i in range(min(len(ds), limit or len(ds)))]
    model, tok, _, _ = load_policy(model_cfg)
    sampler = make_sampler(cfg.sampler, model, tok, cfg.sampling.model_copy(update={"n": k}), logprobs=False,
                           model_path=model_cfg.path, engine=cfg.vllm, tools=cfg.tools)
    rewards = cfg.rewards if cfg.rewards is not None else task.default_rewards
    out_rows: list[dict[str, Any]] = []
    columns = sorted({k for r in rows for k in r} - {"prompt"})
    with Scorer(rewards, cfg.scoring) as scorer:
        for s in range(0, len(rows), batch_prompts):
            chunk = rows[s:s + batch_prompts]
            rb = sampler.sample([encode_prompt(tok, r["prompt"], tools=getattr(sampler, "chat_tools", None))
                                 for r in chunk], seed=cfg.train.seed + s)
            rb = rb.with_prompts([r["prompt"] for r in chunk], {k: [r.get(k) for r in chunk] for k in columns})
            scorer.score_batch(rb)
            out_rows += [{"prompt_index": s + rb.group_index[i], "prompt": rb.prompts[rb.group_index[i]],
                          "completion": rb.completions[i], **rb.score_fields(i)} for i in range(rb.size)]
    keys = [r.key for r in rewards]
    gid = [r["prompt_index"] for r in out_rows]
    summary: dict[str, Any] = {"model": model_cfg.path, "task": task.name, "prompts": len(rows), "k": k,
                               "rewards": {}}
    for key in keys:
        vals = [r["rewards"][key] for r in out_rows]
        summary["rewards"][key] = group_stats(vals, gid)
    summary["rewards"]["reward"] = {kk: v for kk, v in group_stats([r["reward"] for r in out_rows], gid).items()
                                    if not kk.startswith("pass@")}
    if output:
        p = Path(output)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in out_rows))
        p.with_name(p.stem + ".summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
