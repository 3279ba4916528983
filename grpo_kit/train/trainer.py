"""The trainer, GRPO or PPO. A step reads as: sample, score, advantages + loss + step, log.

    trainer = Trainer(cfg, run_dir)
    trainer.train()

Critic-free GRPO (arXiv 2402.03300) with the variants of :mod:`grpo_kit.algorithms` selected by
``cfg.algorithm``. Departures from the paper: the loss aggregation defaults to DAPO's token mean;
the KL to the reference is optional (``algorithm.kl.beta``, default 0, as Dr. GRPO and DAPO).
"""

from __future__ import annotations

import copy
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from grpo_kit import dist
from grpo_kit.config import dump_config
from grpo_kit.errors import ConfigError
from grpo_kit.lora import AdapterDisabled, full_adapter_state, load_adapter, parameter_counts
from grpo_kit.records import RolloutBatch
from grpo_kit.rollout import make_sampler
from grpo_kit.scoring import Scorer
from grpo_kit.train import checkpoint as ckpt
from grpo_kit.train.algorithm import Algorithm
from grpo_kit.train.batch import Masks, make_batch
from grpo_kit.train.config import TrainConfig
from grpo_kit.train.logger import RunLogger
from grpo_kit.train.models import encode_prompt, load_policy
from grpo_kit.train.update import Layout, policy_update
from tasks import get_task


class PromptCursor:
    """Position in the prompt stream: a seeded permutation per epoch, resumable."""

    def __init__(self, n: int, seed: int):
        if n == 0:
            raise ConfigError("the task's train split has no rows")
        self.n, self.seed, self.epoch, self.pos = n, seed, 0, 0

    def take(self, k: int) -> list[int]:
        out: list[int] = []
        while len(out) < k:
            perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            chunk = perm[self.pos:self.pos + k - len(out)].tolist()
            out += chunk
            self.pos += len(chunk)
            if self.pos >= self.n:
                self.epoch, self.pos = self.epoch + 1, 0
        return out

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, s: dict[str, int]) -> None:
        self.epoch, self.pos = s["epoch"], s["pos"]


def lr_lambda(cfg: TrainConfig, total_updates: int):
    o = cfg.optim

    def f(u: int) -> float:
        if u < o.warmup_steps:
            return (u + 1) / o.warmup_steps
        if o.schedule == "constant":
            return 1.0
        prog = min(1.0, (u - o.warmup_steps) / max(1, total_updates - o.warmup_steps))
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * prog))

    return f


