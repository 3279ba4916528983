"""Checkpoints: model + optimizer + scheduler + RNG states + data position, written atomically.

A checkpoint is a folder ``checkpoints/step-000010``. It is written under a temporary name and
renamed when complete, so a kill never leaves a half checkpoint that looks whole; only the last
``keep_last`` are kept. Two layouts:

- a single process writes a Hugging Face model folder (``save_pretrained``) plus
  ``trainer_state.pt``;
- under torchrun every rank writes its shards with ``torch.distributed.checkpoint`` into ``dcp/``
  (model, optimizer, and PPO's value model and its optimizer), its RNG state into
  ``rng/rank-R.pt``; rank 0 writes ``trainer_state.pt`` (scheduler, data position, KL coefficient,
  step), the tokenizer and the model's ``config.json``. DCP reshards on load, so a run saved on N
  ranks resumes on any number of ranks, or in a single process. :func:`export_checkpoint` turns
  either layout into a plain Hugging Face folder.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

_NAME = re.compile(r"^step-(\d{6,})$")


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:06d}"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, model, tokenizer, trainer_state: dict[str, Any],
                    keep_last: int, extra: dict[str, Any] | None = None) -> Path:
    """``extra``: sub-folder name -> a function saving into that folder (PPO's value model)."""
    final = checkpoint_dir(run_dir, step)
    tmp = _fresh_tmp(final)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    for name, save in (extra or {}).items():
        (tmp / name).mkdir()
        save(tmp / name)
    torch.save({**trainer_state, "rng": rng_state(), "step": step}, tmp / "trainer_state.pt")
    _publish(tmp, final, run_dir, keep_last)
    return final


def _fresh_tmp(final: Path) -> Path:
    """The empty temporary folder a checkpoint is written into (a killed write's is removed)."""
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _publish(tmp: Path, final: Path, run_dir: Path, keep_last: int) -> None:
    """fsync ``tmp``, rename it to ``final``, and drop all but the last ``keep_last`` checkpoints."""
    for f in tmp.rglob("*"):  # data on disk before the rename makes it visible
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def save_sharded(run_dir: Path, step: int, world, states: dict[str, Any], tokenizer, model_config,
                 trainer_state: dict[str, Any], keep_last: int, generation_config=None,
                 main_writes=None) -> Path:
    """The torchrun layout (see the module docstring); every rank calls it. ``states``: name ->
    ``get_state_dict``-style dicts of this rank's shards; ``main_writes(folder)``: more files,
    written by rank 0 (a LoRA adapter in peft's format)."""
    import torch.distributed.checkpoint as dcp

    final = checkpoint_dir(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    if world.is_main:
        (_fresh_tmp(final) / "rng").mkdir()
    world.barrier()
    dcp.save(states, checkpoint_id=str(tmp / "dcp"))
    torch.save(rng_state(), tmp / "rng" / f"rank-{world.rank}.pt")
    if world.is_main:
        tokenizer.save_pretrained(tmp)
        model_config.save_pretrained(tmp)
        if generation_config is not None:
            generation_config.save_pretrained(tmp)
        if main_writes is not None:
            main_writes(tmp)
        torch.save({**trainer_state, "step": step, "world_size": world.size}, tmp / "trainer_state.pt")
    world.barrier()
    if world.is_main:
        _publish(tmp, final, run_dir, keep_last)
    world.barrier()
    return final


def is_sharded_checkpoint(ckpt: Path) -> bool:
    return (Path(ckpt) / "dcp").is_dir()


def is_lora_checkpoint(ckpt: Path) -> bool:
    """A LoRA run's checkpoint: the adapter in peft's format (``adapter_config.json``,
    ``adapter_model.safetensors``), in either layout; the base is the run's ``model.path``."""
    return (Path(ckpt) / "adapter_config.json").is_file()


def load_sharded(ckpt: Path, world, states: dict[str, Any]) -> None:
    """Fill ``states`` (as given to :func:`save_sharded`, of this run's models) in place from
    ``ckpt``, resharded to this world size; restore this rank's RNG (rank 0's if it had none)."""
    import torch.distributed.checkpoint as dcp

    dcp.load(states, checkpoint_id=str(Path(ckpt) / "dcp"))
    rng = Path(ckpt) / "rng" / f"rank-{world.rank}.pt"
    set_rng_state(torch.load(rng if rng.exists() else Path(ckpt) / "rng" / "rank-0.pt", weights_only=False))


def export_checkpoint(ckpt: Path, out: Path, *, adapter: bool = False, base: str | None = None) -> Path:
    """A plain Hugging Face folder (weights, config, tokenizer) of the policy in ``ckpt``, in
    either layout, that ``transformers`` and vLLM load. Needs the whole model in host memory.
    A LoRA checkpoint: the adapter merged into its base (``base``, default the path the adapter
    records), or with ``adapter`` the adapter alone in peft's format (plus the tokenizer)."""
    ckpt, out = Path(ckpt), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if is_lora_checkpoint(ckpt):
        return _export_lora(ckpt, out, adapter=adapter, base=base)
    if not is_sharded_checkpoint(ckpt):
        skip = {"trainer_state.pt", "value_model", "rng"}
        for f in ckpt.iterdir():
            if f.name not in skip and f.is_file():
                shutil.copy2(f, out / f.name)
        return out
    import torch.distributed.checkpoint as dcp
    from transformers import AutoConfig, GenerationConfig

    from grpo_kit.train.models import load_tokenizer

    config = AutoConfig.from_pretrained(ckpt)
    model = _auto_class(config).from_config(config, dtype=getattr(config, "dtype", None) or torch.float32)
    state = {"model": model.state_dict()}
    dcp.load(state, checkpoint_id=str(ckpt / "dcp"))  # in place, into the model's own tensors
    model.load_state_dict(state["model"])
    if (ckpt / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(ckpt)
    model.save_pretrained(out)
    load_tokenizer(str(ckpt)).save_pretrained(out)
    return out


def _auto_class(config):
    """The transformers auto class of a checkpoint's model: a sequence classifier (a reward
    model of ``grpo-kit rm train``) when its config names one, else a causal LM (a policy)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    archs = getattr(config, "architectures", None) or []
    return AutoModelForSequenceClassification if any(a.endswith("ForSequenceClassification") for a in archs) \
        else AutoModelForCausalLM


def _export_lora(ckpt: Path, out: Path, *, adapter: bool, base: str | None) -> Path:
    import json

    from grpo_kit.errors import ConfigError
    from grpo_kit.train.models import load_tokenizer

    if adapter:
        keep = {"adapter_config.json", "adapter_model.safetensors", "README.md"}
        for f in ckpt.iterdir():
            if f.is_file() and (f.name in keep or f.name.startswith(("tokenizer", "special_tokens", "chat_template"))):
                shutil.copy2(f, out / f.name)
        return out
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    adapter_config = json.loads((ckpt / "adapter_config.json").read_text())
    base = base or adapter_config.get("base_model_name_or_path")
    if not base:
        raise ConfigError(f"{ckpt}: its adapter records no base model; pass --base PATH (the run's model.path)")
    classifier = adapter_config.get("task_type") == "SEQ_CLS"  # a reward model's: the base gets its scalar head
    tok = load_tokenizer(str(ckpt))
    try:  # merged in float32, saved in the base checkpoint's own dtype
        saved_dtype = getattr(AutoConfig.from_pretrained(base), "dtype", None) or torch.float32
        if classifier:
            model = AutoModelForSequenceClassification.from_pretrained(base, dtype=torch.float32, num_labels=1,
                                                                       pad_token_id=tok.pad_token_id)
        else:
            model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    except OSError as e:
        raise ConfigError(f"{ckpt}: cannot load the base model {base!r} ({e}); pass --base PATH") from None
    if isinstance(saved_dtype, str):
        saved_dtype = getattr(torch, saved_dtype)
    merged = PeftModel.from_pretrained(model, str(ckpt)).merge_and_unload()
    merged.to(saved_dtype).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (``.tmp`` folders of a killed write are ignored)."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / "trainer_state.pt").exists()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def last_checkpoint(run_dir: Path, say) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint of ``run_dir`` and its trainer state, or None (and ``say`` so)."""
    found = list_checkpoints(run_dir)
    if not found:
        say(f"no checkpoint in {run_dir}; starting from step 0")
        return None
    return found[-1], load_trainer_state(found[-1])


def load_trainer_state(ckpt: Path) -> dict[str, Any]:
    return torch.load(ckpt / "trainer_state.pt", weights_only=False)


def load_model_weights(model, ckpt: Path, *, lora: bool, auto_class) -> None:
    """Load a one-process checkpoint's weights into ``model`` in place: the LoRA adapter
    (``lora``), or the whole model through ``auto_class`` (``AutoModelForCausalLM``,
    ``AutoModelForSequenceClassification``). A checkpoint of the other kind is a config error."""
    from grpo_kit.errors import ConfigError
    from grpo_kit.lora import load_adapter

    if lora:
        if not is_lora_checkpoint(ckpt):
            raise ConfigError(f"{ckpt} holds a whole model, not a LoRA adapter; drop model.lora to resume it")
        load_adapter(model, ckpt)
        return
    if is_lora_checkpoint(ckpt):
        raise ConfigError(f"{ckpt} holds a LoRA adapter; resume it with the run's model.lora settings")
    saved = auto_class.from_pretrained(ckpt, dtype=next(model.parameters()).dtype)
    model.load_state_dict(saved.state_dict())
