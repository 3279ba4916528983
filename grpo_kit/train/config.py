"""The training config: one pydantic tree, validated at load, saved into each run folder.

Every variant of the algorithm is a named switch under ``algorithm`` (see the README's table). The
valid names of the switches that select a registry entry (``advantage``, ``loss_agg``,
``kl.estimator``, ``policy_loss``) come from the registries themselves (:data:`ADVANTAGE_ESTIMATORS`,
:data:`AGGREGATIONS`, :data:`KL_ESTIMATORS`, :data:`POLICY_LOSSES`): adding an entry there is the
whole change (a new setting of a policy loss also needs its field here).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, Literal, Union

import torch
import yaml
from pydantic import AfterValidator, Field, field_validator, model_validator

from grpo_kit.algorithms.advantages import ADVANTAGE_ESTIMATORS
from grpo_kit.algorithms.losses import AGGREGATIONS, KL_ESTIMATORS, POLICY_LOSSES, policy_loss_settings
from grpo_kit.config import RewardConfig, ScoringConfig, Strict, apply_override, build_config, unique_reward_keys
from grpo_kit.rollout.base import SamplingConfig
from grpo_kit.rollout.multiturn import ToolsConfig
from grpo_kit.rollout.vllm import VLLMConfig
from tasks.config import TaskConfig


def _one_of(what: str, names, hint: str = "") -> AfterValidator:
    """A validator accepting the names ``names()`` gives (read at validation time)."""

    def check(v: str) -> str:
        valid = sorted(names())
        if v not in valid:
            raise ValueError(f"unknown {what} {v!r}; valid: {', '.join(valid)}{hint}")
        return v

    return AfterValidator(check)


def group_estimators() -> list[str]:
    """Critic-free advantage estimators (a group baseline): the GRPO family's choices."""
    return [n for n, e in ADVANTAGE_ESTIMATORS.items() if not e.needs_values]


def critic_estimators() -> list[str]:
    """Advantage estimators that need a value model: PPO's choices."""
    return [n for n, e in ADVANTAGE_ESTIMATORS.items() if e.needs_values]


LossAgg = Annotated[str, _one_of("loss aggregation", lambda: AGGREGATIONS)]


def _band(v: tuple[float, float]) -> tuple[float, float]:
    low, high = v
    if not 0 < low <= 1 <= high:
        raise ValueError(f"[{low}, {high}]: a band of the trainer/sampler ratio needs 0 < low <= 1 <= high, "
                         "e.g. [0.5, 2.0]")
    return v


Band = Annotated[tuple[float, float], AfterValidator(_band)]


