"""Runs one Trainer per config given, one after another in this process: the worker of
tests/test_distributed.py, launched both as a plain process and by torchrun.

    python tests/dist_steps.py OUT_DIR CONFIG.yaml [CONFIG.yaml ...]
    torchrun --nproc_per_node 2 tests/dist_steps.py OUT_DIR CONFIG.yaml [...]

Each run goes to OUT_DIR/<config stem>."""

import sys
from pathlib import Path

from grpo_kit.config import load_config
from grpo_kit.train.config import TrainConfig
from grpo_kit.train.trainer import Trainer

if __name__ == "__main__":
    out = Path(sys.argv[1])
    for path in sys.argv[2:]:
        Trainer(load_config(path, TrainConfig), out / Path(path).stem).train()
