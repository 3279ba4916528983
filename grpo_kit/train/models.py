"""Loading the policy and tokenizer, and turning a dataset prompt into token ids."""

from __future__ import annotations

from typing import Any

import torch

from grpo_kit.config import ConfigError
from grpo_kit.hub import load_pretrained
from grpo_kit.train.config import ModelConfig

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: this rank's GPU (``cuda:LOCAL_RANK``) when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


def keep_freed_memory(on: bool | None, device: torch.device | str = "cpu") -> bool:
    """``train.keep_freed_memory``: ask glibc's allocator to keep freed memory in the process
    (``mallopt``: ``M_MMAP_THRESHOLD`` 32 MiB, its maximum, so blocks below it come from the heap
    rather than from a fresh ``mmap`` each; ``M_TRIM_THRESHOLD`` 1 GiB, so the heap is not handed
    back at each free). A CPU update allocates and frees the same tensors every step; by default
    glibc returns the large ones to the OS and the next step page-faults them in again: about
    1,400 faults per update of the built-in demo, none with this (tests/test_packing.py counts them).
    The process's memory then stays at its peak. ``None``: on when ``device`` is the CPU. Returns
    whether it was set (False where the C library has no ``mallopt``: not glibc)."""
    if not (on if on is not None else torch.device(device).type == "cpu"):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))


def load_tokenizer(path: str):
    import json
    from pathlib import Path

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    # transformers 5 loads a local tokenizer declared as PreTrainedTokenizerFast as the model
    # type's own class (Qwen2Tokenizer for a qwen2 config), which changes the ids: keep the class.
    cfg_file = Path(path) / "tokenizer_config.json"
    declared = json.loads(cfg_file.read_text()).get("tokenizer_class") if cfg_file.is_file() else None
    if declared in ("PreTrainedTokenizerFast", "TokenizersBackend"):
        tok = PreTrainedTokenizerFast.from_pretrained(path)
    else:
        tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ConfigError(f"model.path {path}: the tokenizer has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    return tok


def load_policy(cfg: ModelConfig, local_rank: int = 0):
    """``(model, tokenizer, device, autocast)`` from ``cfg.path``, a local folder or a hub id.

    Weights stay float32 unless ``dtype`` says otherwise (the optimizer keeps full-precision
    weights); on a GPU the forward passes run under bf16 autocast and gradient checkpointing is on,
    unless the config turns them off. With ``lora`` the model is a ``peft.PeftModel`` whose frozen
    base is bf16 on a GPU (``dtype: auto``; float16 under ``precision: fp16``; float32 on a CPU) and
    whose adapter is float32."""
    device = pick_device(cfg.device, local_rank)
    frozen_base_half = cfg.lora is not None and device.type == "cuda"
    half = torch.float16 if cfg.precision == "fp16" else torch.bfloat16  # the autocast dtype
    dtype = (half if frozen_base_half else torch.float32) if cfg.dtype == "auto" else _DTYPES[cfg.dtype]

    def causal_lm(path: str):
        from transformers import AutoModelForCausalLM  # seconds to import: after the hub check

        extra = {"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {}
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **extra)

    # a hub id that cannot be loaded (no network, HF_HUB_OFFLINE and not cached) is a ConfigError
    tok = load_pretrained(load_tokenizer, cfg.path, setting="model.path", what="a tokenizer")
    model = load_pretrained(causal_lm, cfg.path, setting="model.path", what="a causal LM")
    model.to(device)
    on_gpu = device.type == "cuda"
    if cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else on_gpu:
        # non-reentrant: the variant that works with FSDP2's hooks
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora is not None:
        from grpo_kit.lora import apply_lora

        model = apply_lora(model, **cfg.lora.model_dump())
    autocast = cfg.autocast if cfg.autocast is not None else on_gpu
    return model, tok, device, autocast


def encode_prompt(tokenizer, prompt: Any, tools: list[dict] | None = None) -> list[int]:
    """Token ids of a prompt: a string as is, a list of chat messages through the chat template
    (``tools``: function schemas the template shows the model, ``tools.format: chat``)."""
    if isinstance(prompt, str):
        return list(tokenizer(prompt)["input_ids"])
    if isinstance(prompt, list):
        if tokenizer.chat_template is None:
            raise ConfigError("the prompts are chat messages but the tokenizer has no chat template; "
                              "use a base-model template (task.prompt_style: base)")
        out = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                            **({"tools": tools} if tools else {}))
        if hasattr(out, "keys") and "input_ids" in out:
            out = out["input_ids"]
        return list(out)
    raise ConfigError(f"a prompt must be a string or a list of chat messages, got {type(prompt).__name__}")
