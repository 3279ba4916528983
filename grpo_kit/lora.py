"""LoRA through peft: the adapter on the policy, the reference for free, merged weights for vLLM.

LoRA (Hu et al. 2021, arXiv 2106.09685) replaces ``W x`` by ``W x + (alpha / r) B A x`` with ``W``
frozen, ``A`` ``[r, in]`` and ``B`` ``[out, r]`` trained (``B`` starts at zero, so the adapted
model starts equal to the base). What grpo-kit adds to peft:

- :func:`apply_lora`: ``peft.get_peft_model`` with the config's settings, the errors of a wrong
  ``target_modules`` turned into a :class:`~grpo_kit.errors.ConfigError` that lists the model's
  linear layers; the trainable parameters (adapter, ``modules_to_save``) kept in float32 whatever
  the frozen base's dtype (bf16 on a GPU).
- :class:`AdapterDisabled`: the reference model of the KL term is the same module with the adapter
  switched off (peft's ``disable_adapter()``), not a second copy of the weights.
- :func:`hf_weights`: the weights a plain Hugging Face model of the base architecture would hold,
  ``W + (alpha / r) B A`` for every adapted layer, computed one layer at a time (on a sharded
  model each tensor is gathered as it is reached): what the vLLM sampler loads after every step.
  The trainer's model itself is never merged.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch

from grpo_kit.dist import full_tensors
from grpo_kit.errors import ConfigError

ADAPTER = "default"  # peft's name of the one adapter
_PREFIX = "base_model.model."  # a PeftModel's state-dict keys: this, then the base model's


def is_peft(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def linear_names(model: torch.nn.Module) -> list[str]:
    """The distinct last names of the model's ``nn.Linear`` layers (what ``target_modules`` matches)."""
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})


def apply_lora(model, *, r: int, alpha: float, dropout: float, target_modules: str | list[str],
               modules_to_save: list[str] | None, task_type: str = "CAUSAL_LM"):
    """``model`` (a transformers causal LM) with a LoRA adapter, as a ``peft.PeftModel``; the base
    weights frozen, the trainable ones float32. ``task_type="SEQ_CLS"``: a sequence classifier
    (a reward model), whose new head (``score`` / ``classifier``) peft trains whole."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer

    choices = linear_names(model)
    tied = getattr(model.config, "tie_word_embeddings", False)
    if tied and {m.rsplit(".", 1)[-1] for m in modules_to_save or []} & {"lm_head", "embed_tokens"}:
        # a trained copy of one would silently untie it from the other (and vLLM loads only the embedding)
        raise ConfigError(f"model.lora.modules_to_save {list(modules_to_save)}: this model ties lm_head to "
                          "embed_tokens; training either one whole is not supported with LoRA")
    lcfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                      modules_to_save=list(modules_to_save) or None, bias="none", task_type=task_type)
    try:
        peft_model = get_peft_model(model, lcfg, autocast_adapter_dtype=True)
    except ValueError as e:
        raise ConfigError(f"model.lora.target_modules {target_modules!r}: {str(e).rstrip('.')}. The model's linear layers are "
                          f"named {', '.join(choices)} (or use all-linear)") from None
    for name, m in peft_model.named_modules():
        if isinstance(m, LoraLayer) and not isinstance(m, LoraLinear):
            raise ConfigError(f"model.lora.target_modules matches {name} ({type(m).__name__}); only linear "
                              f"layers are supported ({', '.join(choices)}); train embeddings whole with "
                              "model.lora.modules_to_save")
    for p in peft_model.parameters():
        if p.requires_grad and p.dtype != torch.float32:  # modules_to_save copies keep the base's dtype
            p.data = p.data.float()
    return peft_model


def parameter_counts(model) -> tuple[int, int]:
    """(trainable, total) parameters."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


class AdapterDisabled:
    """The base model of a peft model, for the reference log-probs: every call runs with the
    adapter (and ``modules_to_save``) switched off, the same weights in memory."""

    def __init__(self, model):
        self.model = model

    def __call__(self, *args: Any, **kwargs: Any):
        with self.model.disable_adapter():
            return self.model(*args, **kwargs)

    def get_base_model(self):
        return self.model.get_base_model()


def hf_weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of the plain model ``model`` stands for: its own state dict, or for a peft
    model the base model's names with every adapted ``W`` replaced by ``W + scaling * B @ A``
    (computed in float32, returned in ``W``'s dtype) and ``modules_to_save`` replaced by the trained
    copy. A generator, and a collective on a sharded model: every rank must iterate to the end."""
    if not is_peft(model):
        yield from full_tensors(model)
        return
    from peft.tuners.lora import LoraLayer

    scaling = {n.removeprefix(_PREFIX): m.scaling[ADAPTER] for n, m in model.named_modules()
               if isinstance(m, LoraLayer)}
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in full_tensors(model):
        key = key.removeprefix(_PREFIX)
        if ".original_module." in key:  # modules_to_save: the frozen original, superseded
            continue
        if f".modules_to_save.{ADAPTER}." in key:
            yield key.replace(f".modules_to_save.{ADAPTER}.", "."), t
            continue
        for part, role in ((f".lora_A.{ADAPTER}.weight", "A"), (f".lora_B.{ADAPTER}.weight", "B"),
                           (".base_layer.weight", "W")):
            if key.endswith(part):
                module = key[:-len(part)]
                got = pending.setdefault(module, {})
                got[role] = t
                if len(got) == 3:
                    del pending[module]
                    W = got["W"]
                    delta = got["B"].float() @ got["A"].float()  # [out, r] @ [r, in]
                    yield f"{module}.weight", (W.float() + scaling[module] * delta).to(W.dtype)
                break
        else:
            yield key.replace(".base_layer.", "."), t
    if pending:
        raise RuntimeError(f"LoRA layers without their weights in the state dict: {sorted(pending)}")


def full_adapter_state(model) -> dict[str, torch.Tensor]:
    """The trainable weights of a (sharded) peft model, whole, on the CPU of rank 0 (empty on the
    other ranks): what ``model.save_pretrained(folder, state_dict=...)`` writes. A collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True,
                                                                ignore_frozen_params=True))


def load_adapter(model, folder) -> None:
    """Load the adapter a checkpoint saved (peft's ``adapter_model.safetensors``) into ``model``,
    in place; every adapter weight must be found."""
    from pathlib import Path

    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(folder) / "adapter_model.safetensors"
    if not path.is_file():
        raise ConfigError(f"{folder}: no adapter_model.safetensors (not a LoRA checkpoint)")
    what = f"{path} does not match model.lora (r, target_modules, modules_to_save)"
    try:
        result = set_peft_model_state_dict(model, load_file(str(path)))
    except RuntimeError as e:  # shapes differ (another r)
        raise ConfigError(f"{what}: {str(e).splitlines()[-1].strip()}") from None
    missing = [k for k in result.missing_keys if "lora_" in k or "modules_to_save" in k]
    if missing or result.unexpected_keys:
        raise ConfigError(f"{what}: missing {missing[:3]}, unexpected {list(result.unexpected_keys)[:3]}")
