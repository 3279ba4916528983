"""Benchmark: peak host memory (RSS) of one training step, full fine-tuning vs LoRA, with and
without a KL reference, and the reference LoRA gets for free (the adapter switched off) vs a copy.

Each configuration runs in a fresh subprocess (``python bench_lora_memory.py --worker NAME``) that
builds the real :class:`grpo_kit.train.trainer.Trainer` and runs one ``train_step()`` (sampling,
scoring, the policy update with its first AdamW step, which allocates the optimizer states). It
reports:

- ``rss before``: the process's resident set (``VmRSS``) after ``Trainer(...)``, before the step
  (the weights, the reference, whatever loading left behind);
- ``peak``: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after the step (the whole process's
  peak, construction included);
- ``step peak``: ``VmHWM`` after the step, the high-water mark having been reset
  (``echo 5 > /proc/self/clear_refs``) just before it: the peak of the step alone;
  ``step +`` = step peak - rss before, what the step itself adds (gradients, AdamW states,
  activations).

Configurations (the same model, ``train.seed`` 0, so the same rollouts):

1. ``full``          full fine-tuning, ``kl.beta`` 0 (no reference)
2. ``full+ref``      full fine-tuning, ``kl.beta`` 0.04: the trainer's ``copy.deepcopy`` reference
3. ``lora``          LoRA r=16, alpha 32, all-linear, ``kl.beta`` 0
4. ``lora+ref``      LoRA, ``kl.beta`` 0.04, the default reference: ``AdapterDisabled(policy)``
5. ``lora+copy``     LoRA, ``kl.beta`` 0.04, the reference replaced after ``Trainer(...)`` by a
                     second full copy of the base model
                     (``AutoModelForCausalLM.from_pretrained(path).eval().requires_grad_(False)``),
                     what a trainer without the adapter-off reference would hold

Model: a random-init Qwen2 (``grpo_kit.demo.new_qwen2``), hidden 1024, intermediate 2816, 16
layers, 16 heads, 4 KV heads (head_dim 64), ``initializer_range`` 0.02, with the demo's 14-token
character tokenizer (``grpo_kit.demo.build_tokenizer``), so ``vocab_size`` = 14 and the weights
are all in the decoder layers (the embedding is 14 x 1024): 180.4M parameters, 722 MB in float32
(the trainer's dtype on a CPU, for the policy and, with LoRA, for the frozen base too). Config:
``grpo_kit.demo.demo_config()`` with ``sampling.n`` 4, ``max_new_tokens`` 3,
``train.prompts_per_step`` 4 (16 sequences of ~7 tokens: activations are small, the weights
dominate), ``scoring.workers`` 1, ``train.torch_threads`` 1. The reward is :func:`spread` below (a
hash of the completion text in [0, 1)) instead of the task's ``exact_match``: a random-init model
almost never answers ``a+b`` right, every group's rewards would be equal and the trainer would
skip the update (and so the gradients and optimizer states this benchmark is about). The worker
checks that the step was not skipped.

Figures measured on 2 CPU cores shared with another engineer's jobs (RSS does not depend on the
load; the timings would), torch 2.13 CPU, transformers 5.19, peft 0.21.2, float32:

    configuration                          trainable   rss before   peak      step +   AdamW state
    full FT, beta 0 (no reference)         180,427,776  1268 MB    3544 MB   2276 MB  1443 MB
    full FT, beta 0.04 (deep-copied ref)   180,427,776  1991 MB    4283 MB   2291 MB  1443 MB
    LoRA r16 all-linear, beta 0              4,653,056  1298 MB    1587 MB    289 MB    37 MB
    LoRA r16, beta 0.04, ref = adapter off   4,653,056  1297 MB    1578 MB    281 MB    37 MB
    LoRA r16, beta 0.04, ref = full copy     4,653,056  2020 MB    2302 MB    282 MB    37 MB
    (MB = 1e6 bytes; ru_maxrss and the step-only VmHWM agreed to the MB in every row: the step is
    the process's peak. A second run agreed within 35 MB per cell: LoRA/full 0.44x and 0.37x,
    719 MB saved by the adapter-off reference.)

    LoRA / full peak: 0.45x at beta 0, 0.37x at beta 0.04.
    Adapter-off reference vs a full copy: 0.69x the peak, 724 MB saved = 1.00x the 722 MB of
    float32 weights. The adapter-off reference costs nothing measurable (-9 MB vs beta 0, noise);
    the trainer's deep copy under full FT costs 739 MB (1.02x the weights).
    Full FT's step adds 2276 MB = gradients (722) + AdamW's two states (1443) + ~110 MB of
    activations and temporaries; LoRA's step adds ~285 MB (4.7M adapter params: 19 MB grads, 37 MB
    AdamW state; the rest activations and temporaries).

Reading the RSS on a CPU: transformers 5 maps float32 safetensors copy-on-write, so a loaded
model's weights are file-backed pages, resident only once read; the worker reads every weight
(of the policy and of a separate reference) before taking "rss before". Under full FT the first
AdamW step writes every weight, turning those pages into anonymous memory (RssAnon 330 -> 2597
MB, RssFile 938 -> 229 MB). The frozen LoRA base stays file-backed. Config 5's copy is a second
mapping of the same file: RSS counts it in full (RssFile +722 MB), though on a CPU the kernel
shares those page-cache pages with the policy's; on a GPU (or with the trainer's
``copy.deepcopy``, anonymous memory) the copy is real memory.

The 7B estimate the script prints (Qwen2.5-7B, one 80 GB GPU, LoRA r=64 all-linear) is
arithmetic over parameter counts and bytes per parameter, not a measurement: no activations, KV
cache, CUDA context or allocator fragmentation counted.

    python benchmarks/bench_lora_memory.py                 # about 2-3 minutes on 2 busy cores
    python benchmarks/bench_lora_memory.py --configs lora lora+ref
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=16, num_attention_heads=16,
             num_key_value_heads=4, max_position_embeddings=128, initializer_range=0.02,
             tie_word_embeddings=True)
LORA = dict(r=16, alpha=32.0, dropout=0.0, target_modules="all-linear")
BETA = 0.04
CONFIGS = {  # name: (lora, beta, replace the reference by a second full copy of the base)
    "full": (False, 0.0, False),
    "full+ref": (False, BETA, False),
    "lora": (True, 0.0, False),
    "lora+ref": (True, BETA, False),
    "lora+copy": (True, BETA, True),
}
DESCRIPTION = {
    "full": "full FT, beta 0 (no reference)",
    "full+ref": "full FT, beta 0.04 (deep-copied ref)",
    "lora": "LoRA r16 all-linear, beta 0",
    "lora+ref": "LoRA r16, beta 0.04, ref = adapter off",
    "lora+copy": "LoRA r16, beta 0.04, ref = full copy",
}
MB = 1e6


def spread(completions, **_) -> list[float]:
    """The benchmark's reward: a hash of each completion's text in [0, 1), so that (almost) every
    group has unequal rewards and the update runs. Loaded by the scorer's worker from this file."""
    out = []
    for c in completions:
        text = c if isinstance(c, str) else json.dumps(c)
        out.append(zlib.crc32(text.encode()) % 1000 / 1000)
    return out


