"""The built-in demo (`grpo-kit train` with no config) learns a+b on the CPU: mean reward over the
first 10 steps at most 0.3, over the last 10 at least 0.8 (about 75 s on 2 cores)."""

import os
import statistics
import subprocess
import sys

import pytest

from grpo_kit.demo import DEMO_STEPS
from grpo_kit.train.logger import read_metrics
from tests.conftest import ROOT


@pytest.mark.slow
def test_demo_learns(tmp_path):
    run = tmp_path / "demo"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "grpo_kit.cli", "train", "--output-dir", str(run),
                           "--set", "run.progress=false"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics(run / "metrics.jsonl")
    assert len(rows) == DEMO_STEPS
    first = statistics.mean(r["reward/mean"] for r in rows[:10])
    last = statistics.mean(r["reward/mean"] for r in rows[-10:])
    assert first <= 0.3 and last >= 0.8, (first, last)
    assert (run / "curves.png").stat().st_size > 10_000
    assert (run / "checkpoints" / f"step-{DEMO_STEPS:06d}" / "model.safetensors").exists()


LORA_DEMO = ["--set", "model.lora.r=16", "--set", "model.lora.alpha=32", "--set", "optim.lr=1e-3",
             "--set", "train.steps=600"]


@pytest.mark.slow
def test_demo_learns_with_lora(tmp_path):
    """The demo with a LoRA adapter (r 16, alpha 32, every linear layer; lr 1e-3, 600 steps; the
    KL to the base, which is the adapter switched off): the mean reward rises by at least 0.3
    between the first and the last 10 steps (about 1 minute on 2 cores)."""
    run = tmp_path / "demo-lora"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "grpo_kit.cli", "train", "--output-dir", str(run),
                           "--set", "run.progress=false", *LORA_DEMO],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(LoRA adapter)" in proc.stderr
    rows = read_metrics(run / "metrics.jsonl")
    assert len(rows) == 600
    first = statistics.mean(r["reward/mean"] for r in rows[:10])
    last = statistics.mean(r["reward/mean"] for r in rows[-10:])
    assert last - first >= 0.3, (first, last)
    assert (run / "checkpoints" / "step-000600" / "adapter_model.safetensors").exists()
