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
from collections import deque
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
from grpo_kit.lora import AdapterDisabled, full_adapter_state, hf_weights, parameter_counts
from grpo_kit.records import RolloutBatch
from grpo_kit.rollout import make_sampler
from grpo_kit.scoring import Scorer
from grpo_kit.train import checkpoint as ckpt
from grpo_kit.train.algorithm import Algorithm
from grpo_kit.train.batch import Masks, fused_head, make_batch
from grpo_kit.train.config import TrainConfig
from grpo_kit.train.logger import RunLogger
from grpo_kit.train.models import keep_freed_memory, load_policy
from grpo_kit.train.pipeline import AsyncRollouts, check_staleness, snapshot
from grpo_kit.train.rollouts import PromptCursor, Rollouts, step_seed
from grpo_kit.train.update import Layout, policy_update
from tasks import get_task


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
        if cfg.train.shared_prefix is True and self.world.size > 1:
            raise ConfigError("train.shared_prefix does not run under torchrun yet: the prompts' keys and values "
                              "carry their gradient through the cache, outside the layers' outputs, where FSDP2's "
                              "backward hooks do not see it (a layer is resharded before that gradient reaches it); "
                              "set train.shared_prefix: false")
        if self.world.size > cfg.train.prompts_per_step:
            raise ConfigError(f"train.prompts_per_step = {cfg.train.prompts_per_step} is less than the "
                              f"{self.world.size} ranks: each rank needs at least one prompt group")
        if self.world.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.world.barrier()
        self.async_level = cfg.train.async_level
        self._sampler_threads = cfg.train.sampler_threads
        if cfg.train.torch_threads:  # a machine's threads, shared by the ranks torchrun starts on it
            T = cfg.train.torch_threads
            if self.async_level:  # and by the rollout process
                self._sampler_threads = self._sampler_threads or max(1, T // 2)
                T = max(1, T - self._sampler_threads)
            per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            torch.set_num_threads(max(1, T // per_node))
        torch.manual_seed(cfg.train.seed)  # the same on every rank: new heads start equal everywhere
        self.task = get_task(cfg.task)
        self.dataset = self.task.load("train")
        self.rewards = cfg.rewards if cfg.rewards is not None else self.task.default_rewards
        self.model, self.tokenizer, self.device, self.autocast = load_policy(cfg.model, self.world.local_rank)
        keep_freed_memory(cfg.train.keep_freed_memory, self.device)
        checkpointing = getattr(self.model, "is_gradient_checkpointing", False)
        if cfg.train.shared_prefix is True and checkpointing:
            raise ConfigError("train.shared_prefix continues each completion from its prompt's key/value cache, "
                              "which gradient checkpointing drops (on a GPU it is on by default): set "
                              "model.gradient_checkpointing: false")
        if cfg.train.shared_prefix == "auto":  # resolved here, for the update and the rollout process
            layers = getattr(self.model.config.get_text_config(), "layer_types", None) or ["full_attention"]
            on = (self.world.size == 1 and not cfg.train.packing and not checkpointing
                  and all(t == "full_attention" for t in layers))
            self.cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"shared_prefix": on})})
        if cfg.train.logprobs == "fused":
            fused_head(self.model)  # a plain nn.Linear head, or a config error now rather than at step 1
        algo = cfg.algorithm
        self.algorithm = Algorithm(algo, max_new_tokens=cfg.sampling.max_new_tokens)
        trainable, total = parameter_counts(self.model)
        self._say(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)"
                  + (" (LoRA adapter)" if cfg.model.lora is not None else ""))
        self.ref_model = None
        if cfg.train.ref_in_rollout:  # the rollout process holds the reference and sends its log-probs
            pass
        elif algo.kl.beta > 0 and cfg.model.lora is not None:  # the same weights, adapter off: no copy
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
        # synchronous: sampler and scorer here; asynchronous: in the rollout process (pipeline.py)
        self.sampler = self.scorer = self.rollouts = self.pipeline = None
        if not self.async_level:
            self.sampler = make_sampler(cfg.sampler, self.model, self.tokenizer, cfg.sampling,
                                        logprobs=self.algorithm.needs_sampler_logprobs, model_path=cfg.model.path,
                                        engine=cfg.vllm, tools=cfg.tools)
            self.scorer = Scorer(self.rewards, cfg.scoring)
            self.rollouts = Rollouts(cfg, self.dataset, self.tokenizer, self.sampler, self.scorer, self.algorithm,
                                     self.world, self._say)
        self._pending: deque[dict[str, Any]] = deque()  # a checkpoint's rollouts of the next steps
        self._cursor_state = PromptCursor(len(self.dataset), cfg.train.seed).state()  # async: the stream's
        self.step = 0
        if resume:
            self._resume()
        if self.world.is_main:
            (self.run_dir / "config.yaml").write_text(dump_config(cfg))
        self._v0 = self.step  # the weights the rollout process starts from
        self._async_active = bool(self.async_level) and self.step + len(self._pending) < cfg.train.steps
        if self._async_active:
            self._start_pipeline()
        # rank 0 alone writes metrics, samples, TensorBoard / W&B and the progress bar
        self.logger = (RunLogger(self.run_dir, cfg.run.report_to, cfg.model_dump(mode="json"), self.step)
                       if self.world.is_main else None)

    # ------------------------------------------------------------------ resume / save
    def _resume(self) -> None:
        got = ckpt.last_checkpoint(self.run_dir, self._say)
        if got is None:
            return
        last, st = got
        if ckpt.is_sharded_checkpoint(last):
            self._resume_sharded(last)
        elif self.world.distributed:
            raise ConfigError(f"{last} was written by a single process (a Hugging Face folder); resume it "
                              "without torchrun, or start a new run from it with model.path")
        else:
            self._resume_single(last, st)
        self.scheduler.load_state_dict(st["scheduler"])
        self._cursor_state = st["cursor"]
        if self.rollouts is not None:
            self.rollouts.cursor.load(st["cursor"])
        self._pending = deque(st.get("in_flight", []))
        self._check_in_flight(last)
        self.kl_ctl.beta = st["kl_beta"]
        if "rng" in st:
            ckpt.set_rng_state(st["rng"])
        self.step = st["step"]
        if self.sampler is not None:
            self.sampler.sync_weights(self.model)
        self._say(f"resumed from {last} (step {self.step})" + (f", with the rollouts of {len(self._pending)} "
                  "more steps sampled before it was saved" if self._pending else ""))

    def _check_in_flight(self, last: Path) -> None:
        """The checkpoint's rollouts of the next steps must be within this run's ``max_staleness``."""
        limit = self._max_staleness()
        for s, msg in enumerate(self._pending, start=ckpt.load_trainer_state(last)["step"] + 1):
            old = (s - 1) - msg["record"]["policy_version"]
            if old > limit:
                raise ConfigError(f"{last} holds the rollouts of step {s}, sampled {old} versions before "
                                  f"the weights that step updates (train.async_level was {old} in the run "
                                  f"that saved it); resume with train.async_level: {old} (or max_staleness >= {old})")

    def _max_staleness(self) -> int:
        t = self.cfg.train
        return t.max_staleness if t.max_staleness is not None else t.async_level

    @property
    def cursor(self) -> PromptCursor:
        return self.rollouts.cursor

    def _start_pipeline(self) -> None:
        """Start the rollout process (rank 0) and send it the weights it starts from (every rank
        takes part in gathering them)."""
        start = self.step + len(self._pending) + 1
        self._pipeline_start = start
        if self.world.is_main:
            self.pipeline = AsyncRollouts(self.cfg, start=start, version=self.step, cursor=self._cursor_state,
                                          threads=self._sampler_threads, say=self._say)
        self._publish(self.step)

    def _resume_single(self, last: Path, st: dict[str, Any]) -> None:
        from transformers import AutoModelForCausalLM

        ckpt.load_model_weights(self.model, last, lora=self.cfg.model.lora is not None, auto_class=AutoModelForCausalLM)
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

    def _in_flight(self) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """The rollouts of the steps after this one already sampled (saved with a checkpoint, so a
        resumed run uses exactly them), and the prompt stream's position after them."""
        held = list(self._pending)
        upto = min(self.step + self.async_level, self.cfg.train.steps)
        if self.pipeline is not None and upto > self.step and upto >= self._pipeline_start:
            held += self.pipeline.peek(upto)
        cursor = held[-1]["cursor"] if held else (self.rollouts.cursor.state() if self.rollouts is not None
                                                  else self._cursor_state)
        return held, cursor

    def save(self) -> Path:
        in_flight, cursor = self._in_flight()
        state = {"scheduler": self.scheduler.state_dict(), "cursor": cursor, "kl_beta": self.kl_ctl.beta,
                 "in_flight": in_flight}
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
        return step_seed(self.cfg, step, round_)

    def collect(self, step: int) -> tuple[RolloutBatch, dict[str, float]]:
        """The scored groups of ``step`` sampled here with the current weights (synchronous runs;
        see :meth:`~grpo_kit.train.rollouts.Rollouts.collect`)."""
        return self.rollouts.collect(step, version=self.step)

    def _rollouts_of(self, step: int) -> tuple[RolloutBatch, dict[str, float]]:
        """The step's record: a checkpoint's, the rollout process's, or sampled here."""
        if not self._pending and not self.async_level:
            return self.collect(step)
        waited = 0.0
        if self._pending:
            msg = self._pending.popleft()
        else:
            msg, waited = self.pipeline.take(step) if self.pipeline is not None else (None, 0.0)
            msg = self.world.broadcast_object(msg)  # rank 0's, to every rank
        self._cursor_state = msg["cursor"]
        metrics = dict(msg["metrics"])
        metrics["async/wait_trainer_s"] = waited
        return RolloutBatch.from_dict(msg["record"]), metrics

    def _publish(self, version: int) -> dict[str, float]:
        """Give the sampler the weights after step ``version``: in place (synchronous), or a CPU
        copy sent to the rollout process, when it will use it (the last k versions it never does)."""
        t0 = time.perf_counter()
        if not self.async_level:
            self.sampler.sync_weights(self.model)
            return {"time/weight_sync": time.perf_counter() - t0}
        if not self._async_active or (version != self._v0 and version > self.cfg.train.steps - 1 - self.async_level):
            return {"time/weight_sync": 0.0}
        tensors = snapshot(hf_weights(self.model), keep=self.pipeline is not None)
        t1 = time.perf_counter()
        waited = self.pipeline.push(tensors, version) if self.pipeline is not None else 0.0
        return {"time/weight_sync": t1 - t0, "async/wait_trainer_s": waited}

    # ------------------------------------------------------------------ the step
    def train_step(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        step = self.step + 1
        rb, metrics = self._rollouts_of(step)  # the whole step's record, on every rank
        if self.async_level:
            metrics["async/staleness_mean"] = metrics["async/staleness_max"] = check_staleness(
                step, self.step, rb.policy_version, self._max_staleness())
        mine = rb.select_groups(self.world.share(rb.num_groups)) if self.world.size > 1 else rb
        batch = make_batch(mine, self.tokenizer.pad_token_id, self.device, self._reward_weights)  # this rank's groups
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
            if not self.async_level:
                metrics.update(self._publish(step))
            if "kl/sequence" in metrics:  # Ziegler et al.'s units: KL per sequence, n = sequences
                self.kl_ctl.update(metrics["kl/sequence"], rb.size)
        if self.async_level:  # the next version is due even when the weights did not change
            pushed = self._publish(step)
            metrics["async/wait_trainer_s"] += pushed.pop("async/wait_trainer_s", 0.0)
            metrics.update(pushed)
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
        return Layout(torch.tensor(owner), self.world.rank, Masks.of(rb, self.device, self._reward_weights))

    @property
    def _reward_weights(self) -> dict[str, float] | None:
        """label -> weight of each reward, when the advantages are normalised per reward."""
        if getattr(self.cfg.algorithm, "reward_norm", "combined") != "per_reward":
            return None
        return {r.key: r.weight for r in self.rewards}

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
        if self.pipeline is not None:
            self.pipeline.close()
        if self.scorer is not None:
            self.scorer.close()
        if hasattr(self.sampler, "close"):
            self.sampler.close()
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
