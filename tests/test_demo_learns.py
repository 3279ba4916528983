"""The built-in demo (`grpo-kit train` with no config) learns a+b on the CPU: mean reward over the
first 10 steps at most 0.3, over the last 10 at least 0.8 (about 3-4 minutes on 2 cores)."""

import os
import statistics
import subprocess
import sys

import pytest

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
    assert len(rows) == 1500
    first = statistics.mean(r["reward/mean"] for r in rows[:10])
    last = statistics.mean(r["reward/mean"] for r in rows[-10:])
    assert first <= 0.3 and last >= 0.8, (first, last)
    assert (run / "curves.png").stat().st_size > 10_000
    assert (run / "checkpoints" / "step-001500" / "model.safetensors").exists()
