"""``--set seed=N`` sets every seed a config has, and each seed changes what it seeds.

The three seeds and what each one seeds, checked through the real code paths (the config
resolution of ``grpo-kit train``, the task's ``load``, and a Trainer's ``collect``: the prompt
cursor and the ``hf`` sampler on the tiny demo model):

- ``train.seed``: the order in which training prompts are drawn;
- ``sampling.seed`` (when set; else derived from ``train.seed``): the sampled completions;
- ``task.args.seed`` (for a task that takes one, such as countdown's generated problems): the rows.

Each check runs the same config twice (equal: the difference is the seed's, not noise) and with
one seed changed (different), so a seed that is silently ignored fails.
"""

from __future__ import annotations

import functools

import pytest
import yaml

from grpo_kit.train_cli import resolve_train_config
from tasks import get_task

pytest.importorskip("torch")

BASE = {
    "task": {"name": "countdown", "args": {"n_train": 64, "n_test": 8, "seed": 0, "max_target": 99},
             "prompt_style": "raw", "template": "{target}="},  # the demo tokenizer knows digits, + and =
    "sampling": {"n": 4, "temperature": 1.0, "max_new_tokens": 4, "seed": 0},
    "algorithm": {"type": "grpo", "kl": {"beta": 0.0}},
    "scoring": {"workers": 0},
    "train": {"steps": 1, "prompts_per_step": 4, "seed": 0, "torch_threads": 1},
    "run": {"progress": False},
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from grpo_kit.demo import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model"), seed=0, warm_start_steps=0)


@pytest.fixture(scope="module")
def resolve(tmp_path_factory, tiny_model):
    """``resolve(sets, **top_level_replacements)``: the TrainConfig of BASE (as a YAML file) with
    ``--set`` overrides, resolved as ``grpo-kit train CONFIG --set ...`` does."""
    folder = tmp_path_factory.mktemp("configs")

    def resolve(sets: list[str], **replace):
        data = {**BASE, "model": {"path": str(tiny_model)}, **replace}
        path = folder / f"cfg{abs(hash(repr(data)))}.yaml"
        path.write_text(yaml.safe_dump(data))
        cfg, _ = resolve_train_config(str(path), sets)
        return cfg

    return resolve


@pytest.fixture(scope="module")
def collected(resolve, tmp_path_factory):
    """``collected(*sets)``: (prompts, completion ids) of the first step of a Trainer built from
    BASE with ``sets`` (cached per ``sets``)."""
    from grpo_kit.train.trainer import Trainer

    @functools.lru_cache(maxsize=None)
    def collect(*sets: str):
        tr = Trainer(resolve(list(sets)), tmp_path_factory.mktemp("run"))
        try:
            rb, _ = tr.collect(1)
        finally:
            tr.close()
        return list(rb.prompts), [list(ids) for ids in rb.completion_ids]

    return collect


def test_seed_sets_every_seed_the_config_has(resolve):
    cfg = resolve(["seed=7"])
    assert (cfg.train.seed, cfg.sampling.seed, cfg.task.args["seed"]) == (7, 7, 7)


def test_seed_adds_no_seed_the_config_lacks(resolve):
    # no sampling.seed: it stays None (derived from train.seed); arithmetic takes no seed arg
    cfg = resolve(["seed=7"], task={"name": "arithmetic"}, sampling={"n": 4, "max_new_tokens": 4})
    assert (cfg.train.seed, cfg.sampling.seed, cfg.task.args) == (7, None, {})


def test_task_seed_changes_the_generated_rows(resolve):
    def rows(sets):
        ds = get_task(resolve(sets).task).load("train")
        return [(r["nums"], r["target"]) for r in ds]

    base = rows([])
    assert rows([]) == base  # the same seed generates the same problems
    for sets in (["task.args.seed=1"], ["seed=1"]):
        other = rows(sets)
        assert len(other) == len(base)
        assert sum(a != b for a, b in zip(base, other)) > len(base) // 2, sets


def test_train_seed_changes_the_data_order(collected):
    prompts, _ = collected()
    assert collected("sampling.seed=0")[0] == prompts  # a no-op override: same prompts
    train_prompts, _ = collected("train.seed=1")  # same rows (task seed 0), another order
    assert train_prompts != prompts


def test_sampling_seed_changes_the_completions(collected):
    prompts, completions = collected()
    assert collected("sampling.seed=0") == (prompts, completions)  # deterministic at a fixed seed
    other_prompts, other = collected("sampling.seed=1")
    assert other_prompts == prompts  # train.seed unchanged: the same prompts ...
    assert other != completions  # ... sampled differently
    assert sum(a != b for a, b in zip(completions, other)) >= len(other) // 2


def test_seed_override_changes_all_three(resolve, collected):
    prompts, completions = collected()
    new_prompts, new_completions = collected("seed=1")
    assert new_prompts != prompts and new_completions != completions
    assert resolve(["seed=1"]).task.args["seed"] == 1  # and the rows: see test_task_seed_changes_the_generated_rows
