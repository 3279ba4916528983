"""The README stays true: its Python examples run, and CI runs its test command verbatim."""

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_python_examples_run(code):
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_ci_runs_the_readme_test_command():
    bash = re.findall(r"```bash\n(.*?)```", README, re.S)
    test_cmd = next(b.strip() for b in bash if "pytest" in b)
    assert test_cmd in (ROOT / ".ci" / "run").read_text()


def test_yaml_examples_are_valid_configs():
    import yaml

    from grpo_kit.config import build_config
    from grpo_kit.score_file import ScoreConfig
    from grpo_kit.train.config import ModelConfig, OptimConfig, PPOConfig, TrainConfig
    from tasks.config import TaskConfig

    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", README, re.S)]
    kinds = set()
    for i, d in enumerate(blocks):
        if "model" in d and "task" not in d:  # a fragment: the LoRA example's model and optim blocks
            build_config(d["model"], ModelConfig, f"README yaml block {i}")
            build_config(d["optim"], OptimConfig, f"README yaml block {i}")
            kinds.add("lora" if d["model"].get("lora") else "model")
        elif "model" in d:
            build_config(d, TrainConfig, f"README yaml block {i}")
            kinds.add("train")
        elif set(d) == {"rewards"}:
            build_config(d, ScoreConfig, f"README yaml block {i}")
            kinds.add("rewards")
        elif set(d) == {"algorithm"}:
            build_config(d["algorithm"], PPOConfig, f"README yaml block {i}")
            kinds.add("ppo")
        elif set(d) == {"train"}:  # the asynchronous-training block
            from grpo_kit.train.config import LoopConfig

            build_config(d["train"], LoopConfig, f"README yaml block {i}")
            kinds.add("loop")
        elif set(d) == {"task"} and "{split}" not in d["task"].get("dataset", ""):
            build_config(d["task"], TaskConfig, f"README yaml block {i}")
    assert kinds == {"train", "rewards", "ppo", "lora", "loop"}
