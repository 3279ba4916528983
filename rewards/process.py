"""A process reward: a PRM scores each step of a reasoning trace; the steps' scores are aggregated.

In the style of Math-Shepherd (Wang et al. 2023, arXiv 2312.08935: a causal LM that predicts ``+``
or ``-`` at a tag after each step) and Qwen2.5-Math-PRM (Zhang et al. 2025, arXiv 2501.07301: a
two-label head read at the ``<extra_0>`` token after each step, through the chat template).

Unusual model text never raises. The tag's text written by the model itself is removed from the
steps (it would add positions the PRM reads); a step whose tag falls beyond ``max_length`` tokens
gets probability 0: a trace too long to check is not credited for its unchecked steps.

The completion is split on ``step_separator`` (blank steps dropped; a completion without one is
one step) and rebuilt as ``step_1 TAG step_2 TAG ... step_n TAG`` (``TAG`` = ``step_tag``). With a
prompt and a tokenizer that has a chat template (a chat PRM), the prompt (a string: one user
message, or a list of messages), after an optional ``system_prompt``, and that text as the
assistant message go through the template; otherwise the input is ``prompt + " " + text``. At each
position of the tag's token the PRM gives the step's probability of being correct:

- ``head="token_classification"`` (``AutoModelForTokenClassification``, Qwen2.5-Math-PRM's shape):
  ``softmax(logits)[label_index]`` (a one-label head: ``sigmoid``);
- ``head="causal_lm"`` (``AutoModelForCausalLM``, Math-Shepherd's): ``softmax`` over the logits
  of ``good_token`` and ``bad_token``, the good one's share;
- ``head="auto"``: read from the checkpoint's ``architectures``.

torch and transformers are imported inside the functions: importing :mod:`rewards` must not pay
for them.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from grpo_kit.contract import completion_text, reward
from rewards.model import _DTYPES, _load_tokenizer, _messages

AGGREGATIONS: dict[str, Callable[[list[float]], float]] = {
    "min": min,  # the weakest step (Math-Shepherd, Qwen2.5-Math-PRM's best-of-N)
    "last": lambda p: p[-1],  # the last step's
    "mean": lambda p: sum(p) / len(p),
    "product": math.prod,  # every step correct, steps independent
}
HEADS = ("auto", "token_classification", "causal_lm")
_LOADED: dict[tuple[str, str, str, str], tuple[Any, Any, str]] = {}


def _load(model: str, device: str, dtype: str, head: str) -> tuple[Any, Any, str]:
    key = (model, device, dtype, head)
    if key not in _LOADED:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForTokenClassification

        if head == "auto":
            archs = AutoConfig.from_pretrained(model).architectures or []
            if any(a.endswith("ForTokenClassification") for a in archs):
                head = "token_classification"
            elif any(a.endswith("ForCausalLM") for a in archs):
                head = "causal_lm"
            else:
                raise ValueError(f"process_reward: cannot tell the head of {model!r} from its architectures "
                                 f"{archs}; set head to token_classification or causal_lm")
        tokenizer = _load_tokenizer(model)
        tokenizer.padding_side = "right"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
        cls = AutoModelForTokenClassification if head == "token_classification" else AutoModelForCausalLM
        torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
        net = cls.from_pretrained(model, dtype=torch_dtype)
        _LOADED[key] = (net.to(device).eval(), tokenizer, head)
    return _LOADED[key]


def _one_token(tokenizer, text: str, setting: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"process_reward: {setting}={text!r} is {len(ids)} tokens of this tokenizer "
                         f"({ids}); it must be exactly one")
    return ids[0]


def split_steps(text: str, separator: str) -> list[str]:
    """The steps of ``text``: split on ``separator``, blank steps dropped; at least one step.

    >>> split_steps("a = 1\\n\\nb = 2\\n\\n", "\\n\\n"), split_steps("", "\\n\\n")
    (['a = 1', 'b = 2'], [''])
    """
    return [s for s in text.split(separator) if s.strip()] or [text]


def _inputs(tokenizer, steps: list[list[str]], prompts: list | None, step_tag: str,
            system_prompt: str | None) -> tuple[list[str], bool]:
    texts = [step_tag.join(s) + step_tag for s in steps]
    if prompts is None:
        return texts, True
    if tokenizer.chat_template:  # a chat PRM: the template writes the special tokens
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        return [tokenizer.apply_chat_template(system + _messages(p) + [{"role": "assistant", "content": t}],
                                              tokenize=False) for p, t in zip(prompts, texts)], False
    return ["\n".join(m["content"] for m in _messages(p)) + " " + t for p, t in zip(prompts, texts)], True


def step_probabilities(completions: list, prompts: list | None = None, *, model: str, step_separator: str = "\n\n",
                       step_tag: str, head: str = "auto", good_token: str = "+", bad_token: str = "-",
                       label_index: int = 1, system_prompt: str | None = None, device: str = "auto",
                       dtype: str = "auto", batch_size: int = 8, max_length: int = 4096) -> list[list[float]]:
    """Per completion, the PRM's probability that each step is correct (see the module docstring)."""
    import torch

    resolved = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    net, tokenizer, head = _load(model, resolved, dtype, head)
    tag_id = _one_token(tokenizer, step_tag.strip() or step_tag, "step_tag")
    if head == "causal_lm":
        pair = [_one_token(tokenizer, good_token, "good_token"), _one_token(tokenizer, bad_token, "bad_token")]
    elif not 0 <= label_index < net.config.num_labels:
        raise ValueError(f"process_reward: label_index={label_index} is out of range; {model!r} has "
                         f"{net.config.num_labels} labels")
    tag_text = step_tag.strip() or step_tag  # the tag written by the model itself is removed
    steps = [[t.replace(tag_text, "") for t in split_steps(completion_text(c), step_separator)] for c in completions]
    if prompts is not None and len(prompts) != len(steps):
        raise ValueError(f"process_reward: {len(prompts)} prompts for {len(steps)} completions")
    inputs, add_special = _inputs(tokenizer, steps, prompts, step_tag, system_prompt)
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
    out: list[list[float]] = [[] for _ in inputs]
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            enc = tokenizer([inputs[i] for i in rows], truncation=True, max_length=max_length,
                            add_special_tokens=add_special)["input_ids"]
            batch = tokenizer.pad({"input_ids": enc}, return_tensors="pt")
            ids = batch["input_ids"].to(net.device)  # [b, T]
            logits = net(input_ids=ids, attention_mask=batch["attention_mask"].to(net.device)).logits.float()
            for j, i in enumerate(rows):
                at = (ids[j] == tag_id).nonzero().flatten()  # [k] tag positions, k <= n_steps
                if len(at) > len(steps[i]):
                    raise ValueError(f"process_reward: completion {i}: {len(steps[i])} steps but {len(at)} tokens "
                                     f"{step_tag.strip()!r} in the input: the tokenizer makes the tag from other text")
                if head == "causal_lm":
                    p = logits[j, at][:, pair].softmax(-1)[:, 0]  # [n_steps]
                elif net.config.num_labels == 1:
                    p = logits[j, at, 0].sigmoid()
                else:
                    p = logits[j, at].softmax(-1)[:, label_index]
                # steps cut off at max_length cannot be checked: probability 0, never credited
                out[i] = [float(x) for x in p.tolist()] + [0.0] * (len(steps[i]) - len(at))
    return out


