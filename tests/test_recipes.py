"""The GPU recipes in recipes/: each resolves as written, and loads, builds and trains two steps on
a tiny stand-in model (tests/tiny_models.py: build_stand_in) with local data shaped like its hub dataset.

Here with the hf sampler; tests/test_vllm_sampler.py runs them with their own sampler, vllm.
Only the sizes are shrunk (model, data, lengths, batch); every algorithm setting is the recipe's.
"""

import json
from pathlib import Path

import pytest
import torch
import yaml

from grpo_kit.train.config import resolve_train_config
from tests.conftest import ROOT

RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
PROMPTS_PER_STEP = 2

GSM8K_ROWS = [{"question": f"Tom has {a} apples and buys {b} more. How many apples does he have?",
               "answer": f"{a} + {b} = {a + b}\n#### {a + b}"} for a, b in [(3, 4), (12, 30), (7, 8), (1, 1)]]
MATH_ROWS = [{"problem": f"What is ${a}/{b}$ in lowest terms?", "solution": f"It is $\\boxed{{{a}/{b}}}$.",
              "answer": f"\\frac{{{a}}}{{{b}}}", "level": "Level 3", "type": "Prealgebra"}
             for a, b in [(1, 2), (2, 3), (3, 4), (5, 7)]]


def make_stand_in(root: Path) -> tuple[Path, dict[str, str]]:
    """``(model path, {task name: local dataset path})`` written under ``root``."""
    from tests.tiny_models import build_stand_in

    data = {}
    for name, rows in (("gsm8k", GSM8K_ROWS), ("math", MATH_ROWS)):
        for split in ("train", "test"):
            (root / f"{name}_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        data[name] = str(root / f"{name}_{{split}}.jsonl")
    return build_stand_in(root / "model"), data


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    return make_stand_in(tmp_path_factory.mktemp("stand-in"))


def stand_in_overrides(recipe: Path, model: Path, data: dict[str, str], run_dir: Path) -> list[str]:
    """``--set`` overrides that shrink ``recipe`` to the stand-in: model, data, lengths, batch."""
    raw = yaml.safe_load(recipe.read_text())
    n = raw["sampling"]["n"]
    total = PROMPTS_PER_STEP * n
    sets = [f"model.path={model}", "sampling.max_new_tokens=12", "train.steps=2",
            f"train.prompts_per_step={PROMPTS_PER_STEP}", f"train.minibatch_size={total // 2}",
            f"train.micro_batch_size={max(1, total // 4)}", "train.save_every=1", "train.samples_every=1",
            "train.torch_threads=1", "run.report_to=[]", "run.progress=false", f"run.output_dir={run_dir}"]
    task = raw["task"]["name"]
    if task in data:
        sets.append(f"task.args.dataset={data[task]}")
    if task == "countdown":
        sets += ["task.args.n_train=40", "task.args.n_test=8"]
    if task == "reasoning_gym":
        sets += ["task.args.size=40", "task.args.test_size=8"]
    return sets


def test_the_recipes_are_there():
    assert [p.name for p in RECIPES] == ["countdown_qwen2.5-3b.yaml", "countdown_qwen2.5-3b_2gpu.yaml",
                                         "gsm8k_qwen2.5-0.5b.yaml", "gsm8k_qwen2.5-0.5b_ppo.yaml",
                                         "math_qwen2.5-math-1.5b.yaml", "math_qwen2.5-math-1.5b_dr_grpo.yaml",
                                         "math_qwen2.5-math-7b_dr_grpo_8gpu.yaml", "math_qwen2.5-math-7b_lora.yaml",
                                         "reasoning_gym_mix_qwen2.5-1.5b.yaml"]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_resolves_as_written(recipe):
    cfg, _ = resolve_train_config(str(recipe), [])
    text = recipe.read_text()
    assert cfg.sampler == "vllm" and cfg.model.path.startswith("Qwen/Qwen2.5-")
    assert "GPU memory, expected" in text and f"grpo-kit train recipes/{recipe.name}" in text
    assert cfg.vllm.max_model_len >= cfg.sampling.max_new_tokens + 256  # room for the prompt
    if cfg.sampling.stop:
        assert cfg.sampling.stop == ["</answer>"]


def test_dr_grpo_variant_changes_only_the_dr_grpo_settings():
    base = yaml.safe_load((ROOT / "recipes" / "math_qwen2.5-math-1.5b.yaml").read_text())
    dr = yaml.safe_load((ROOT / "recipes" / "math_qwen2.5-math-1.5b_dr_grpo.yaml").read_text())
    changed = set()
    for section in base:
        if isinstance(base[section], dict):
            changed |= {f"{section}.{k}" for k in base[section].keys() | dr[section].keys()
                        if base[section].get(k) != dr[section].get(k)}
        elif base[section] != dr[section]:
            changed.add(section)
    assert changed == {"algorithm.advantage", "algorithm.loss_agg", "algorithm.kl", "run.name"}
    assert dr["algorithm"]["advantage"] == "dr_grpo" and dr["algorithm"]["loss_agg"] == "constant_norm"
    assert dr["algorithm"]["kl"]["beta"] == 0


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_trains_on_a_stand_in(recipe, stand_in, tmp_path):
    from grpo_kit.train.trainer import Trainer

    model, data = stand_in
    cfg, _ = resolve_train_config(str(recipe), stand_in_overrides(recipe, model, data, tmp_path / "run")
                                  + ["sampler=hf"])
    trainer = Trainer(cfg, tmp_path / "run")
    try:
        rows = [trainer.train_step() for _ in range(2)]
        trainer.save()
    finally:
        trainer.close()
    assert (trainer.ref_model is not None) == (cfg.algorithm.kl.beta > 0)
    assert (trainer.critic is not None) == (cfg.algorithm.type == "ppo")
    for row in rows:
        assert row["completion/length_max"] <= 12
        n = PROMPTS_PER_STEP * cfg.sampling.n
        # no NaN, but the mean of a reward that applied to no completion of the step (a per-dataset
        # reward of the reasoning-gym mix whose dataset was not drawn: all None)
        assert all(not isinstance(v, float) or v == v or (k.endswith("/mean") and row.get(k[:-5] + "/none") == n)
                   for k, v in row.items()), row
        if "loss/total" in row:
            assert torch.isfinite(torch.tensor(row["loss/total"]))
    saved = "adapter_model.safetensors" if cfg.model.lora is not None else "model.safetensors"
    assert (tmp_path / "run" / "checkpoints" / "step-000002" / saved).exists()
