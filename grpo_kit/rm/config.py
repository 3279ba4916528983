"""The config of ``grpo-kit rm train``: one pydantic tree, validated at load, saved into the run folder.

``model``, ``optim`` and ``distributed`` are the training config's own blocks
(:class:`~grpo_kit.train.config.ModelConfig`, LoRA included, :class:`~grpo_kit.train.config.OptimConfig`
and :class:`~grpo_kit.train.config.DistributedConfig`); ``data``, ``loss`` and ``train`` are the
reward model's.

    >>> from grpo_kit.config import load_config_text
    >>> cfg = load_config_text("model: {path: m}\\ndata: {train: t.jsonl}\\nloss: {center_coef: 0.01}", RMConfig)
    >>> cfg.loss.center_coef, cfg.train.batch_size, cfg.run.name
    (0.01, 32, 'rm')
    >>> load_config_text("model: {path: m}\\ndata: {train: t.jsonl}\\nloss: {center: 1}", RMConfig)
    Traceback (most recent call last):
    ...
    grpo_kit.errors.ConfigError: <string>: loss.center: unknown key; did you mean 'center_coef'? valid keys: center_coef
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from grpo_kit.config import Strict, apply_override, build_config
from grpo_kit.train.config import DistributedConfig, ModelConfig, OptimConfig


class RMDataConfig(Strict):
    """Preference pairs: columns ``prompt`` (a string or chat messages; optional), ``chosen`` and
    ``rejected`` (strings or chat messages), optional ``margin`` (a number; absent = 0) and
    ``category`` (a string, for per-category accuracy)."""

    train: str = Field(description="JSONL/Parquet file, `datasets` folder or hub id of the training pairs")
    test: str | None = Field(None, description="the held-out pairs of the evaluations and of the "
                             "reward statistics saved with the model (default: none; the statistics "
                             "are then measured on the training pairs)")
    train_split: str = Field("train", description="split of a `datasets` folder or hub id (data.train)")
    test_split: str = Field("test", description="split of a `datasets` folder or hub id (data.test)")
    max_length: int = Field(1024, ge=1, description="tokens per prompt + completion; longer ones are "
                            "truncated on the tokenizer's truncation side, as `reward_model` does")


class RMLossConfig(Strict):
    """``-log sigmoid(r_c - r_r - margin) + center_coef * (r_c + r_r)^2`` per pair (see
    :func:`grpo_kit.algorithms.preference.bradley_terry_loss`); the margin is the pair's
    ``margin`` column."""

    center_coef: float = Field(0.0, ge=0, description="the centering regulariser of Eisenstein et al. "
                               "2023 (TRL's center_rewards_coefficient, e.g. 0.01); 0 = off")


class RMLoopConfig(Strict):
    epochs: float = Field(1.0, gt=0, description="passes over the training pairs (ignored when "
                          "`steps` is set)")
    steps: int | None = Field(None, ge=1, description="optimizer steps (default: from epochs)")
    batch_size: int = Field(32, ge=1, description="pairs per optimizer step (under torchrun: of all "
                            "ranks together, a multiple of the number of ranks; each takes an equal share)")
    micro_batch_size: int | None = Field(None, ge=1, description="pairs per forward/backward on each rank "
                                         "(gradient accumulation); default = the rank's whole share")
    eval_every: int = Field(0, ge=0, description="evaluate on data.test every N steps (0 = at the end only)")
    eval_batch_size: int = Field(64, ge=1, description="pairs per forward pass in evaluation")
    save_every: int = Field(0, ge=0, description="checkpoint every N steps (0 = only at the end)")
    keep_last: int = Field(2, ge=1, description="checkpoints kept")
    seed: int = Field(0, description="seeds the data order and the new head's initialisation")
    torch_threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's)")


class RMRunConfig(Strict):
    name: str = Field("rm", description="run name (the default output folder is runs/NAME-TIME)")
    output_dir: str | None = Field(None, description="run folder (default runs/NAME-TIME)")
    report_to: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list)


class RMConfig(Strict):
    """`grpo-kit rm train CONFIG.yaml`."""

    model: ModelConfig = Field(description="model.path: a causal LM (a scalar head is added) or a "
                               "sequence-classification checkpoint with one label")
    data: RMDataConfig
    loss: RMLossConfig = Field(default_factory=RMLossConfig)
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-5))
    train: RMLoopConfig = Field(default_factory=RMLoopConfig)
    run: RMRunConfig = Field(default_factory=RMRunConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig,
                                           description="under torchrun: FSDP2 and collective settings")


def resolve_rm_config(config: str | None, sets: list[str]) -> tuple[RMConfig, bool]:
    """The config of ``grpo-kit rm train [CONFIG] [--set KEY=VALUE ...]`` and whether it is the demo
    (no CONFIG). ``--set seed=N`` is ``train.seed``."""
    from grpo_kit.config import read_yaml
    from grpo_kit.rm.demo import demo_config

    data: dict[str, Any] = demo_config() if config is None else read_yaml(config)
    for s in sets:
        apply_override(data, "train." + s if s.partition("=")[0] == "seed" else s)
    return build_config(data, RMConfig, "built-in demo" if config is None else str(config)), config is None
