"""`grpo-kit rm train` under real torchrun: 2 ranks on the CPU with gloo, FSDP2, the demo's tiny model.

- 2 steps on 2 ranks (4 pairs each, micro-batches of 2, margins, centering, clipping) log the
  one-process metrics and export the same weights, within 1e-5; the export is a plain classifier
  that scores as the one-process export does;
- the sharded checkpoint of step 1 resumes on 2 ranks and in one process with the uninterrupted
  run's step 2;
- a LoRA adapter on the sharded base: the same metrics and merged export as one process;
- a batch that does not split evenly over the ranks is refused, naming the setting and the fix.

One torchrun launch per run (about 10 s each here), shared by the tests through module fixtures.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from grpo_kit.cli import main  # noqa: E402
from grpo_kit.config import build_config  # noqa: E402
from grpo_kit.errors import ConfigError  # noqa: E402
from grpo_kit.rm.config import RMConfig  # noqa: E402
from grpo_kit.rm.data import read_pairs  # noqa: E402
from grpo_kit.rm.demo import demo_pairs  # noqa: E402
from grpo_kit.rm.train import check_world_size  # noqa: E402
from rewards.model import reward_model  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "HF_HUB_OFFLINE": "1"}
LORA = "model.lora={r: 4, alpha: 8}"


def torchrun(*args) -> None:
    """``torchrun --nproc_per_node=2 -m grpo_kit ARGS``; fails the test with the ranks' stderr."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--rdzv-backend=c10d",
           "--rdzv-endpoint=localhost:0", "-m", "grpo_kit", *map(str, args)]
    proc = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]


def one_process(*args) -> None:
    assert main([str(a) for a in args]) == 0


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(run / "model" / "model.safetensors")


def assert_same_run(one: Path, two: Path, tol: float = 1e-5) -> None:
    """Every logged number of every step, and every exported weight, within ``tol``."""
    a, b = metrics(one), metrics(two)
    assert [m["step"] for m in a] == [m["step"] for m in b]
    for x, y in zip(a, b):
        assert set(x) == set(y)
        for k, v in x.items():
            assert y[k] == pytest.approx(v, abs=tol), (x["step"], k)
    wa, wb = weights(one), weights(two)
    assert set(wa) == set(wb)
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=tol, rtol=0), k


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A config (2 steps of 8 pairs, checkpoints at both), run in one process and on 2 ranks, plain and
    with LoRA; then step 1's sharded checkpoint resumed on 2 ranks and in one process."""
    from grpo_kit.demo import build_tiny_model

    root = tmp_path_factory.mktemp("rm_dist")
    model = build_tiny_model(root / "base", warm_start_steps=0)
    train, test = demo_pairs(0)
    for i, r in enumerate(train):
        r["margin"] = float(i % 3)
    for name, rows in (("train", train[:32]), ("test", test[:20])):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"model": {"path": str(model)},
           "data": {"train": str(root / "train.jsonl"), "test": str(root / "test.jsonl")},
           "loss": {"center_coef": 0.01}, "optim": {"lr": 3e-3, "grad_clip": 1.0, "warmup_steps": 1},
           # 4 pairs per rank in 2 micro-batches; evaluations of 20 pairs split 10 + 10, batches of 4
           "train": {"steps": 2, "batch_size": 8, "micro_batch_size": 2, "eval_every": 1, "eval_batch_size": 4,
                     "save_every": 1, "keep_last": 3, "torch_threads": 1}}
    config = root / "rm.yaml"
    config.write_text(yaml.safe_dump(cfg))
    one_process("rm", "train", config, "--output-dir", root / "one")
    torchrun("rm", "train", config, "--output-dir", root / "two")
    one_process("rm", "train", config, "--output-dir", root / "one_lora", "--set", LORA)
    torchrun("rm", "train", config, "--output-dir", root / "two_lora", "--set", LORA)
    for name in ("resumed_two", "resumed_one"):  # as if killed after step 1's checkpoint
        shutil.copytree(root / "two", root / name)
        shutil.rmtree(root / name / "checkpoints" / "step-000002")
        shutil.rmtree(root / name / "model")
    torchrun("rm", "train", config, "--output-dir", root / "resumed_two", "--resume")
    one_process("rm", "train", config, "--output-dir", root / "resumed_one", "--resume")
    return root