class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: Path, *, resume: bool = False):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.world = dist.init_distributed(cfg.distributed.timeout_s)  # a single process without torchrun
        if self.world.size > cfg.train.prompts_per_step:
            raise ConfigError(f"train.prompts_per_step = {cfg.train.prompts_per_step} is less than the "
                              f"{self.world.size} ranks: each rank needs at least one prompt group")
        if self.world.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.world.barrier()
        if cfg.train.torch_threads:  # a machine's threads, shared by the ranks torchrun starts on it
            per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            torch.set_num_threads(max(1, cfg.train.torch_threads // per_node))
        torch.manual_seed(cfg.train.seed)  # the same on every rank: new heads start equal everywhere
        self.task = get_task(cfg.task)
        self.dataset = self.task.load("train")
        self.rewards = cfg.rewards if cfg.rewards is not None else self.task.default_rewards
        self.model, self.tokenizer, self.device, self.autocast = load_policy(cfg.model, self.world.local_rank)
        algo = cfg.algorithm
        self.algorithm = Algorithm(algo, max_new_tokens=cfg.sampling.max_new_tokens)
        trainable, total = parameter_counts(self.model)
        self._say(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)"
                  + (" (LoRA adapter)" if cfg.model.lora is not None else ""))
        self.ref_model = None
        if algo.kl.beta > 0 and cfg.model.lora is not None:  # the same weights, adapter off: no copy
            self.ref_model = AdapterDisabled(self.model)
        elif algo.kl.beta > 0:
            self.ref_model = copy.deepcopy(self.model).eval().requires_grad_(False)
            if self.autocast:  # its forward passes run in bf16 anyway: half the memory of fp32
                self.ref_model.to(torch.bfloat16)
        # the trainable weights' dtype (float32 beside a LoRA adapter's bf16 base on a GPU)
        train_dtype = next(p for p in self.model.parameters() if p.requires_grad).dtype
        self.critic = self.critic_optimizer = None
        if self.algorithm.needs_critic:  # the value model: PPO's fourth model (trained whole)
            from grpo_kit.train.value import ValueModel

            self.critic = ValueModel.load(algo.value.model or cfg.model.path, train_dtype, self.device)
        if self.world.distributed:  # FSDP2: each rank keeps 1/N of every model
            d = cfg.distributed
            shard = dict(mixed_precision=d.mixed_precision if d.mixed_precision is not None
                         else self.device.type == "cuda", cpu_offload=d.cpu_offload,
                         reshard_after_forward=d.reshard_after_forward)
            for m in (self.model, self.ref_model, self.critic):
                if isinstance(m, torch.nn.Module):  # not the adapter-disabled view of the policy
                    dist.shard_model(m, **shard)
        o = cfg.optim
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=o.lr,
                                           betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
        N = cfg.train.prompts_per_step * cfg.sampling.n
        total_updates = cfg.train.steps * algo.epochs * (N // cfg.minibatch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg, total_updates))
        if self.critic is not None:
            self.critic_optimizer = torch.optim.AdamW(self.critic.parameters(), lr=algo.value.lr,
                                                      betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
        self.kl_ctl = self.algorithm.kl_controller()
        self.sampler = make_sampler(cfg.sampler, self.model, self.tokenizer, cfg.sampling,
                                    logprobs=self.algorithm.needs_sampler_logprobs, model_path=cfg.model.path,
                                    engine=cfg.vllm)
        self.cursor = PromptCursor(len(self.dataset), cfg.train.seed)
        self.step = 0
        if resume:
            self._resume()
        if self.world.is_main:
            (self.run_dir / "config.yaml").write_text(dump_config(cfg))
        self.scorer = Scorer(self.rewards, cfg.scoring)
        # rank 0 alone writes metrics, samples, TensorBoard / W&B and the progress bar
        self.logger = (RunLogger(self.run_dir, cfg.run.report_to, cfg.model_dump(mode="json"), self.step)
                       if self.world.is_main else None)
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ resume / save
    def _resume(self) -> None:
        found = ckpt.list_checkpoints(self.run_dir)
        if not found:
            self._say(f"no checkpoint in {self.run_dir}; starting from step 0")
            return
        last = found[-1]
        st = ckpt.load_trainer_state(last)
        if ckpt.is_sharded_checkpoint(last):
            self._resume_sharded(last)
        elif self.world.distributed:
            raise ConfigError(f"{last} was written by a single process (a Hugging Face folder); resume it "
                              "without torchrun, or start a new run from it with model.path")
        else:
            self._resume_single(last, st)
        self.scheduler.load_state_dict(st["scheduler"])
        self.cursor.load(st["cursor"])
        self.kl_ctl.beta = st["kl_beta"]
        if "rng" in st:
            ckpt.set_rng_state(st["rng"])
        self.step = st["step"]
        self.sampler.sync_weights(self.model)
        self._say(f"resumed from {last} (step {self.step})")

    def _resume_single(self, last: Path, st: dict[str, Any]) -> None:
        from transformers import AutoModelForCausalLM

        if self.cfg.model.lora is not None:
            if not ckpt.is_lora_checkpoint(last):
                raise ConfigError(f"{last} holds a whole model, not a LoRA adapter; drop model.lora to resume it")
            load_adapter(self.model, last)
        else:
            if ckpt.is_lora_checkpoint(last):
                raise ConfigError(f"{last} holds a LoRA adapter; resume it with the run's model.lora settings")
            loaded = AutoModelForCausalLM.from_pretrained(last, dtype=next(self.model.parameters()).dtype)
            self.model.load_state_dict(loaded.state_dict())
        self.optimizer.load_state_dict(st["optimizer"])
        if self.critic is not None:
            from grpo_kit.train.value import ValueModel

            saved = ValueModel.load(str(last / "value_model"), next(self.critic.parameters()).dtype, self.device)
            self.critic.load_state_dict(saved.state_dict())
            self.critic_optimizer.load_state_dict(st["critic_optimizer"])

    def _state_options(self):
        """The policy's state-dict options: with LoRA only the trainable weights (the adapter; the
        frozen base is ``model.path``'s)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        lora = self.cfg.model.lora is not None
        return StateDictOptions(ignore_frozen_params=lora, strict=not lora)  # LoRA: the base is not in it

    def _sharded_states(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        states = dict(zip(("model", "optimizer"), get_state_dict(self.model, self.optimizer,
                                                                 options=self._state_options())))
        if self.critic is not None:
            states.update(zip(("value_model", "value_optimizer"), get_state_dict(self.critic, self.critic_optimizer)))
        return states

    def _resume_sharded(self, last: Path) -> None:
        from torch.distributed.checkpoint.state_dict import set_state_dict

        states = self._sharded_states()
        ckpt.load_sharded(last, self.world, states)
        loaded = set_state_dict(self.model, self.optimizer, model_state_dict=states["model"],
                                optim_state_dict=states["optimizer"], options=self._state_options())
        trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
        if loaded is not None and trainable & set(loaded.missing_keys):
            raise ConfigError(f"{last} lacks trainable weights of this model: "
                              f"{sorted(trainable & set(loaded.missing_keys))[:3]}")
        if self.critic is not None:
            set_state_dict(self.critic, self.critic_optimizer, model_state_dict=states["value_model"],
                           optim_state_dict=states["value_optimizer"])

    def save(self) -> Path:
        state = {"scheduler": self.scheduler.state_dict(), "cursor": self.cursor.state(), "kl_beta": self.kl_ctl.beta}
        if self.world.distributed:
            main_writes = None
            if self.cfg.model.lora is not None:  # the adapter in peft's format too, gathered on rank 0
                adapter = full_adapter_state(self.model)
                main_writes = lambda d: self.model.save_pretrained(d, state_dict=adapter)  # noqa: E731
            return ckpt.save_sharded(self.run_dir, self.step, self.world, self._sharded_states(), self.tokenizer,
                                     self.model.config, state, self.cfg.train.keep_last,
                                     generation_config=self.model.generation_config, main_writes=main_writes)
        state["optimizer"] = self.optimizer.state_dict()
        extra = None
        if self.critic is not None:
            state["critic_optimizer"] = self.critic_optimizer.state_dict()
            extra = {"value_model": self.critic.save}
        return ckpt.save_checkpoint(self.run_dir, self.step, self.model, self.tokenizer, state,
                                    self.cfg.train.keep_last, extra=extra)

    def _say(self, msg: str, *, every_rank: bool = False) -> None:
        """A line on stderr from rank 0 (``every_rank``: from each rank, naming it)."""
        if every_rank and self.world.size > 1:
            print(f"grpo-kit train [rank {self.world.rank}]: {msg}", file=sys.stderr)
        elif self.world.is_main:
            print(f"grpo-kit train: {msg}", file=sys.stderr)

    # ------------------------------------------------------------------ sample + score
    def _seed(self, step: int, round_: int) -> int:
        base = self.cfg.sampling.seed if self.cfg.sampling.seed is not None else self.cfg.train.seed
        return (base * 1_000_003 + step * 1009 + round_) % (2**31)

    def sample(self, rows: list[dict[str, Any]], seed: int, keys: list[int] | None = None) -> RolloutBatch:
        """G completions for each dataset row, attributed to its prompt and columns; ``keys`` seed
        each prompt (see :func:`~grpo_kit.rollout.base.prompt_seed`)."""
        prompt_ids = [encode_prompt(self.tokenizer, r["prompt"]) for r in rows]
        rb = self.sampler.sample(prompt_ids, seed, keys)
        columns = {k: [r.get(k) for r in rows] for k in sorted({k for r in rows for k in r} - {"prompt"})}
        return rb.with_prompts([r["prompt"] for r in rows], columns, policy_version=self.step)

    def score(self, rb: RolloutBatch) -> None:
        self.scorer.score_batch(rb)
        self._report_reward_errors(rb.reward_errors)

    def _report_reward_errors(self, errors: dict[str, list]) -> None:
        for name, errs in errors.items():
            bad = [e for e in errs if e is not None]
            if bad and name not in self._warned:
                self._warned.add(name)
                self._say(f"reward {name!r} failed on {len(bad)}/{len(errs)} completions at step "
                          f"{self.step + 1}: {bad[0]} (counted in metrics as rewards/{name}/errors; "
                          "further failures of this reward are only counted)", every_rank=True)

    def sample_and_score(self, idx: list[int], seed: int) -> tuple[RolloutBatch, float, float]:
        """The scored groups of the dataset rows ``idx``, in that order, and the seconds spent
        sampling and scoring. Under data parallelism each rank samples and scores its contiguous
        share and the shares are gathered, so every rank holds the same whole record (token ids
        and scores, not tensors)."""
        mine = list(self.world.share(len(idx)))
        # a rank with no prompt this round still samples one (the round's first) and drops it:
        # the hf sampler's sharded forward passes need every rank
        keys = mine or [0]
        t0 = time.perf_counter()
        rb = self.sample([self.dataset[idx[k]] for k in keys], seed, keys)
        t1 = time.perf_counter()
        if mine:
            self.score(rb)
        else:
            rb = rb.select_groups([])
        if self.world.size > 1:
            parts = [RolloutBatch.from_dict(p) for p in self.world.gather_objects(rb.to_dict())]
            rb = RolloutBatch.concat([p for p in parts if p.num_groups])
        return rb, t1 - t0, time.perf_counter() - t1

    def collect(self, step: int) -> tuple[RolloutBatch, dict[str, float]]:
        """B scored groups; with dynamic sampling, groups without signal (the algorithm's skip rule)
        are replaced by fresh ones for up to ``max_sampling_rounds`` rounds, then the batch is filled
        with them. The same on every rank (each samples and scores a share of each round)."""
        algo, B = self.cfg.algorithm, self.cfg.train.prompts_per_step
        kept: list[RolloutBatch] = []
        dropped: list[RolloutBatch] = []
        n_kept = 0
        t_sample = t_score = 0.0
        rounds = algo.max_sampling_rounds if algo.dynamic_sampling else 1
        for r in range(rounds):
            rb, ts, tc = self.sample_and_score(self.cursor.take(B - n_kept), self._seed(step, r))
            t_sample, t_score = t_sample + ts, t_score + tc
            has_signal = [self.algorithm.group_has_signal([rb.reward[i] for i in g]) for g in rb.groups()]
            keep = [b for b, ok in enumerate(has_signal) if ok or not algo.dynamic_sampling]
            kept.append(rb.select_groups(keep) if len(keep) < rb.num_groups else rb)
            dropped.append(rb.select_groups([b for b in range(rb.num_groups) if b not in keep]))
            n_kept += len(keep)
            if n_kept >= B:
                break
        filled = max(0, B - n_kept)
        spare = RolloutBatch.concat(dropped)
        batch = RolloutBatch.concat(kept + [spare.select_groups(range(min(filled, spare.num_groups)))])
        return batch, {"time/sample": t_sample, "time/score": t_score, "dynamic/rounds": r + 1,
                       "dynamic/filled_groups": filled if algo.dynamic_sampling else 0}

    # ------------------------------------------------------------------ the step
    def train_step(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        step = self.step + 1
        rb, metrics = self.collect(step)  # the whole step's record, on every rank
        mine = rb.select_groups(self.world.share(rb.num_groups)) if self.world.size > 1 else rb
        batch = make_batch(mine, self.tokenizer.pad_token_id, self.device)  # this rank's groups
        no_signal = self.algorithm.no_signal_fraction(rb.reward, rb.groups())
        if no_signal == 1.0:
            metrics["skipped"] = ("no group has a learning signal (every group's rewards are equal, or "
                                  "no completion has a reward)")
            metrics["time/update"] = 0.0
        else:
            t1 = time.perf_counter()
            gen = torch.Generator().manual_seed(self._seed(step, 99))
            metrics.update(policy_update(self.model, self.ref_model, self.optimizer, self.scheduler, batch,
                                         self.cfg, self.algorithm, autocast=self.autocast, beta=self.kl_ctl.beta,
                                         generator=gen, critic=self.critic,
                                         critic_optimizer=self.critic_optimizer, world=self.world,
                                         layout=self._layout(rb, batch)))
            metrics["time/update"] = time.perf_counter() - t1
            self.sampler.sync_weights(self.model)
            if "kl/sequence" in metrics:  # Ziegler et al.'s units: KL per sequence, n = sequences
                self.kl_ctl.update(metrics["kl/sequence"], rb.size)
        self.step = step
        metrics.update(step_metrics(rb, no_signal))
        metrics["kl/beta"] = self.kl_ctl.beta
        metrics["time/step"] = time.perf_counter() - t0
        metrics["tokens_per_s"] = sum(map(len, rb.completion_ids)) / metrics["time/step"]
        row = {"step": step, **{k: metrics[k] for k in sorted(metrics)}}
        if self.logger is not None:
            self.logger.log(row)
            if self.cfg.train.samples_every and step % self.cfg.train.samples_every == 0:
                self.logger.samples(step, rb)
        return row

    def _layout(self, rb: RolloutBatch, batch) -> Layout:
        """Which rank holds which of the step's rows: contiguous shares of whole groups."""
        if self.world.size == 1:
            return Layout.single(batch)
        G, W = self.cfg.sampling.n, self.world.size
        owner = [r for r in range(W) for _ in range(len(dist.World(r, W).share(rb.num_groups)) * G)]
        return Layout(torch.tensor(owner), self.world.rank, Masks.of(rb, self.device))

    def train(self) -> Path:
        """Run to ``train.steps``. Ctrl-C (SIGINT) finishes the current step, saves a checkpoint and
        raises KeyboardInterrupt; a second Ctrl-C stops at once."""
        from tqdm import tqdm

        c = self.cfg.train
        bar = tqdm(total=c.steps, initial=self.step, desc="train", unit="step", file=sys.stderr,
                   disable=not (self.cfg.run.progress and self.world.is_main), dynamic_ncols=True)
        stop = []

        def on_sigint(signum, frame):
            if stop:
                raise KeyboardInterrupt
            stop.append(True)
            self._say("interrupt: finishing this step, then saving a checkpoint (Ctrl-C again to stop at once)")

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            while self.step < c.steps and not self._any(stop):
                row = self.train_step()
                bar.update(1)
                bar.set_postfix(reward=f"{row['reward/mean']:.3f}", refresh=False)
                if c.save_every and self.step % c.save_every == 0:
                    self.save()
            if stop:
                bar.close()
                path = self.save()
                self._say(f"checkpoint saved at {path}; continue with --resume")
                raise KeyboardInterrupt
            if not c.save_every or self.step % c.save_every:
                self.save()
        finally:
            signal.signal(signal.SIGINT, previous)
            bar.close()
            self.close()
        return self.run_dir

    def _any(self, flag: list) -> bool:
        """Whether ``flag`` is set on any rank (an interrupt reaches torchrun's ranks one by one):
        every rank then stops after the same step."""
        return bool(self.world.max(torch.tensor(int(bool(flag)))))

    def close(self) -> None:
        self.scorer.close()
        if self.logger is not None:
            self.logger.close()


def step_metrics(rb: RolloutBatch, no_signal: float) -> dict[str, float]:
    """Reward and length statistics of the step's completions."""
    out: dict[str, float] = {"zero_variance_groups": no_signal}
    arr = np.array([r for r in rb.reward if r is not None], dtype=np.float64)
    out["reward/mean"] = float(arr.mean()) if len(arr) else float("nan")
    out["reward/std"] = float(arr.std()) if len(arr) else float("nan")
    failed = [any(e[i] is not None for e in rb.reward_errors.values()) for i in range(rb.size)]
    out["reward/excluded"] = sum(f and r is None for f, r in zip(failed, rb.reward))  # on_error: exclude
    for name, scores in rb.rewards.items():
        vals = [v for v in scores if v is not None]
        errs = [e for e in rb.reward_errors.get(name, []) if e is not None]
        out[f"rewards/{name}/mean"] = float(np.mean(vals)) if vals else float("nan")
        out[f"rewards/{name}/none"] = sum(v is None for v in scores) - len(errs)
        out[f"rewards/{name}/errors"] = sum(not e.startswith("timeout") for e in errs)
        out[f"rewards/{name}/timeouts"] = sum(e.startswith("timeout") for e in errs)
    lens = np.array([len(c) for c in rb.completion_ids], dtype=np.float64)
    out["completion/length_mean"] = float(lens.mean())
    out["completion/length_max"] = float(lens.max())
    out["completion/truncated_frac"] = float(np.mean(rb.truncated))
    return out
