"""A tiny-model smoke run of each script in scripts/."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_make_tiny_model_script(tmp_path):
    out = tmp_path / "tiny"
    subprocess.run([sys.executable, "scripts/make_tiny_model.py", "--out", str(out), "--warm-start-steps", "5"],
                   cwd=ROOT, check=True, capture_output=True, timeout=300,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert (out / "config.json").exists() and (out / "tokenizer_config.json").exists()


def _has_vllm() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


@pytest.mark.parametrize("sampler", ["hf", pytest.param("vllm", marks=[
    pytest.mark.slow, pytest.mark.skipif(not _has_vllm(), reason="vllm is not installed")])])
def test_train_r1_zero_script(tmp_path, sampler):
    from grpo_kit.demo import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny", warm_start_steps=30)
    out = tmp_path / "run"
    extra = ["--vllm-kv-cache", "32MiB", "--enforce-eager"] if sampler == "vllm" else []  # a size, not a share
    proc = subprocess.run([sys.executable, "scripts/train_r1_zero.py", "--model", str(model), "--task",
                           "arithmetic", "--steps", "3", "--prompts", "4", "--group", "4",
                           "--max-new-tokens", "3", "--lr", "3e-4", "--beta", "0.04", "--out", str(out),
                           "--sampler", sampler, *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(0 <= r["reward/mean"] <= 1 for r in rows)
    assert (out / "model" / "config.json").exists()
