"""Runs one Trainer per config given, one after another in this process: the worker of
tests/test_distributed.py, launched both as a plain process and by torchrun.

    python tests/dist_steps.py [--resume] OUT_DIR CONFIG.yaml [CONFIG.yaml ...]
    torchrun --nproc_per_node 2 tests/dist_steps.py [--resume] OUT_DIR CONFIG.yaml [...]

Each run goes to OUT_DIR/<config stem>; ``--resume`` continues each from its last checkpoint."""

import sys
from pathlib import Path

from grpo_kit.config import load_config
from grpo_kit.train.config import TrainConfig
from grpo_kit.train.trainer import Trainer

if __name__ == "__main__":
    args = sys.argv[1:]
    resume = args[0] == "--resume"
    out = Path(args[resume])
    for path in args[resume + 1:]:
        Trainer(load_config(path, TrainConfig), out / Path(path).stem, resume=resume).train()