class LoRAConfig(Strict):
    """LoRA (Hu et al. 2021) through peft: ``W x + (alpha / r) B A x``, ``W`` frozen, ``A`` and ``B``
    trained. The KL reference is the same model with the adapter switched off; see the README."""

    r: int = Field(16, ge=1, description="rank of the adapter")
    alpha: float = Field(32.0, gt=0, description="scale numerator: the update is (alpha / r) B A")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter's input (0: the "
                           "sampled and the trained distributions match, as in RL peers)")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="the linear layers adapted, by name (e.g. [q_proj, v_proj]), or "
        "all-linear: every linear layer but the output head")
    modules_to_save: list[str] = Field(default_factory=list, description="modules trained whole beside "
                                       "the adapter (e.g. [lm_head] where it is not tied to the "
                                       "embedding); saved with it")

    @field_validator("target_modules")
    @classmethod
    def _some(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("name at least one module (e.g. [q_proj, v_proj]) or use all-linear")
        return v


class ModelConfig(Strict):
    path: str = Field(description="local path or hub id of a causal LM (AutoModelForCausalLM)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights dtype; auto = float32 everywhere (the optimizer's weights); on a GPU "
        "the forward passes run under bf16 autocast (see `autocast`)")
    precision: Literal["bf16", "fp16"] = Field(
        "bf16", description="the GPU's autocast dtype: bf16, or fp16 with dynamic loss scaling "
        "(torch.amp.GradScaler; 'Defeating the Training-Inference Mismatch via FP16', arXiv 2510.26788); "
        "with fp16 the vLLM engine runs in float16 too and a LoRA run's frozen base is float16. GPU only")
    device: str = Field("auto", description="auto = cuda when available, else cpu")
    gradient_checkpointing: bool | None = Field(None, description="default: on for GPU, off for CPU")
    autocast: bool | None = Field(None, description="bf16 autocast of forward passes; default on GPU")
    attn_implementation: str | None = Field(None, description="transformers' attention (sdpa, eager, "
                                            "flash_attention_2, ...); default: transformers' choice")
    lora: LoRAConfig | None = Field(None, description="train a LoRA adapter instead of every weight "
                                    "(off by default); with dtype auto the frozen base is bf16 on a "
                                    "GPU, the adapter float32")

    @model_validator(mode="after")
    def _fp16_on_gpu(self) -> "ModelConfig":
        if self.precision != "fp16":
            return self
        if self.device == "cpu" or (self.device == "auto" and not torch.cuda.is_available()):
            raise ValueError("model.precision: fp16 needs a CUDA GPU (fp16 autocast with loss scaling) and "
                             f"this run is on the CPU (model.device: {self.device}); use precision: bf16 (the "
                             "default; on the CPU no autocast runs)")
        if self.autocast is False:
            raise ValueError("model.precision: fp16 is fp16 autocast; it cannot run with model.autocast: false")
        if self.dtype == "float16":
            raise ValueError("model.precision: fp16 keeps float32 (or bfloat16) weights and autocasts the "
                             "forward to fp16; float16 weights cannot be loss-scaled (GradScaler refuses to "
                             "unscale fp16 gradients): set model.dtype: auto")
        return self


class KLConfig(Strict):
    beta: float = Field(0.0, ge=0, description="KL coefficient; 0 = no reference model is loaded")
    estimator: Annotated[str, _one_of("KL estimator", lambda: KL_ESTIMATORS)] = Field(
        "k3", description="per-token KL estimator (k1, k2, k3)")
    placement: Literal["loss", "reward"] = Field(
        "loss", description="loss: + beta * aggregate(KL); reward: - beta * KL per token in the reward")
    target: float | None = Field(None, gt=0, description="adaptive controller (Ziegler et al. 2019): "
                                 "the target KL per sequence, in nats (the sum over a completion's "
                                 "tokens, averaged over the batch's sequences); None = fixed beta")
    horizon: int = Field(10000, ge=1, description="adaptive controller horizon, in sequences (samples): "
                         "each step moves beta by error x sequences in the step / horizon")


class PPOKLConfig(KLConfig):
    """PPO's KL defaults (classic RLHF PPO): in the per-token reward, beta 0.05. A partial block
    (``kl: {beta: 0.1}``) keeps the other defaults of PPO, not GRPO's."""

    beta: float = Field(0.05, ge=0, description="KL coefficient; 0 = no reference model is loaded")
    placement: Literal["loss", "reward"] = Field(
        "reward", description="reward: - beta * KL per token in the reward (PPO); loss: + beta * aggregate(KL)")


def policy_loss_setting_names() -> list[str]:
    """Every setting of every entry of :data:`POLICY_LOSSES` (each is a field of the algorithm block)."""
    return sorted({k for name in POLICY_LOSSES for k in policy_loss_settings(name)})


class _PolicyLossConfig(Strict):
    """The switches of the policy loss, shared by GRPO and PPO.

    ``policy_loss`` names an entry of :data:`POLICY_LOSSES`; its settings are the fields of the same
    names (``clip_low``, ``tau_pos``, ...). A setting left out takes the entry's own default, read
    from its signature (so ``policy_loss: gmpo`` brings GMPO's clip of 0.4); the settings of the other
    entries stay null, and setting one of them is an error that lists the entry's own."""

    loss_agg: LossAgg = Field("token_mean", description="loss aggregation (grpo_kit.algorithms.losses."
                              "AGGREGATIONS); constant_norm = Dr. GRPO")
    policy_loss: Annotated[str, _one_of("policy loss", lambda: POLICY_LOSSES)] = Field(
        "ppo_clip", description="an entry of grpo_kit.algorithms.losses.POLICY_LOSSES: ppo_clip (the clipped "
        "surrogate), cispo, gmpo, sapo, clip_cov, kl_cov")
    clip_low: float | None = Field(None, ge=0, description="clip below 1 (ppo_clip, clip_cov: 0.2; cispo: 1.0, "
                                   "no lower bound; gmpo: in log space, 0.4)")
    clip_high: float | None = Field(None, ge=0, description="clip above 1 (ppo_clip, clip_cov: 0.2, > clip_low: "
                                    "DAPO clip-higher; cispo: 0.28; gmpo: in log space, 0.4)")
    dual_clip: float | None = Field(None, gt=1, description="ppo_clip: dual-clip constant c for A < 0")
    ratio_level: Literal["token", "sequence"] | None = Field(None, description="ppo_clip: token, or "
                                                             "sequence = GSPO")
    tau_pos: float | None = Field(None, gt=0, description="sapo: gate temperature for A > 0 (1.0)")
    tau_neg: float | None = Field(None, gt=0, description="sapo: gate temperature for A < 0 (1.05)")
    clip_ratio: float | None = Field(None, gt=0, le=1, description="clip_cov: share of tokens whose gradient "
                                     "is detached (2e-4)")
    cov_low: float | None = Field(None, description="clip_cov: covariance band's lower end (1.0)")
    cov_high: float | None = Field(None, description="clip_cov: covariance band's upper end (5.0)")
    kl_ratio: float | None = Field(None, gt=0, le=1, description="kl_cov: share of tokens penalised (2e-4)")
    kl_coef: float | None = Field(None, ge=0, description="kl_cov: coefficient of |logp - old_logp| (1.0)")
    top_entropy_quantile: float | None = Field(
        None, gt=0, le=1, description="rho: only the tokens whose entropy (under the policy at the step's "
        "start) is at least the 1 - rho quantile of the step's valid tokens carry policy gradient ('Beyond "
        "the 80/20 Rule', arXiv 2506.01939: rho = 0.2); null = every token")
    epochs: int = Field(1, ge=1, description="mu: passes over each batch")
    entropy_coef: float = Field(0.0, ge=0, description="entropy bonus coefficient")
    mask_truncated: bool = Field(False, description="exclude completions cut at max_new_tokens "
                                 "from the loss (DAPO overlong filtering)")
    tis_cap: float | None = Field(None, gt=0, description="truncated importance sampling against "
                                  "the sampler's log-probs, weights capped at this value")
    tis_level: Literal["token", "sequence"] = Field(
        "token", description="tis_cap's weights: per token (min(rho_t, C)) or per sequence "
        "(min(prod_t rho_t, C) on every token)")
    seq_mask_band: Band | None = Field(None, description="drop a sequence whose geometric-mean "
                                       "trainer/sampler ratio exp(mean_t log rho_t) leaves [low, high] "
                                       "(masked IS), e.g. [0.5, 2.0]")
    token_mask_band: Band | None = Field(None, description="drop tokens whose trainer/sampler ratio "
                                         "rho_t leaves [low, high] (IcePop), e.g. [0.5, 5.0]")
    dynamic_sampling: bool = Field(False, description="DAPO: drop groups whose rewards are all "
                                   "equal and sample more until the batch is full")
    max_sampling_rounds: int = Field(3, ge=1, description="bound on dynamic-sampling rounds")

    @model_validator(mode="before")
    @classmethod
    def _entry_defaults(cls, data: Any) -> Any:
        """The chosen policy loss's defaults for its settings left out; another entry's setting set
        is an error naming the entry's own."""
        if not isinstance(data, dict):
            return data
        name = data.get("policy_loss", "ppo_clip")
        if name not in POLICY_LOSSES:
            return data  # the field's validator lists the valid names
        own = policy_loss_settings(name)
        foreign = [k for k in policy_loss_setting_names() if k not in own and data.get(k) is not None]
        if foreign:
            raise ValueError(f"{', '.join(foreign)}: not a setting of policy_loss {name!r}, whose settings are "
                             f"{', '.join(own) or 'none'}; remove {'it' if len(foreign) == 1 else 'them'} or "
                             "choose the policy loss that takes it")
        return {**data, **{k: v for k, v in own.items() if data.get(k) is None}}


class GRPOConfig(_PolicyLossConfig):
    """Critic-free GRPO and its variants (Dr. GRPO, RLOO, REINFORCE++-baseline, DAPO, GSPO)."""

    type: Literal["grpo"] = "grpo"
    advantage: Annotated[str, _one_of("critic-free advantage estimator", group_estimators,
                                      " (the estimators with a critic need algorithm.type: ppo)")] = Field(
        "grpo", description="a critic-free advantage estimator of grpo_kit.algorithms.ADVANTAGE_ESTIMATORS "
        "(grpo, dr_grpo, rloo, reinforce_pp_baseline); the ones that need a critic are PPO's")
    kl: KLConfig = Field(default_factory=KLConfig)
    reward_norm: Literal["combined", "per_reward"] = Field(
        "combined", description="combined: the advantage estimator runs on the weighted sum of the "
        "rewards; per_reward: on each reward alone, the advantages then summed with the rewards' "
        "weights (GDPO-style, so one high-variance reward cannot drown the others)")

    @model_validator(mode="after")
    def _per_reward_kl(self):
        if self.reward_norm == "per_reward" and self.kl.beta > 0 and self.kl.placement == "reward":
            raise ValueError("algorithm.reward_norm: per_reward normalises each reward alone, so a KL "
                             "placed in the reward has no reward of its own to join; use kl.placement: loss")
        return self


class ValueConfig(Strict):
    """PPO's value model: a scalar head on a transformer backbone."""

    model: str | None = Field(None, description="backbone: None = a copy of the policy's (loaded from "
                              "model.path), or a path / hub id of another (e.g. smaller) model")
    lr: float = Field(1e-5, gt=0, description="the value model's AdamW learning rate")
    clip: float | None = Field(0.2, gt=0, description="value clipping range around the old values")


class PPOConfig(_PolicyLossConfig):
    """Classic RLHF PPO: policy, frozen reference, reward, value model; GAE advantages."""

    type: Literal["ppo"] = "ppo"
    advantage: Annotated[str, _one_of("advantage estimator with a critic", critic_estimators,
                                      " (the critic-free ones need algorithm.type: grpo)")] = Field(
        "gae", description="an estimator of ADVANTAGE_ESTIMATORS that needs a value model (gae: GAE "
        "over per-token rewards); the critic-free ones are GRPO's (algorithm.type: grpo)")
    gamma: float = Field(1.0, ge=0, le=1, description="discount")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda")
    whiten_advantages: bool = Field(True, description="normalise advantages over the batch's tokens")
    kl: PPOKLConfig = Field(default_factory=PPOKLConfig,
                            description="classic PPO puts the KL penalty in the per-token reward")
    value: ValueConfig = Field(default_factory=ValueConfig)

    @model_validator(mode="after")
    def _check(self) -> "PPOConfig":
        if getattr(POLICY_LOSSES[self.policy_loss], "needs_sequence_advantages", False):
            raise ValueError(f"policy_loss {self.policy_loss!r} needs one advantage per sequence; PPO's "
                             f"{self.advantage!r} gives one per token. Use algorithm.type: grpo, or another "
                             "policy_loss")
        if self.dynamic_sampling:
            raise ValueError("dynamic_sampling drops groups whose rewards are all equal, which carry no "
                             "signal only under a group baseline; PPO's critic learns from them. Set "
                             "algorithm.dynamic_sampling: false, or algorithm.type: grpo")
        return self


AlgorithmConfig = Annotated[Union[GRPOConfig, PPOConfig], Field(discriminator="type")]


class OptimConfig(Strict):
    lr: float = Field(1e-6, gt=0)
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = Field(0.0, ge=0)
    eps: float = Field(1e-8, gt=0)
    warmup_steps: int = Field(0, ge=0, description="linear warmup (in optimizer steps)")
    schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine floor as a fraction of lr")
    grad_clip: float | None = Field(1.0, gt=0, description="max gradient norm; None = off")


class LoopConfig(Strict):
    steps: int = Field(100, ge=1, description="training steps (one batch of prompts each)")
    prompts_per_step: int = Field(8, ge=1, description="B/G: prompts sampled per step")
    minibatch_size: int | None = Field(None, ge=1, description="sequences per optimizer step "
                                       "(default: the whole batch: one optimizer step per epoch)")
    micro_batch_size: int | None = Field(None, ge=1, description="sequences per forward/backward "
                                         "(gradient accumulation); default = minibatch_size")
    seed: int = Field(0, description="seeds everything: data order, sampling, init of new heads")
    save_every: int = Field(0, ge=0, description="checkpoint every N steps (0 = only at the end)")
    keep_last: int = Field(2, ge=1, description="checkpoints kept")
    samples_every: int = Field(10, ge=0, description="write sample completions every N steps")
    torch_threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's)")
    keep_freed_memory: bool | None = Field(None, description="glibc keeps freed memory in the process "
                                           "(mallopt), so each step's tensors reuse pages already faulted in "
                                           "instead of faulting them in again; default: on when the trainer "
                                           "runs on the CPU (and in its rollout process)")
    packing: bool = Field(False, description="padding-free update passes: each micro-batch's sequences "
                          "packed into one row, position ids restarting per sequence (on a GPU use "
                          "model.attn_implementation: flash_attention_2)")
    micro_batch_tokens: int | None = Field(None, ge=1, description="also cap each micro-batch at this "
                                           "many tokens (prompt + completion): micro-batches balanced by "
                                           "tokens, not only by sequences")
    shared_prefix: bool | Literal["auto"] = Field(False, description="the padded update passes compute "
                                                  "each group's prompt once (its key/value cache indexed out "
                                                  "to the group's completions) instead of once per completion: "
                                                  "G times less prompt compute, exact; needs full-attention "
                                                  "layers; true is refused with train.packing, gradient "
                                                  "checkpointing and torchrun; auto: on where none of them is")
    logprobs: Literal["logits", "fused"] = Field("logits", description="how the update computes "
                                                 "log-probs: from the logits (the head's [tokens, V] "
                                                 "output), or fused: from the last hidden states and "
                                                 "the head's weight in float32 tiles, the logits never "
                                                 "built (far less memory; slower on CPU)")
    async_level: int = Field(0, ge=0, description="k: sample and score in a process of their own, up "
                             "to k steps ahead of the update; step s's rollouts come from the weights "
                             "after step s-1-k (0 = synchronous)")
    max_staleness: int | None = Field(None, ge=0, description="the trainer stops rather than use "
                                      "rollouts more than this many versions old (default: async_level)")
    ref_in_rollout: bool = Field(False, description="async: the rollout process also computes the "
                                 "reference model's log-probs for the KL (a copy of the initial weights "
                                 "there), so the trainer neither holds the reference nor runs its forward")
    sampler_threads: int | None = Field(None, ge=1, description="async: torch threads of the rollout "
                                        "process (default: half of train.torch_threads, the trainer "
                                        "keeps the rest)")


class RunConfig(Strict):
    name: str = Field("run", description="run name (the default output folder is runs/NAME-TIME)")
    output_dir: str | None = Field(None, description="run folder (default runs/NAME-TIME)")
    report_to: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list)
    progress: bool = Field(True, description="live progress bar on stderr")


