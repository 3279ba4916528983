"""The built-in demo of ``grpo-kit rm train``: a tiny model learns to prefer right sums over wrong ones.

Pairs: for every fact ``a+b=`` (a, b in 0..9) and every wrong answer w in 0..18, the pair
(prompt ``"a+b="``, chosen ``str(a+b)``, rejected ``str(w)``): 1,800 pairs, shuffled under the
seed and split into training pairs and :data:`TEST_SHARE` held-out test pairs. A held-out pair's
rejected answer is never seen with that prompt in training, so the test accuracy asks whether the
model scores a sum's correctness, not whether it remembers a pair. ``category``: ``near miss``
(w = a+b +- 1) or ``far``. (Holding out whole facts instead, whose sums the model has then never
seen, is a test of learning addition from 80 facts: 0.69-0.90 at seeds 0-3, see the README.)
The model is the shape of ``grpo-kit train``'s demo policy (:func:`grpo_kit.demo.build_tiny_model`:
a 124k-parameter Qwen2 and the 14-token tokenizer), randomly initialised (the policy's format warm
start makes it learn here more slowly: 0.981 against 1.000 at seed 0), and
:func:`~grpo_kit.rm.train.load_reward_model` gives it a scalar head.

    >>> train, test = demo_pairs(0)
    >>> len(train), len(test), sorted(train[0])
    (1440, 360, ['category', 'chosen', 'prompt', 'rejected'])
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

TEST_SHARE = 0.2
DEMO_STEPS = 400
WARM_START_STEPS = 0  # random weights (see the module docstring)


def demo_config(seed: int = 0) -> dict[str, Any]:
    """The demo's config; ``model.path`` and ``data`` are filled in by :func:`prepare_demo`."""
    return {
        "model": {"path": "<built by grpo_kit.demo.build_tiny_model>"},
        "data": {"train": "<written by grpo_kit.rm.demo.prepare_demo>",
                 "test": "<written by grpo_kit.rm.demo.prepare_demo>", "max_length": 16},
        "loss": {"center_coef": 0.01},
        "optim": {"lr": 3e-3, "betas": [0.9, 0.99], "warmup_steps": 20, "schedule": "cosine", "grad_clip": 1.0},
        "train": {"steps": DEMO_STEPS, "batch_size": 64, "eval_every": 100, "seed": seed, "torch_threads": 1},
        "run": {"name": "rm-demo"},
    }


def demo_pairs(seed: int) -> tuple[list[dict], list[dict]]:
    """The training and the held-out test pairs (see the module docstring)."""
    pairs = [{"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(w),
              "category": "near miss" if abs(w - a - b) == 1 else "far"}
             for a in range(10) for b in range(10) for w in range(19) if w != a + b]
    random.Random(f"rm-demo/{seed}").shuffle(pairs)
    n_test = round(TEST_SHARE * len(pairs))
    return pairs[n_test:], pairs[:n_test]


def prepare_demo(cfg, run_dir: Path):
    """Build the tiny model and write the pairs into ``run_dir`` (kept when they exist: a resumed
    demo continues on the same ones); return ``cfg`` pointing at them."""
    import torch

    from grpo_kit.demo import build_tiny_model

    if cfg.train.torch_threads:  # the warm start too
        torch.set_num_threads(cfg.train.torch_threads)
    model_dir, data_dir = run_dir / "base-model", run_dir / "data"
    if not (model_dir / "config.json").exists():
        build_tiny_model(model_dir, seed=cfg.train.seed, warm_start_steps=WARM_START_STEPS)
    data_dir.mkdir(parents=True, exist_ok=True)
    files = {"train": data_dir / "train.jsonl", "test": data_dir / "test.jsonl"}
    if not all(f.exists() for f in files.values()):
        for f, rows in zip(files.values(), demo_pairs(cfg.train.seed)):
            f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return cfg.model_copy(update={
        "model": cfg.model.model_copy(update={"path": str(model_dir)}),
        "data": cfg.data.model_copy(update={"train": str(files["train"]), "test": str(files["test"])}),
    })
