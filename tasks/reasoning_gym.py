"""reasoning-gym tasks: procedural reasoning problems with verifiers (``pip install reasoning-gym``).

One dataset (``args: {dataset: leg_counting, size: 1000, seed: 0, config: {...}}``) or a weighted
mix (``args: {datasets: [{name: chain_sum, weight: 2}, {name: leg_counting}], size: 1000}``): the
train split holds ``size`` entries, each dataset's share by weight (largest remainder), in a
seeded shuffle; the test split ``test_size`` entries drawn the same way from another seed, without
the questions of the train split. ``config`` holds a dataset's own settings (reasoning-gym's
``*Config`` fields, e.g. ``min_animals``).

Rows: ``question``, ``answer`` (reasoning-gym's gold, a string or None where many answers are
right), ``rg_dataset`` (the name), ``rg_entry`` (the entry as JSON, see
:func:`rewards.reasoning_gym.encode_entry`) and ``rg_config`` (the dataset's settings as JSON).
Default rewards: ``reasoning_gym`` 1.0 per dataset, labelled ``rg_NAME`` and limited to that
dataset's rows (``args: {dataset: NAME}``), so the training metrics hold
``rewards/rg_NAME/mean`` per dataset and the combined reward is each row's own dataset's score.

A dataset whose scorer would evaluate model output and has no parser of ours (see
:mod:`rewards.reasoning_gym`) is refused at load unless ``unsafe_scorer: true``.

>>> from tasks.config import TaskConfig
>>> task = reasoning_gym_task(TaskConfig(name="reasoning_gym", args={"dataset": "leg_counting", "size": 3}))
>>> row = task.load("train")[0]
>>> row["rg_dataset"], sorted(row)[:3], [r.key for r in task.default_rewards]
('leg_counting', ['answer', 'prompt', 'question'], ['rg_leg_counting'])
"""

from __future__ import annotations

import difflib
import json
import random
from functools import lru_cache
from typing import Any

from pydantic import Field, model_validator

from grpo_kit.config import ConfigError, RewardConfig, Strict
from tasks.base import Task, parse_args


class RGDataset(Strict):
    """One dataset of a mix."""

    name: str = Field(description="a reasoning-gym dataset (reasoning_gym.factory.DATASETS)")
    weight: float = Field(1.0, gt=0, allow_inf_nan=False, description="share of the rows, relative to the others")
    config: dict[str, Any] = Field(default_factory=dict, description="the dataset's own settings")


class ReasoningGymArgs(Strict):
    """Settings of the ``reasoning_gym`` task (``args:``): ``dataset`` (+ ``config``) or ``datasets``."""

    dataset: str | None = Field(None, description="one reasoning-gym dataset")
    config: dict[str, Any] = Field(default_factory=dict, description="its settings (with `dataset`)")
    datasets: list[RGDataset] | None = Field(None, min_length=1, description="a weighted mix")
    size: int = Field(1000, ge=1, description="train entries (all datasets together)")
    test_size: int = Field(100, ge=1, description="test entries, none with a train question")
    seed: int = Field(0, ge=0, description="seed of the train split; the test split uses another")
    unsafe_scorer: bool = Field(False, description="allow datasets whose own scorer evaluates the answer "
                                "(UNSAFE: model output runs as code in the reward worker)")

    @model_validator(mode="after")
    def _one_form(self) -> "ReasoningGymArgs":
        if (self.dataset is None) == (self.datasets is None):
            raise ValueError("give either `dataset` (one, with its `config`) or `datasets` (a list of "
                             "{name, weight, config}), not both and not neither")
        if self.datasets is not None and self.config:
            raise ValueError("`config` goes with `dataset`; in `datasets` give each its own `config`")
        return self

    def mix(self) -> list[RGDataset]:
        return self.datasets if self.datasets is not None else [RGDataset(name=self.dataset, config=self.config)]


TEST_SEED_OFFSET = 10_000_019
"""The test split's seed is ``seed + TEST_SEED_OFFSET`` (reasoning-gym seeds item i with seed + i)."""


