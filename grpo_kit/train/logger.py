"""Run logging: ``metrics.jsonl`` (one object per step), sample completions, TensorBoard / W&B."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from grpo_kit.records import RolloutBatch


class RunLogger:
    def __init__(self, run_dir: Path, report_to: list[str], config: dict[str, Any], resume_step: int):
        self.run_dir = run_dir
        self.path = run_dir / "metrics.jsonl"
        truncate_metrics(self.path, resume_step)
        self._f = open(self.path, "a", encoding="utf-8")
        self._tb = self._wandb = None
        if "tensorboard" in report_to:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"))
        if "wandb" in report_to:
            import wandb

            self._wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "grpo-kit"),
                                     name=run_dir.name, config=config, dir=str(run_dir),
                                     resume="allow", id=run_dir.name)

    def log(self, metrics: dict[str, Any]) -> None:
        clean = {k: _jsonable(v) for k, v in metrics.items()}
        self._f.write(json.dumps(clean) + "\n")
        self._f.flush()
        step = metrics["step"]
        if self._tb is not None:
            for k, v in clean.items():
                if isinstance(v, (int, float)) and k != "step":
                    self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in clean.items() if k != "step"}, step=step)

    def samples(self, step: int, rb: RolloutBatch, k: int = 4) -> None:
        """Two completions of each of the first ``k`` groups, with their scores, to samples/."""
        out = self.run_dir / "samples"
        out.mkdir(exist_ok=True)
        with open(out / f"step-{step:06d}.jsonl", "w", encoding="utf-8") as f:
            for b, members in enumerate(rb.groups()[:k]):
                for i in members[:2]:
                    f.write(json.dumps({"step": step, "prompt": rb.prompts[b], "completion": rb.completions[i],
                                        **rb.score_fields(i), "finish_reason": rb.finish_reasons[i],
                                        **({"tool_calls": rb.column("tool_calls")[i]} if rb.turns else {}),
                                        **{c: v[b] for c, v in rb.group_columns.items()}},
                                       ensure_ascii=False, default=str) + "\n")

    def close(self) -> None:
        self._f.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep the lines of steps <= ``last_step`` (a resumed run re-logs the steps after it)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                keep.append(line + "\n")
        except (json.JSONDecodeError, KeyError):
            break  # a line cut by a kill, and everything after it
    path.write_text("".join(keep))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