# ---------------------------------------------------------------------------------------- model
def build_model(folder: Path) -> dict:
    """Save the random-init benchmark model and the demo tokenizer into ``folder``."""
    import torch

    from grpo_kit.demo import TOKENS, build_tokenizer, new_qwen2

    torch.set_num_threads(1)
    tok = build_tokenizer(folder)
    model = new_qwen2(tok, len(TOKENS), seed=0, **MODEL)
    model.save_pretrained(folder)
    params = sum(p.numel() for p in model.parameters())
    return {"params": params, "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters())}


# --------------------------------------------------------------------------------------- worker
def _status(key: str) -> int:
    """A ``/proc/self/status`` field in bytes (``VmRSS``, ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def worker(name: str, model_path: str, run_dir: str) -> dict:
    import copy
    import resource

    import torch

    from grpo_kit.config import build_config
    from grpo_kit.demo import demo_config
    from grpo_kit.lora import AdapterDisabled, parameter_counts
    from grpo_kit.train.config import TrainConfig
    from grpo_kit.train.trainer import Trainer

    lora, beta, force_copy = CONFIGS[name]
    data = demo_config()
    data["model"] = {"path": model_path, **({"lora": LORA} if lora else {})}
    data["sampling"].update(n=4, max_new_tokens=3)
    data["algorithm"]["kl"]["beta"] = beta
    data["scoring"]["workers"] = 1
    data["train"].update(steps=1, prompts_per_step=4, torch_threads=1, save_every=0, samples_every=0)
    data["run"]["progress"] = False
    data["rewards"] = [{"name": f"{Path(__file__).resolve()}:spread", "label": "spread"}]
    cfg = build_config(data, TrainConfig, "bench")

    trainer = Trainer(cfg, Path(run_dir))
    if force_copy:
        from transformers import AutoModelForCausalLM

        trainer.ref_model = AutoModelForCausalLM.from_pretrained(model_path).eval().requires_grad_(False)
    ref = trainer.ref_model
    ref_kind = ("none" if ref is None else "adapter-disabled" if isinstance(ref, AdapterDisabled)
                else "separate module")
    trainable, total = parameter_counts(trainer.model)
    # transformers 5 loads float32 safetensors on a CPU as a copy-on-write mmap of the file: the
    # weights are not resident until read. Read every weight once so that "rss before" holds them.
    with torch.no_grad():
        for m in (trainer.model, trainer.ref_model):
            if isinstance(m, torch.nn.Module):
                for t in (*m.parameters(), *m.buffers()):
                    t.sum()
    before = {k: _status(k) for k in ("RssAnon", "RssFile")}
    rss_before = _status("VmRSS")
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: the step's own peak from here
    row = trainer.train_step()
    step_peak = _status("VmHWM")
    after = {k: _status(k) for k in ("RssAnon", "RssFile")}
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if "skipped" in row:
        raise SystemExit(f"{name}: the step skipped the update ({row['skipped']}); the figures would "
                         "not include the gradients and optimizer states")
    state = sum(t.numel() * t.element_size() for s in trainer.optimizer.state.values()
                for t in s.values() if torch.is_tensor(t))
    return {"name": name, "trainable": trainable, "total": total, "ref": ref_kind,
            "rss_before": rss_before, "maxrss_before": maxrss_before, "maxrss": maxrss,
            "step_peak": step_peak, "optimizer_state_bytes": state,
            "rss_anon_before": before["RssAnon"], "rss_file_before": before["RssFile"],
            "rss_anon_after": after["RssAnon"], "rss_file_after": after["RssFile"],
            "loss": row.get("loss/total"), "kl": row.get("kl/sequence")}


# --------------------------------------------------------------------------------------- 7B sum
QWEN25_7B = dict(params=7.6e9, hidden=3584, intermediate=18944, layers=28, heads=28, kv_heads=4, head_dim=128)


def lora_params_7b(r: int = 64) -> int:
    """LoRA all-linear adapter parameters of Qwen2.5-7B's shapes: r * (in + out) per linear layer."""
    s = QWEN25_7B
    h, i, kv = s["hidden"], s["intermediate"], s["kv_heads"] * s["head_dim"]
    q_dim = s["heads"] * s["head_dim"]
    shapes = {"q_proj": (h, q_dim), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q_dim, h),
              "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    return s["layers"] * sum(r * (a + b) for a, b in shapes.values())


def estimate_7b(r: int = 64) -> list[str]:
    P = QWEN25_7B["params"]
    A = lora_params_7b(r)
    gb = 1e9
    base_bf16 = 2 * P
    adapter = 16 * A  # fp32 weights 4 + grads 4 + AdamW exp_avg 4 + exp_avg_sq 4
    full = 16 * P     # the same, for every weight
    lines = [
        f"7B estimate (Qwen2.5-7B, {P / 1e9:.1f}e9 params, one 80 GB GPU) -- ESTIMATE: weights, gradients and "
        "AdamW states only; no activations, KV cache, CUDA context or fragmentation counted",
        f"  LoRA r={r} all-linear: {A:,} adapter params ({100 * A / P:.2f}% of the model)",
        f"    frozen bf16 base      2 B x {P / 1e9:.1f}e9   = {base_bf16 / gb:6.1f} GB",
        f"    adapter fp32 + grads + AdamW  16 B x {A / 1e6:.1f}M = {adapter / gb:6.1f} GB",
        f"    total, beta 0 or beta > 0 (reference = adapter off, no copy) = {(base_bf16 + adapter) / gb:6.1f} GB",
        f"    (a second bf16 copy as the reference would add {base_bf16 / gb:.1f} GB: "
        f"{(2 * base_bf16 + adapter) / gb:.1f} GB)",
        f"  full fine-tuning: fp32 weights + grads + AdamW, 16 B x {P / 1e9:.1f}e9 = {full / gb:6.1f} GB (beta 0); "
        f"+ bf16 reference {base_bf16 / gb:.1f} GB = {(full + base_bf16) / gb:6.1f} GB (beta > 0)",
        f"  => LoRA fits one 80 GB GPU with {80 - (base_bf16 + adapter) / gb:.0f} GB left for activations and the "
        f"KV cache; full fine-tuning needs {full / gb:.0f}-{(full + base_bf16) / gb:.0f} GB (does not fit: "
        "shard it, e.g. FSDP over 2+ GPUs)",
    ]
    return lines


# ----------------------------------------------------------------------------------------- main
def report(results: dict[str, dict], model: dict) -> list[str]:
    w = model["weight_bytes"]
    out = [f"model: random-init Qwen2 {model['params'] / 1e6:.1f}M params, {w / MB:.0f} MB float32 weights",
           "",
           f"{'configuration':40s} {'trainable':>12s} {'rss before':>11s} {'peak':>9s} {'step peak':>10s} "
           f"{'step +':>8s} {'optim state':>12s}",
           ]
    for name, r in results.items():
        out.append(f"{DESCRIPTION[name]:40s} {r['trainable']:>12,} {r['rss_before'] / MB:>8.0f} MB "
                   f"{r['maxrss'] / MB:>6.0f} MB {r['step_peak'] / MB:>7.0f} MB "
                   f"{(r['step_peak'] - r['rss_before']) / MB:>5.0f} MB {r['optimizer_state_bytes'] / MB:>9.1f} MB")
    out.append("(MB = 1e6 bytes; peak = ru_maxrss of the whole process; step peak = VmHWM reset just before "
               "the step; step + = step peak - rss before)")
    out.append("")
    pairs = [("lora", "full", "LoRA / full peak, beta 0"), ("lora+ref", "full+ref", "LoRA / full peak, beta 0.04")]
    for a, b, what in pairs:
        if a in results and b in results:
            out.append(f"{what:44s} {results[a]['maxrss'] / results[b]['maxrss']:.2f}x  "
                       f"(step peak {results[a]['step_peak'] / results[b]['step_peak']:.2f}x)")
    if "lora+ref" in results and "lora+copy" in results:
        a, b = results["lora+ref"], results["lora+copy"]
        saved = b["maxrss"] - a["maxrss"]
        saved_step = b["step_peak"] - a["step_peak"]
        out.append(f"{'adapter-off ref vs full-copy ref, peak':44s} {a['maxrss'] / b['maxrss']:.2f}x: "
                   f"{saved / MB:.0f} MB saved ({saved / w:.2f}x the {w / MB:.0f} MB of weights); "
                   f"step peak {saved_step / MB:.0f} MB saved ({saved_step / w:.2f}x)")
    if "full+ref" in results and "full" in results:
        d = results["full+ref"]["maxrss"] - results["full"]["maxrss"]
        out.append(f"{'full FT: the deep-copied reference costs':44s} {d / MB:.0f} MB ({d / w:.2f}x the weights)")
    if "lora+ref" in results and "lora" in results:
        d = results["lora+ref"]["maxrss"] - results["lora"]["maxrss"]
        out.append(f"{'LoRA: the adapter-off reference costs':44s} {d / MB:.0f} MB ({d / w:.2f}x the weights)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args.model, args.run_dir)), flush=True)
        return

    with tempfile.TemporaryDirectory(prefix="bench_lora_memory_") as tmp:
        folder = Path(tmp) / "model"
        model = build_model(folder)
        print(f"built {folder}: {model['params']:,} params, {model['weight_bytes'] / MB:.0f} MB", flush=True)
        results = {}
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        for name in args.configs:
            proc = subprocess.run([sys.executable, __file__, "--worker", name, "--model", str(folder),
                                   "--run-dir", str(Path(tmp) / f"run-{name}")],
                                  capture_output=True, text=True, env=env, cwd=ROOT)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(f"{name}: FAILED (exit {proc.returncode})\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}", flush=True)
                continue
            results[name] = json.loads(lines[-1][len("RESULT "):])
            r = results[name]
            print(f"{name}: ref {r['ref']}, rss before {r['rss_before'] / MB:.0f} MB, peak {r['maxrss'] / MB:.0f} MB, "
                  f"step peak {r['step_peak'] / MB:.0f} MB (before: anon {r['rss_anon_before'] / MB:.0f} + file "
                  f"{r['rss_file_before'] / MB:.0f} MB; after: anon {r['rss_anon_after'] / MB:.0f} + file "
                  f"{r['rss_file_after'] / MB:.0f} MB), loss {r['loss']}, kl {r['kl']}", flush=True)
    print()
    print("\n".join(report(results, model)))
    print()
    print("\n".join(estimate_7b()))


if __name__ == "__main__":
    main()
