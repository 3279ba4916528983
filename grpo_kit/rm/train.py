"""`grpo-kit rm train`: a Bradley-Terry reward model trained on preference pairs.

    trainer = RMTrainer(cfg, run_dir)
    model_dir = trainer.train()

Each step takes ``train.batch_size`` pairs (a seeded permutation per epoch, resumable), scores the
chosen and rejected inputs in one forward pass (micro-batches of ``train.micro_batch_size`` pairs,
gradients accumulated, the loss divided by the step's pairs), and minimises
``-log sigmoid(r_c - r_r - margin) + center_coef * (r_c + r_r)^2`` (Ouyang et al. 2022; the margin
of Llama 2; the centering of Eisenstein et al. 2023) with AdamW and ``train``'s warmup/cosine
schedule. As in TRL's ``RewardTrainer`` and OpenRLHF's ``train_rm``, a causal LM gets a new scalar
head (``AutoModelForSequenceClassification`` with one label; transformers initialises it). Every
``eval_every`` steps and at the end: pairwise accuracy, margin and reward statistics on
``data.test``. Checkpoints (model or LoRA adapter, optimizer, scheduler, RNG, data position)
resume as ``train``'s do. The result, ``RUN_DIR/model``, is a plain
``AutoModelForSequenceClassification`` folder (a LoRA adapter merged into it) with its tokenizer,
``pad_token_id`` set, and ``reward_stats.json``: the reward mean/std on the evaluation pairs, for
normalisation.

Under torchrun (W ranks, :mod:`grpo_kit.dist`) the model is sharded with FSDP2 as ``train``'s
policy is. Every rank draws the same ``batch_size`` pairs and takes a contiguous ``batch_size / W``
of them (a multiple of W, checked at start); each rank's loss is divided by the step's pairs of all
ranks and FSDP sums the gradients, so the step is the one-process step; the logged metrics are
summed over the ranks. An evaluation scores a share of the pairs on each rank with the weights
gathered (:func:`grpo_kit.dist.gathered`) and collects every score, so its statistics are the one
process's. Checkpoints are ``torch.distributed.checkpoint`` shards (see
:mod:`grpo_kit.train.checkpoint`; they resume on any number of ranks), and rank 0 writes
``RUN_DIR/model`` from the gathered weights while the others wait at a barrier. Every collective
waits at most ``distributed.timeout_s``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from grpo_kit import dist
from grpo_kit.algorithms.preference import bradley_terry_loss
from grpo_kit.config import dump_config
from grpo_kit.errors import ConfigError
from grpo_kit.hub import load_pretrained
from grpo_kit.lora import full_adapter_state, hf_weights, is_peft, parameter_counts
from grpo_kit.rm.config import RMConfig
from grpo_kit.rm.data import encode_pairs, read_pairs
from grpo_kit.rm.stats import pair_stats
from grpo_kit.train import checkpoint as ckpt
from grpo_kit.train.config import ModelConfig
from grpo_kit.train.logger import RunLogger
from grpo_kit.train.models import load_tokenizer, pick_device
from grpo_kit.train.rollouts import PromptCursor
from grpo_kit.train.trainer import lr_lambda

STATS_FILE = "reward_stats.json"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# --------------------------------------------------------------------------- the model


def check_world_size(cfg: RMConfig, world_size: int) -> None:
    """Each of ``world_size`` ranks needs an equal share of every step's pairs (FSDP: every rank
    runs as many forward passes as the others)."""
    B = cfg.train.batch_size
    if B % world_size:
        lower, upper = B // world_size * world_size, -(-B // world_size) * world_size
        raise ConfigError(f"train.batch_size = {B} pairs cannot be split evenly over {world_size} ranks: "
                          f"set it to a multiple of {world_size} (e.g. {upper}" + (f" or {lower}" if lower else "")
                          + "), or run on a number of ranks that divides it")


def _dtype(cfg: ModelConfig) -> torch.dtype:
    return torch.float32 if cfg.dtype == "auto" else _DTYPES[cfg.dtype]


def load_reward_model(cfg: ModelConfig, seed: int, local_rank: int = 0):
    """``(model, tokenizer, device)``: ``cfg.path`` as an ``AutoModelForSequenceClassification``
    with one label (a causal LM gets a new head, initialised under ``seed``), ``pad_token_id``
    set from the tokenizer; a LoRA adapter when ``cfg.lora`` is set (the head trained whole).
    ``local_rank``: the GPU of this rank under torchrun."""
    device = pick_device(cfg.device, local_rank)
    dtype = _dtype(cfg)
    tok = load_pretrained(load_tokenizer, cfg.path, setting="model.path", what="a tokenizer")

    def seq_cls(path: str):
        from transformers import AutoConfig, AutoModelForSequenceClassification

        config = AutoConfig.from_pretrained(path)
        is_cls = any(a.endswith("ForSequenceClassification") for a in config.architectures or [])
        if is_cls and config.num_labels != 1:
            raise ConfigError(f"model.path {path!r} is a classifier with {config.num_labels} labels; a reward "
                              "model has one (a scalar): start from its causal LM, or a 1-label checkpoint")
        extra = {"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {}
        torch.manual_seed(seed)  # the new head's initialisation
        return AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype, **extra)

    model = load_pretrained(seq_cls, cfg.path, setting="model.path", what="a sequence classifier")
    model.config.pad_token_id = tok.pad_token_id  # the head reads the last token that is not padding
    model.config.architectures = [type(model).__name__]  # a sharded checkpoint's config.json: this class
    model.to(device)
    if cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else device.type == "cuda":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora is not None:
        from grpo_kit.lora import apply_lora

        model = apply_lora(model, **cfg.lora.model_dump(), task_type="SEQ_CLS")
    return model, tok, device


def score_ids(model, seqs: list[list[int]], pad_id: int, device, autocast: bool = False) -> torch.Tensor:
    """The scalar rewards ``[n]`` of token-id sequences (right-padded into one batch)."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)  # [n, T]
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # [n, 1]
    return logits[:, 0].float()