def shares(weights: list[float], total: int) -> list[int]:
    """``total`` split in proportion to ``weights`` by largest remainder.

    >>> shares([2, 1, 1], 10)
    [5, 3, 2]
    """
    exact = [w * total / sum(weights) for w in weights]
    counts = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (counts[i] - exact[i], i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def check_dataset(d: RGDataset, unsafe_scorer: bool, where: str) -> None:
    """Raise :class:`ConfigError` for an unknown name, bad settings, or a refused scorer."""
    from rewards import reasoning_gym as rg_reward

    try:
        DATASETS = rg_reward.datasets()
    except ImportError as e:
        raise ConfigError(f"{where}: {e}") from None
    if d.name not in DATASETS:
        close = difflib.get_close_matches(d.name, DATASETS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"{where}: unknown reasoning-gym dataset {d.name!r}{hint} ({len(DATASETS)} datasets: "
                          "python -c 'import reasoning_gym; print(sorted(reasoning_gym.factory.DATASETS))')")
    if rg_reward.policy(d.name) == "refused" and not unsafe_scorer:
        raise ConfigError(f"{where}: {rg_reward.refusal(d.name)}. Set `unsafe_scorer: true` in the task's args to "
                          "run its scorer anyway (UNSAFE: model output is evaluated as code in the reward worker)")
    for key in ("size", "seed"):
        if key in d.config:
            raise ConfigError(f"{where}: config.{key} is set by the task (args.size / args.seed), not per dataset")
    try:  # reasoning-gym's own check of the settings, at load (generation comes later)
        settings = DATASETS[d.name][1](**d.config)
        if hasattr(settings, "validate"):
            settings.validate()
    except (TypeError, ValueError, AssertionError) as e:
        raise ConfigError(f"{where}: dataset {d.name!r}: bad config {d.config}: {e}") from None


def generate(args: ReasoningGymArgs, split: str, where: str = "task 'reasoning_gym'") -> list[dict]:
    """The rows of ``split`` (see the module docstring); generated once per process and settings
    (the test split reads the train split's questions; some datasets take ~10 ms an entry)."""
    return [dict(r) for r in _generate(args.model_dump_json(), split, where)]


@lru_cache(maxsize=8)
def _generate(args_json: str, split: str, where: str) -> tuple[dict, ...]:
    import reasoning_gym

    from rewards.reasoning_gym import encode_entry

    args = ReasoningGymArgs.model_validate_json(args_json)
    mix = args.mix()
    size = args.size if split == "train" else args.test_size
    if size < len(mix):
        raise ConfigError(f"{where}: {'size' if split == 'train' else 'test_size'} {size} is smaller than the "
                          f"{len(mix)} datasets of the mix")
    seed = args.seed if split == "train" else args.seed + TEST_SEED_OFFSET
    taken = {r["question"] for r in generate(args, "train", where)} if split == "test" else set()
    rows: list[dict] = []
    for d, count in zip(mix, shares([d.weight for d in mix], size)):
        try:
            ds = reasoning_gym.create_dataset(d.name, size=count * 2 if taken else count, seed=seed, **d.config)
        except (TypeError, ValueError, AssertionError) as e:
            raise ConfigError(f"{where}: dataset {d.name!r}: bad config {d.config}: {e}") from None
        config_json = json.dumps(d.config, sort_keys=True)
        got = 0
        for i in range(len(ds)):
            entry = ds[i]
            if entry["question"] in taken:
                continue
            answer = entry.get("answer")
            rows.append({"question": entry["question"], "answer": None if answer is None else str(answer),
                         "rg_dataset": d.name, "rg_entry": encode_entry(entry), "rg_config": config_json})
            got += 1
            if got == count:
                break
        if got < count:
            raise ConfigError(f"{where}: dataset {d.name!r} gave only {got} {split} entries without a train "
                              f"question, {count} asked; lower test_size or widen its config")
    random.Random(f"reasoning_gym/{split}/{args.seed}").shuffle(rows)
    return tuple(rows)


def reasoning_gym_task(cfg) -> Task:
    """Build the ``reasoning_gym`` task from a :class:`tasks.config.TaskConfig`."""
    from datasets import Dataset

    args = parse_args(ReasoningGymArgs, cfg)
    names = [d.name for d in args.mix()]
    if len(set(names)) != len(names):
        raise ConfigError(f"task {cfg.name!r} args.datasets: a dataset is listed twice ({', '.join(names)})")
    for i, d in enumerate(args.mix()):
        check_dataset(d, args.unsafe_scorer, f"task {cfg.name!r} args." + (f"datasets[{i}]" if args.datasets else "dataset"))
    task = Task("reasoning_gym", lambda split: Dataset.from_list(generate(args, split)),
                prompt_style=cfg.prompt_style or "base", template=cfg.template,
                system_prompt=cfg.system_prompt, limit=cfg.limit)
    extra = {"unsafe_scorer": True} if args.unsafe_scorer else {}
    task.default_rewards = cfg.rewards or [
        RewardConfig(name="reasoning_gym", label=f"rg_{name}", weight=1.0, args={"dataset": name, **extra})
        for name in names]
    return task