class DistributedConfig(Strict):
    """Data parallelism under ``torchrun`` (FSDP2); ignored by a single process."""

    timeout_s: float = Field(600.0, gt=0, description="the longest any collective waits: a rank that "
                             "died or desynchronised ends the job after this, never hangs it")
    mixed_precision: bool | None = Field(None, description="FSDP2 bf16 parameters for compute, fp32 "
                                         "gradient reduction; default on GPU, off on CPU")
    cpu_offload: bool = Field(False, description="keep the sharded parameters, gradients and "
                              "optimizer state in host memory (FSDP2 CPUOffloadPolicy)")
    reshard_after_forward: bool = Field(True, description="free each layer's gathered parameters "
                                        "after its forward (ZeRO-3); false keeps them to the backward")


class TrainConfig(Strict):
    """`grpo-kit train CONFIG.yaml`."""

    model: ModelConfig
    task: TaskConfig
    rewards: list[RewardConfig] | None = Field(None, description="default: the task's rewards")
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    sampler: Literal["hf", "vllm"] = Field("hf", description="hf (transformers generate) or vllm "
                                           "(a colocated vLLM engine, weights synced in place)")
    vllm: VLLMConfig = Field(default_factory=VLLMConfig, description="engine settings (sampler: vllm)")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    tools: ToolsConfig = Field(default_factory=ToolsConfig, description="tools the model may call while it "
                               "samples (multi-turn rollouts); off unless tools.names is set")
    algorithm: AlgorithmConfig = Field(default_factory=GRPOConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: LoopConfig = Field(default_factory=LoopConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig,
                                           description="under torchrun: FSDP2 and collective settings")

    @field_validator("rewards")
    @classmethod
    def _unique_keys(cls, v: list[RewardConfig] | None) -> list[RewardConfig] | None:
        return unique_reward_keys(v)

    @model_validator(mode="before")
    @classmethod
    def _default_type(cls, data: Any) -> Any:
        """An ``algorithm`` block without ``type`` is GRPO's (the default algorithm)."""
        if isinstance(data, dict) and isinstance(data.get("algorithm"), dict) and "type" not in data["algorithm"]:
            data = {**data, "algorithm": {"type": "grpo", **data["algorithm"]}}
        return data

    @model_validator(mode="before")
    @classmethod
    def _engine_dtype_follows_precision(cls, data: Any) -> Any:
        """Under ``model.precision: fp16`` the vLLM engine samples in float16 too (the point of fp16
        RL, arXiv 2510.26788: the same numerics in training and inference); another explicit dtype
        is an error."""
        if not (isinstance(data, dict) and isinstance(data.get("model"), dict)
                and data["model"].get("precision") == "fp16"):
            return data
        engine = dict(data.get("vllm") or {})
        if engine.get("dtype", "auto") not in ("auto", "float16"):
            raise ValueError(f"vllm.dtype {engine['dtype']} with model.precision: fp16; the engine's dtype "
                             "follows the trainer's: set vllm.dtype: auto (or float16)")
        return {**data, "vllm": {**engine, "dtype": "float16"}}

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        G, B = self.sampling.n, self.train.prompts_per_step
        algo = self.algorithm
        if G < 2 and not ADVANTAGE_ESTIMATORS[algo.advantage].needs_values:
            raise ValueError(f"sampling.n = {G}: advantage {algo.advantage!r} uses a group baseline "
                             "and needs at least 2 completions per prompt; set sampling.n >= 2 (or use "
                             "algorithm.type: ppo, whose critic is the baseline)")
        total = B * G
        mb = self.train.minibatch_size or total
        if total % mb:
            raise ValueError(f"train.minibatch_size = {mb} does not divide the batch of "
                             f"prompts_per_step x sampling.n = {B} x {G} = {total} sequences; "
                             f"choose a divisor of {total}")
        t = self.train
        if t.max_staleness is not None and t.max_staleness < t.async_level:
            raise ValueError(f"train.max_staleness = {t.max_staleness} is below train.async_level = "
                             f"{t.async_level}: step s's rollouts come from the weights of step s-1-k, "
                             f"{t.async_level} versions old; raise max_staleness or lower async_level")
        if t.ref_in_rollout and (t.async_level == 0 or self.algorithm.kl.beta == 0):
            raise ValueError("train.ref_in_rollout computes the KL's reference log-probs in the rollout "
                             "process: it needs train.async_level >= 1 and algorithm.kl.beta > 0 (here "
                             f"{t.async_level} and {self.algorithm.kl.beta})")
        if t.shared_prefix is True and (t.packing or self.model.gradient_checkpointing):
            raise ValueError("train.shared_prefix continues each completion from its prompt's key/value cache: "
                             + ("train.packing has no prompt columns to share (set one of them false)" if t.packing
                                else "gradient checkpointing drops that cache (set model.gradient_checkpointing: "
                                     "false)"))
        micro = self.train.micro_batch_size or mb
        if mb % micro:
            raise ValueError(f"train.micro_batch_size = {micro} does not divide train.minibatch_size "
                             f"= {mb}; choose a divisor of {mb}")
        return self

    @property
    def minibatch(self) -> int:
        return self.train.minibatch_size or self.train.prompts_per_step * self.sampling.n

    @property
    def micro_batch(self) -> int:
        return self.train.micro_batch_size or self.minibatch


# --------------------------------------------------------------------------- resolution


def resolve_train_config(config: str | None, sets: list[str], demo: str = "sums") -> tuple[TrainConfig, bool]:
    """The config of ``grpo-kit train [CONFIG] [--set KEY=VALUE ...]``, and whether it is the demo
    (``demo``: which one, ``sums`` or ``tools``).

    ``--set seed=N`` sets every seed (``train.seed``, and ``sampling.seed`` and ``task.args.seed``
    where the config has them). ``--set algorithm.type=T`` switching to another type starts that
    type's block afresh: the file's ``algorithm`` keys are dropped (named on stderr) and the keys set
    on the command line kept, so ``--set algorithm.type=ppo`` brings PPO's defaults."""
    from grpo_kit.config import read_yaml
    from grpo_kit.demo import demo_config, tools_demo_config

    if config is None:
        data, source = (tools_demo_config() if demo == "tools" else demo_config()), f"built-in demo ({demo})"
    else:
        data, source = read_yaml(config), str(config)
    return build_config(apply_overrides(data, sets), TrainConfig, source), config is None


def apply_overrides(data: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to a config's data (see :func:`resolve_train_config`)."""
    file_type = (data.get("algorithm") or {}).get("type", "grpo")
    algo_sets = [s for s in sets if s.partition("=")[0].startswith("algorithm.")]
    new_type = next((yaml.safe_load(s.partition("=")[2]) for s in reversed(algo_sets)
                     if s.partition("=")[0] == "algorithm.type"), file_type)
    if new_type != file_type:
        dropped = sorted(k for k in (data.get("algorithm") or {}) if k != "type")
        data["algorithm"] = {}
        if dropped:
            print(f"grpo-kit: algorithm.type {file_type} -> {new_type}: the config's algorithm keys "
                  f"{', '.join(dropped)} are dropped and {new_type}'s defaults apply (keep one with "
                  "--set algorithm.KEY=VALUE)", file=sys.stderr)
    for s in sets:
        key, _, val = s.partition("=")
        if key == "seed":  # every random seed at once
            n = yaml.safe_load(val)
            apply_override(data, f"train.seed={n}")
            if (data.get("sampling") or {}).get("seed") is not None:
                apply_override(data, f"sampling.seed={n}")
            if "seed" in ((data.get("task") or {}).get("args") or {}):
                apply_override(data, f"task.args.seed={n}")
        else:
            apply_override(data, s)
    return data