# --------------------------------------------------------------------------- the trainer


class RMTrainer:
    def __init__(self, cfg: RMConfig, run_dir: Path, *, resume: bool = False):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.world = dist.init_distributed(cfg.distributed.timeout_s)  # a single process without torchrun
        check_world_size(cfg, self.world.size)
        if self.world.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.world.barrier()
        if cfg.train.torch_threads:  # a machine's threads, shared by the ranks torchrun starts on it
            per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            torch.set_num_threads(max(1, cfg.train.torch_threads // per_node))
        d = cfg.data
        self.train_pairs = read_pairs(d.train, d.train_split)
        self.test_pairs = read_pairs(d.test, d.test_split) if d.test else None
        self.model, self.tokenizer, self.device = load_reward_model(cfg.model, cfg.train.seed, self.world.local_rank)
        self.autocast = (cfg.model.autocast if cfg.model.autocast is not None else self.device.type == "cuda")
        self.pad = self.tokenizer.pad_token_id
        self.train_ids = encode_pairs(self.tokenizer, self.train_pairs, d.max_length)
        self.test_ids = encode_pairs(self.tokenizer, self.test_pairs, d.max_length) if self.test_pairs else None
        trainable, total = parameter_counts(self.model)
        self._say(f"{len(self.train_pairs)} training pairs, {len(self.test_pairs or [])} test pairs; trainable "
                  f"parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)"
                  + (" (LoRA adapter and head)" if cfg.model.lora is not None else ""))
        if self.world.distributed:  # FSDP2, as train's policy: each rank keeps 1/W of the weights
            dd = cfg.distributed
            dist.shard_model(self.model, mixed_precision=dd.mixed_precision if dd.mixed_precision is not None
                             else self.device.type == "cuda", cpu_offload=dd.cpu_offload,
                             reshard_after_forward=dd.reshard_after_forward)
        t, o = cfg.train, cfg.optim
        self.steps = t.steps or max(1, round(t.epochs * len(self.train_pairs) / t.batch_size))
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=o.lr,
                                           betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg, self.steps))
        self.cursor = PromptCursor(len(self.train_pairs), t.seed)  # the same order on every rank
        self.step = 0
        if resume:
            self._resume()
        # rank 0 alone writes the config and the metrics
        if self.world.is_main:
            (self.run_dir / "config.yaml").write_text(dump_config(cfg))
        self.logger = (RunLogger(self.run_dir, cfg.run.report_to, cfg.model_dump(mode="json"), self.step)
                       if self.world.is_main else None)

    # ------------------------------------------------------------------ resume / save
    def _resume(self) -> None:
        got = ckpt.last_checkpoint(self.run_dir, self._say)
        if got is None:
            return
        last, st = got
        if ckpt.is_sharded_checkpoint(last):  # written under torchrun: resumes on any number of ranks
            self._resume_sharded(last)
        elif self.world.distributed:
            raise ConfigError(f"{last} was written by a single process (a Hugging Face folder); resume it "
                              "without torchrun, or start a new run from it with model.path")
        else:
            from transformers import AutoModelForSequenceClassification

            ckpt.load_model_weights(self.model, last, lora=self.cfg.model.lora is not None,
                                    auto_class=AutoModelForSequenceClassification)
            self.optimizer.load_state_dict(st["optimizer"])
            ckpt.set_rng_state(st["rng"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.cursor.load(st["cursor"])
        self.step = st["step"]
        self._say(f"resumed from {last} (step {self.step})")

    def _state_options(self):
        """With LoRA only the trainable weights (the adapter and the head; the base is ``model.path``'s)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        lora = self.cfg.model.lora is not None
        return StateDictOptions(ignore_frozen_params=lora, strict=not lora)

    def _sharded_states(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        return dict(zip(("model", "optimizer"), get_state_dict(self.model, self.optimizer,
                                                               options=self._state_options())))

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

    def save(self) -> Path:
        state = {"scheduler": self.scheduler.state_dict(), "cursor": self.cursor.state()}
        if self.world.distributed:
            main_writes = None
            if self.cfg.model.lora is not None:  # the adapter in peft's format too, gathered on rank 0
                adapter = full_adapter_state(self.model)
                main_writes = lambda d: self.model.save_pretrained(d, state_dict=adapter)  # noqa: E731
            return ckpt.save_sharded(self.run_dir, self.step, self.world, self._sharded_states(), self.tokenizer,
                                     self.model.config, state, self.cfg.train.keep_last, main_writes=main_writes)
        state["optimizer"] = self.optimizer.state_dict()
        return ckpt.save_checkpoint(self.run_dir, self.step, self.model, self.tokenizer, state,
                                    self.cfg.train.keep_last)

    def _say(self, msg: str) -> None:
        if self.world.is_main:
            print(f"grpo-kit rm train: {msg}", file=sys.stderr)

    # ------------------------------------------------------------------ step / eval
    def train_step(self) -> dict[str, Any]:
        """One optimizer step on the next ``batch_size`` pairs (this rank's contiguous share of them)."""
        t = self.cfg.train
        idx = self.cursor.take(t.batch_size)  # the step's pairs, the same on every rank
        mine = [idx[i] for i in self.world.share(len(idx))]
        micro = t.micro_batch_size or len(mine)
        chosen_ids, rejected_ids = self.train_ids
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        sums = {"loss": 0.0, "accuracy": 0.0, "margin_mean": 0.0, "reward_mean": 0.0}
        for start in range(0, len(mine), micro):
            part = mine[start:start + micro]
            r = score_ids(self.model, [chosen_ids[i] for i in part] + [rejected_ids[i] for i in part],
                          self.pad, self.device, self.autocast)  # [2m]: chosen, then rejected
            margin = torch.tensor([self.train_pairs[i].margin for i in part], device=r.device)
            # divided by the pairs of all ranks: FSDP's summed gradient is the whole step's
            loss, m = bradley_terry_loss(r[:len(part)], r[len(part):], margin,
                                         center_coef=self.cfg.loss.center_coef, num_pairs=len(idx))
            loss.backward()
            sums["loss"] += loss.item()
            for k, v in m.items():
                sums[k] += v.item() * len(part) / len(idx)
        sums = self._sum_over_ranks(sums)
        o = self.cfg.optim
        grad_norm = None
        if o.grad_clip is not None:  # the global norm, over every rank's shards
            total = torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.grad_clip)
            grad_norm = float(total.full_tensor() if hasattr(total, "full_tensor") else total)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {"step": self.step, **{f"train/{k}": v for k, v in sums.items()}, "grad_norm": grad_norm, "lr": lr}

    def _sum_over_ranks(self, sums: dict[str, float]) -> dict[str, float]:
        """Each value summed over the ranks (each rank's is its pairs' share of the step's mean)."""
        if self.world.size == 1:
            return sums
        local = torch.tensor(list(sums.values()), dtype=torch.float64, device=self.device)  # [K]
        return dict(zip(sums, torch.stack(self.world.all_gather(local)).sum(0).tolist()))  # [W, K] -> [K]

    @torch.no_grad()
    def scores(self, ids: tuple[list[list[int]], list[list[int]]]) -> tuple[list[float], list[float]]:
        """The rewards of the chosen and of the rejected inputs, ``eval_batch_size`` pairs at a time.
        Under torchrun each rank scores a contiguous share with the weights gathered once, and every
        rank gets all the scores, in order."""
        self.model.eval()
        chosen, rejected = [], []
        share, bs = self.world.share(len(ids[0])), self.cfg.train.eval_batch_size
        with dist.gathered(self.model):  # the ranks' forward passes need not match in number
            for s in range(share.start, share.stop, bs):
                e = min(s + bs, share.stop)
                r = score_ids(self.model, ids[0][s:e] + ids[1][s:e], self.pad, self.device, self.autocast)
                chosen += r[:e - s].tolist()
                rejected += r[e - s:].tolist()
        if self.world.size > 1:
            parts = self.world.gather_objects((chosen, rejected))
            chosen, rejected = [x for c, _ in parts for x in c], [x for _, r in parts for x in r]
        return chosen, rejected

    def evaluate(self) -> dict[str, Any] | None:
        if self.test_ids is None:
            return None
        c, r = self.scores(self.test_ids)
        return pair_stats(c, r, [p.category for p in self.test_pairs])

    # ------------------------------------------------------------------ the loop
    def train(self) -> Path:
        t = self.cfg.train
        start, first = time.perf_counter(), self.step
        while self.step < self.steps:
            metrics = self.train_step()
            if (t.eval_every and self.step % t.eval_every == 0) or self.step == self.steps:
                metrics.update(self._eval_metrics())
            if self.logger is not None:
                self.logger.log(metrics)
            if t.save_every and self.step % t.save_every == 0 and self.step < self.steps:
                self.save()
        self.save()
        if self.logger is not None:
            self.logger.close()
        out = self.export()
        self._say(f"steps {first + 1}-{self.steps} in {time.perf_counter() - start:.1f} s" if first < self.steps
                  else f"all {self.steps} steps were done already")
        return out

    def _eval_metrics(self) -> dict[str, Any]:
        s = self.evaluate()
        if s is None:
            return {}
        m = {"eval/accuracy": s["accuracy"], "eval/margin_mean": s["margin"]["mean"],
             "eval/reward_mean": s["reward"]["mean"], "eval/reward_std": s["reward"]["std"]}
        self._say(f"step {self.step}/{self.steps}: test pairwise accuracy {s['accuracy']:.3f}, margin mean "
                  f"{s['margin']['mean']:.3f}, reward mean {s['reward']['mean']:.3f} std {s['reward']['std']:.3f}")
        return m

    def export(self) -> Path:
        """``RUN_DIR/model``: the reward model as a plain sequence-classification folder (a LoRA
        adapter merged in), its tokenizer, and ``reward_stats.json``. Under torchrun written by rank
        0; the others wait at a barrier (at most ``distributed.timeout_s``) until it is complete."""
        pairs, ids, where = ((self.test_pairs, self.test_ids, "data.test") if self.test_ids is not None
                             else (self.train_pairs, self.train_ids, "data.train"))
        c, r = self.scores(ids)
        s = pair_stats(c, r, [p.category for p in pairs])
        out = self.run_dir / "model"
        net = self._plain_model()
        if self.world.is_main:
            net.config.pad_token_id = self.pad
            net.save_pretrained(out)
            self.tokenizer.save_pretrained(out)
            stats = {"reward_mean": s["reward"]["mean"], "reward_std": s["reward"]["std"], "measured_on": where,
                     "pairs": s["pairs"], "accuracy": s["accuracy"], "margin_mean": s["margin"]["mean"],
                     "step": self.step}
            (out / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n")
        self.world.barrier()
        return out

    def _plain_model(self):
        """The classifier to export, a LoRA adapter merged in: in one process the model itself;
        under torchrun a new one on rank 0 holding the weights every rank helps gather (None on
        the others)."""
        if not self.world.distributed:
            return self.model.merge_and_unload() if is_peft(self.model) else self.model
        from transformers import AutoModelForSequenceClassification

        weights = {}
        for name, t in hf_weights(self.model):  # a collective: every rank iterates to the end
            if self.world.is_main:
                weights[name] = t.cpu()
        if not self.world.is_main:
            return None
        base = self.model.get_base_model() if is_peft(self.model) else self.model
        net = AutoModelForSequenceClassification.from_config(base.config, dtype=_dtype(self.cfg.model))
        net.load_state_dict(weights)
        return net