@pytest.mark.slow
def test_two_ranks_equal_one_process(runs):
    assert_same_run(runs / "one", runs / "two")
    step1 = metrics(runs / "two")[0]  # the step did something: a loss, a clipped gradient, an evaluation
    assert step1["grad_norm"] > 1.0 and {"train/loss", "train/accuracy", "eval/accuracy"} <= set(step1)
    ckpt = runs / "two" / "checkpoints" / "step-000002"
    assert (ckpt / "dcp").is_dir() and (ckpt / "rng" / "rank-1.pt").is_file()  # sharded, every rank's RNG


@pytest.mark.slow
def test_the_export_is_a_plain_classifier_scoring_as_one_process(runs):
    out = runs / "two" / "model"
    net = transformers.AutoModelForSequenceClassification.from_pretrained(out)
    assert net.config.num_labels == 1 and net.config.pad_token_id == 0
    assert net.config.architectures == ["Qwen2ForSequenceClassification"]
    assert not (out / "trainer_state.pt").exists() and not (out / "dcp").exists()
    pairs = read_pairs(runs / "test.jsonl")
    texts, prompts = [p.chosen for p in pairs] + [p.rejected for p in pairs], [p.prompt for p in pairs] * 2
    two = reward_model(texts, prompt=prompts, model=str(out))
    one = reward_model(texts, prompt=prompts, model=str(runs / "one" / "model"))
    assert two == pytest.approx(one, abs=1e-5)
    s1, s2 = (json.loads((r / "model" / "reward_stats.json").read_text()) for r in (runs / "one", runs / "two"))
    assert s2["pairs"] == 20 and s2["accuracy"] == s1["accuracy"] and s2["step"] == 2
    assert s2["reward_mean"] == pytest.approx(s1["reward_mean"], abs=1e-5)


@pytest.mark.slow
def test_a_sharded_checkpoint_resumes_on_two_ranks_and_in_one_process(runs):
    for name in ("resumed_two", "resumed_one"):
        assert_same_run(runs / "two", runs / name)


@pytest.mark.slow
def test_lora_on_two_ranks_equals_one_process(runs):
    assert_same_run(runs / "one_lora", runs / "two_lora")
    ckpt = runs / "two_lora" / "checkpoints" / "step-000002"
    assert (ckpt / "adapter_config.json").is_file()  # the adapter in peft's format beside the shards
    assert not (runs / "two_lora" / "model" / "adapter_config.json").exists()  # merged


# (batch_size, ranks, error fragment or None)
SPLITS = [
    (8, 2, None),  # 4 pairs each
    (8, 8, None),  # 1 each
    (8, 3, "train.batch_size = 8 pairs cannot be split evenly over 3 ranks: set it to a multiple of 3 (e.g. 9 or 6)"),
    (2, 4, "train.batch_size = 2 pairs cannot be split evenly over 4 ranks: set it to a multiple of 4 (e.g. 4)"),
]


@pytest.mark.parametrize("batch_size,ranks,fragment", SPLITS)
def test_a_batch_that_does_not_split_over_the_ranks_is_refused(batch_size, ranks, fragment):
    cfg = build_config({"model": {"path": "m"}, "data": {"train": "t.jsonl"}, "train": {"batch_size": batch_size}},
                       RMConfig)
    if fragment is None:
        check_world_size(cfg, ranks)
        return
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        check_world_size(cfg, ranks)


@pytest.mark.slow
@pytest.mark.parametrize("run", ["two", "two_lora"])
def test_grpo_kit_export_of_a_sharded_rm_checkpoint_is_the_runs_classifier(runs, tmp_path, run):
    """``grpo-kit export`` of the 2-rank run's last (sharded) checkpoint, plain or LoRA: a plain
    classifier that scores as the run's own ``RUN_DIR/model``."""
    out = tmp_path / "export"
    assert main(["export", str(runs / run), "--checkpoint", "step-000002", "-o", str(out)]) == 0
    net = transformers.AutoModelForSequenceClassification.from_pretrained(out)
    assert net.config.num_labels == 1 and not (out / "adapter_config.json").exists()
    pairs = read_pairs(runs / "test.jsonl")
    texts, prompts = [p.chosen for p in pairs] + [p.rejected for p in pairs], [p.prompt for p in pairs] * 2
    got = reward_model(texts, prompt=prompts, model=str(out))
    want = reward_model(texts, prompt=prompts, model=str(runs / run / "model"))
    assert got == pytest.approx(want, abs=1e-5)
