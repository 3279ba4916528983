"""A learned reward: the score of an ``AutoModelForSequenceClassification`` checkpoint.

torch and transformers are imported inside the functions: importing :mod:`rewards` (which every
scorer worker does) must not pay for them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grpo_kit.contract import completion_text, reward

_DTYPES = ("auto", "float32", "bfloat16", "float16")
_GENERIC_TOKENIZER_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")
_LOADED: dict[tuple[str, str, str], tuple[Any, Any]] = {}
"""(model, device, dtype) -> (model, tokenizer): each checkpoint is loaded once per process."""


def _load_tokenizer(model: str):
    """AutoTokenizer, except for a local checkpoint whose ``tokenizer_config.json`` declares the
    generic fast class: transformers 5's AutoTokenizer would swap in the model type's tokenizer
    class (e.g. Qwen2Tokenizer) and change the ids, so that one is loaded as declared."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    config_file = Path(model).expanduser() / "tokenizer_config.json"
    if config_file.is_file():
        declared = json.loads(config_file.read_text()).get("tokenizer_class")
        if declared in _GENERIC_TOKENIZER_CLASSES:
            return PreTrainedTokenizerFast.from_pretrained(model)
    return AutoTokenizer.from_pretrained(model)


def _load(model: str, device: str, dtype: str) -> tuple[Any, Any]:
    key = (model, device, dtype)
    if key not in _LOADED:
        import torch
        from transformers import AutoModelForSequenceClassification

        tokenizer = _load_tokenizer(model)
        tokenizer.padding_side = "right"  # positions of real tokens do not depend on the batch
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError(f"reward_model: the tokenizer of {model!r} has neither a pad nor an eos token")
            tokenizer.pad_token = tokenizer.eos_token
        torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
        net = AutoModelForSequenceClassification.from_pretrained(model, dtype=torch_dtype)
        # The classifier scores the last token that is not padding, found by the model's pad id.
        net.config.pad_token_id = tokenizer.pad_token_id
        _LOADED[key] = (net.to(device).eval(), tokenizer)
    return _LOADED[key]


def _messages(prompt) -> list[dict]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, dict):
        return [prompt]
    if isinstance(prompt, (list, tuple)) and all(isinstance(m, dict) and "content" in m for m in prompt):
        return list(prompt)
    raise ValueError(f"reward_model: a 'prompt' must be a string or a list of chat messages, got {prompt!r:.80}")


def _model_inputs(tokenizer, texts: list[str], prompts: list | None) -> tuple[list[str], bool]:
    """The strings to score and whether the tokenizer should add its special tokens to them."""
    if prompts is None:
        return texts, True
    if len(prompts) != len(texts):
        raise ValueError(f"reward_model: {len(prompts)} prompts for {len(texts)} completions")
    if tokenizer.chat_template:  # the template writes the special tokens itself
        return [
            tokenizer.apply_chat_template(_messages(p) + [{"role": "assistant", "content": t}], tokenize=False)
            for p, t in zip(prompts, texts)
        ], False
    return ["\n".join(m["content"] for m in _messages(p)) + t for p, t in zip(prompts, texts)], True


def _check_settings(model, device, dtype, batch_size, max_length) -> None:
    if not isinstance(model, str) or not model:
        raise ValueError(
            "reward_model: the setting 'model' is required: a local path or Hub id of an "
            "AutoModelForSequenceClassification checkpoint"
        )
    if dtype not in _DTYPES:
        raise ValueError(f"reward_model: unknown dtype {dtype!r}; valid: {', '.join(_DTYPES)}")
    if not isinstance(device, str) or not device:
        raise ValueError(f"reward_model: device must be 'auto' or a torch device string, got {device!r}")
    for setting, value in (("batch_size", batch_size), ("max_length", max_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"reward_model: the setting {setting!r} must be a positive integer, got {value!r}")


@reward("reward_model", scope="batch")
def reward_model(
    completions: list,
    prompt: list | None = None,
    prompts: list | None = None,
    *,
    model: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = 8,
    max_length: int = 4096,
    label_index: int = 0,
    **_,
) -> list[float]:
    """The learned reward ``logits[:, label_index]`` of a sequence-classification checkpoint.

    ``model`` (required) is a local path or Hub id; it is loaded once per (model, device, dtype)
    and kept. ``device="auto"`` is ``cuda`` when there is a GPU, else ``cpu``; ``dtype="auto"`` is
    the checkpoint's. With a ``prompt`` column (or TRL's ``prompts``), each prompt (a string: one
    user message; or a list of messages) and its completion (the assistant message) go through the
    tokenizer's chat template when it has one, else are joined as ``prompt + completion``. Inputs
    are scored ``batch_size`` at a time (sorted by length, padded on the right), truncated to
    ``max_length`` tokens on the tokenizer's truncation side. An input with no tokens at all (an
    empty completion without prompt or BOS) is scored as a single pad token.

    >>> import tempfile
    >>> from tests.tiny_models import build_tiny_classifier
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = str(build_tiny_classifier(tmp))  # a tiny Qwen2 classifier, built locally
    ...     scores = reward_model(["4", "the answer is 4"], prompt=["what is 2 + 2 ?"] * 2, model=path)
    >>> len(scores), all(isinstance(s, float) for s in scores), scores[0] != scores[1]
    (2, True, True)
    """
    _check_settings(model, device, dtype, batch_size, max_length)
    texts = [completion_text(c) for c in completions]
    if not texts:
        return []
    import torch

    resolved = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    net, tokenizer = _load(model, resolved, dtype)
    if isinstance(label_index, bool) or not isinstance(label_index, int) or not 0 <= label_index < net.config.num_labels:
        raise ValueError(
            f"reward_model: label_index={label_index!r} is out of range; {model!r} has {net.config.num_labels} labels"
        )
    inputs, add_special_tokens = _model_inputs(tokenizer, texts, prompt if prompt is not None else prompts)
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))  # similar lengths share a batch
    scores = [0.0] * len(inputs)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            encoded = tokenizer(
                [inputs[i] for i in rows],
                truncation=True,
                max_length=max_length,
                add_special_tokens=add_special_tokens,
            )["input_ids"]
            # a text with no tokens at all (an empty completion, no prompt, no BOS) is one pad token
            encoded = [ids or [tokenizer.pad_token_id] for ids in encoded]
            batch = tokenizer.pad({"input_ids": encoded}, return_tensors="pt")
            logits = net(
                input_ids=batch["input_ids"].to(net.device), attention_mask=batch["attention_mask"].to(net.device)
            ).logits  # [b, num_labels]
            for i, value in zip(rows, logits[:, label_index].float().tolist()):
                scores[i] = float(value)
    return scores