@reward("process_reward", scope="batch")
def process_reward(completions: list, prompt: list | None = None, prompts: list | None = None, *,
                   model: str | None = None, step_tag: str | None = None, step_separator: str = "\n\n",
                   aggregation: str = "min", head: str = "auto", good_token: str = "+", bad_token: str = "-",
                   label_index: int = 1, system_prompt: str | None = None, device: str = "auto",
                   dtype: str = "auto", batch_size: int = 8, max_length: int = 4096, **_) -> list[float]:
    """The PRM's step probabilities of each completion, aggregated (``min``, ``last``, ``mean``, ``product``).

    ``model`` and ``step_tag`` (the token the PRM reads after each step: ``"<extra_0>"`` for
    Qwen2.5-Math-PRM, ``" ки\\n"`` for Math-Shepherd) are required. The model is loaded once per
    (model, device, dtype, head). See the module docstring for the input and the heads.

    >>> import tempfile
    >>> from tests.tiny_models import build_tiny_prm
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = str(build_tiny_prm(tmp))  # a tiny token-classification PRM, built locally
    ...     trace = "2 + 2 = 4\\n\\nthe answer is 4"
    ...     steps = step_probabilities([trace], model=path, step_tag=" ки\\n")[0]
    ...     low, last = (process_reward([trace], model=path, step_tag=" ки\\n", aggregation=a)[0] for a in ("min", "last"))
    >>> len(steps), low == min(steps), last == steps[-1]
    (2, True, True)
    """
    if not isinstance(model, str) or not model:
        raise ValueError("process_reward: the setting 'model' is required: a local path or Hub id of a PRM "
                         "(a token-classification or causal-LM checkpoint)")
    if not isinstance(step_tag, str) or not step_tag:
        raise ValueError("process_reward: the setting 'step_tag' is required: the token the PRM scores after "
                         "each step (Qwen2.5-Math-PRM: '<extra_0>'; Math-Shepherd: ' ки\\n')")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"process_reward: unknown aggregation {aggregation!r}; valid: {', '.join(AGGREGATIONS)}")
    if head not in HEADS:
        raise ValueError(f"process_reward: unknown head {head!r}; valid: {', '.join(HEADS)}")
    if dtype not in _DTYPES:
        raise ValueError(f"process_reward: unknown dtype {dtype!r}; valid: {', '.join(_DTYPES)}")
    if not step_separator:
        raise ValueError("process_reward: step_separator must not be empty (e.g. '\\n\\n')")
    if not completions:
        return []
    probs = step_probabilities(completions, prompt if prompt is not None else prompts, model=model,
                               step_separator=step_separator, step_tag=step_tag, head=head, good_token=good_token,
                               bad_token=bad_token, label_index=label_index, system_prompt=system_prompt,
                               device=device, dtype=dtype, batch_size=batch_size, max_length=max_length)
    return [float(AGGREGATIONS[aggregation](p)) for p in probs]
