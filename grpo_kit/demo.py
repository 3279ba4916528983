"""The tiny demo model: a ~124k-parameter Qwen2 that learns ``a+b=`` by GRPO on 2 CPU cores.

Built locally (no hub), from a recipe that met the demo's targets at all 13 seeds tried in a
plain-PyTorch prototype:

- **Tokenizer**: word level, 14 tokens (``<pad>``, ``<eos>``, ``0``-``9``, ``+``, ``=``), one
  character per token (spaces are dropped), decoded without spaces (``[1, 2] -> "12"``), left
  padding, a trivial chat template (the messages' contents concatenated).
- **Model**: ``Qwen2Config`` hidden 64, intermediate 256, 2 layers, 2 heads, 1 KV head (head_dim
  32, which vLLM's CPU attention accepts), tied embeddings, ``initializer_range=0.1`` (at the
  default 0.02 this model learns addition very slowly).
- **Format-only warm start**: ``warm_start_steps`` AdamW steps (lr 3e-3) of supervised next-token
  training on 128 examples ``a+b=`` followed by a *uniformly random* answer 0..18 and ``<eos>``,
  the loss on the answer and ``<eos>`` tokens only. The model learns the format (one or two
  digits, then ``<eos>``), not the sums: greedy accuracy on the 100 facts stays near 1/19, the
  start of the GRPO curve.

Loading it back: ``AutoModelForCausalLM.from_pretrained(path)``; for the tokenizer prefer
``PreTrainedTokenizerFast.from_pretrained(path)``. transformers 5's ``AutoTokenizer`` rebuilds it
as ``Qwen2Tokenizer`` (byte-level pre-tokenizer and decoder, whatever ``tokenizer_class`` says) for
a qwen2 config; the ids and decoded text of digits, ``+``, ``=`` and the special tokens are the
same, and ``unk_token: null`` in ``tokenizer_config.json`` stops it from adding a 15th token
(``<|endoftext|>``, outside the embedding). Characters outside the vocabulary raise an error with
``PreTrainedTokenizerFast`` and are dropped by ``Qwen2Tokenizer``.

>>> TOKENS[:3], len(TOKENS)
(['<pad>', '<eos>', '0'], 14)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

TOKENS = ["<pad>", "<eos>", *"0123456789", "+", "="]
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
MODEL = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=1, tie_word_embeddings=True, initializer_range=0.1,
             max_position_embeddings=128)
WARM_START = dict(batch_size=128, lr=3e-3, max_operand=9, max_answer=18)
MARKER = "grpo_kit_demo.json"


DEMO_STEPS = 800


def demo_config(seed: int = 0) -> dict[str, Any]:
    """The built-in demo's config: the tiny model of :func:`build_tiny_model` learns a+b on the CPU
    (see the README)."""
    return {
        "model": {"path": "<built by grpo_kit.demo.build_tiny_model>"},
        "task": {"name": "arithmetic"},
        "sampling": {"n": 16, "temperature": 1.0, "max_new_tokens": 3},
        "algorithm": {"type": "grpo", "advantage": "grpo", "loss_agg": "token_mean",
                      "kl": {"beta": 0.04, "estimator": "k3"}},
        "optim": {"lr": 1e-3, "betas": [0.9, 0.99], "grad_clip": None},
        "scoring": {"workers": 1, "timeout": 5.0},
        "train": {"steps": DEMO_STEPS, "prompts_per_step": 16, "seed": seed, "samples_every": 100,
                  "save_every": 250, "torch_threads": 2,
                  "shared_prefix": "auto"},  # each group's prompt computed once where it can be
        "run": {"name": "demo"},
    }


def build_tokenizer(out_dir: str | Path, tokens: list[str] | None = None, tags: list[str] = ()):
    """The 14-token character tokenizer, saved into ``out_dir`` (left padding, ``<eos>``, ``<pad>``).

    >>> import tempfile
    >>> tok = build_tokenizer(tempfile.mkdtemp())
    >>> tok("12+7=19<eos>").input_ids, tok.decode([3, 4, 1], skip_special_tokens=True)
    ([3, 4, 12, 9, 13, 3, 11, 1], '12')
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokens = list(tokens or TOKENS) + list(tags)
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex("."), behavior="isolated")]
    )
    backend.decoder = decoders.Fuse()  # "1", "2" -> "12" (the default joins with spaces)
    if tags:  # whole words (``<output>``), matched before the split into characters, kept in decoded text
        backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in tags])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>",
                                        padding_side="left", chat_template=CHAT_TEMPLATE)
    # unk_token null keeps AutoTokenizer's Qwen2Tokenizer at 14 tokens
    save_tokenizer(tokenizer, Path(out_dir), unk_token=None)
    return tokenizer


def save_tokenizer(tokenizer, out_dir: Path, **extra) -> None:
    """``save_pretrained``, then write the class and ``padding_side`` (otherwise lost) into
    ``tokenizer_config.json``, with ``extra`` keys."""
    tokenizer.save_pretrained(out_dir)
    config_file = out_dir / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.update(tokenizer_class="PreTrainedTokenizerFast", padding_side="left", **extra)
    config_file.write_text(json.dumps(config, indent=2) + "\n")


def new_qwen2(tokenizer, vocab_size: int, seed: int, **overrides):
    """A freshly initialised Qwen2 of the :data:`MODEL` shape whose generation config uses the
    tokenizer's pad and eos and no bos."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=vocab_size, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None, **{**MODEL, **overrides})
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    return model


def warm_start_batch(batch_size: int, *, max_operand: int = 9, max_answer: int = 18):
    """``a+b=`` + a uniformly random answer in 0..max_answer + ``<eos>``, right-padded to 7 tokens.

    Returns ``(input_ids, attention_mask, labels)``, each ``[B, 7]``; ``labels`` is -100 except on
    the answer and ``<eos>`` tokens. Ids are the positions in :data:`TOKENS`; uses torch's global RNG.
    """
    import torch

    ids = {t: i for i, t in enumerate(TOKENS)}
    digit = ids["0"]  # digits are consecutive ids
    a = torch.randint(0, max_operand + 1, (batch_size,))
    b = torch.randint(0, max_operand + 1, (batch_size,))
    answer = torch.randint(0, max_answer + 1, (batch_size,))
    two = answer >= 10
    pad, eos = torch.full_like(a, ids["<pad>"]), torch.full_like(a, ids["<eos>"])
    columns = [
        digit + a, torch.full_like(a, ids["+"]), digit + b, torch.full_like(a, ids["="]),
        torch.where(two, digit + answer // 10, digit + answer),
        torch.where(two, digit + answer % 10, eos),
        torch.where(two, eos, pad),
    ]
    input_ids = torch.stack(columns, dim=1)  # [B, 7]
    attention_mask = (input_ids != ids["<pad>"]).long()
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, :4] = -100  # no loss on the prompt
    return input_ids, attention_mask, labels


def build_tiny_model(out_dir: str | Path, *, seed: int = 0, warm_start_steps: int = 200) -> Path:
    """Build, warm-start and save the demo model and tokenizer into ``out_dir``; return its path.

    Writes ``grpo_kit_demo.json`` there with the recipe and the final warm-start loss. About 3-5 s
    on 2 CPU cores (``torch.set_num_threads`` is the caller's). ``warm_start_steps=0`` saves the
    randomly initialised model.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(out_dir)
    model = new_qwen2(tokenizer, len(TOKENS), seed)
    start, loss = time.perf_counter(), None
    if warm_start_steps > 0:
        loss = _warm_start(model, warm_start_steps)
    model.save_pretrained(out_dir)
    recipe = {
        "what": "grpo-kit tiny demo model for the `arithmetic` task (a+b=, a, b in 0..9)",
        "tokens": TOKENS, "model": MODEL, "parameters": sum(p.numel() for p in model.parameters()),
        "seed": seed,
        "warm_start": {**WARM_START, "steps": warm_start_steps, "optimizer": "AdamW",
                       "answers": "uniformly random 0..18 (format only, not sums)",
                       "final_loss": loss, "seconds": round(time.perf_counter() - start, 2)},
    }
    (out_dir / MARKER).write_text(json.dumps(recipe, indent=2) + "\n")
    return out_dir


def _warm_start(model, steps: int) -> float:
    """Format-only supervised warm start (see the module docstring); returns the last loss."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=WARM_START["lr"])
    model.train()
    for _ in range(steps):
        input_ids, attention_mask, labels = warm_start_batch(
            WARM_START["batch_size"], max_operand=WARM_START["max_operand"], max_answer=WARM_START["max_answer"]
        )
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    return round(loss.detach().item(), 4)


# --------------------------------------------------------------------------- the tools demo

TOOL_TOKENS = ["<pad>", "<eos>", *"0123456789", "*", "="]
TOOL_TAGS = ["<calculator>", "</calculator>", "<output>", "</output>"]
TOOLS_WARM_START = dict(batch_size=128, lr=3e-3, tool_rate=0.1, min_operand=10, max_operand=99)
TOOLS_DEMO_STEPS = 500


def tools_demo_config(seed: int = 0) -> dict[str, Any]:
    """The tools demo's config: products ``a*b=`` of two-digit numbers, which the tiny model cannot
    memorise but can look up with the ``calculator`` tool (``<calculator>a*b</calculator>``, the
    ``tag`` format); rewarded by ``tool_answer``, the exact match of what follows the last output."""
    return {
        "model": {"path": "<built by grpo_kit.demo.build_tools_model>"},
        "task": {"name": "arithmetic", "args": {"ops": ["*"], "min_operand": 10, "max_operand": 99}},
        "rewards": [{"name": "tool_answer"}],
        "tools": {"names": ["calculator"], "format": "tag", "max_turns": 2},
        "sampling": {"n": 8, "temperature": 1.0, "max_new_tokens": 24},
        "algorithm": {"type": "grpo", "advantage": "grpo", "loss_agg": "token_mean", "kl": {"beta": 0.0}},
        "optim": {"lr": 1e-3, "betas": [0.9, 0.99], "grad_clip": 1.0},
        "scoring": {"workers": 1, "timeout": 5.0},
        "train": {"steps": TOOLS_DEMO_STEPS, "prompts_per_step": 16, "seed": seed, "samples_every": 50,
                  "save_every": 100, "torch_threads": 2},
        "run": {"name": "demo-tools"},
    }


def tools_warm_start_batch(batch_size: int, *, tool_rate: float, min_operand: int = 10, max_operand: int = 99):
    """The tools demo's format-only examples: ``a*b=`` then, at ``tool_rate``, the tool path
    ``<calculator>a*b</calculator><output>P</output>P<eos>`` (the call copies the prompt's operands,
    the answer copies the output), else a uniformly random 3-4 digit answer and ``<eos>``: the model
    learns both formats and never the products. Returns ``(input_ids, attention_mask, labels)``,
    right-padded; labels are -100 on the prompt, on the output block (a tool's tokens, as in
    training) and on padding. Uses Python's ``random`` module."""
    import random

    import torch

    ids = {t: i for i, t in enumerate(TOOL_TOKENS + TOOL_TAGS)}
    num = lambda n: [ids[c] for c in str(n)]  # noqa: E731
    rows, masks = [], []
    for _ in range(batch_size):
        a, b = random.randint(min_operand, max_operand), random.randint(min_operand, max_operand)
        prompt = num(a) + [ids["*"]] + num(b) + [ids["="]]
        if random.random() < tool_rate:
            call = [ids["<calculator>"], *num(a), ids["*"], *num(b), ids["</calculator>"]]
            out = [ids["<output>"], *num(a * b), ids["</output>"]]
            tail = num(a * b) + [ids["<eos>"]]
            seq, learn = prompt + call + out + tail, [0] * len(prompt) + [1] * len(call) + [0] * len(out) + [1] * len(tail)
        else:
            tail = num(random.randint(min_operand * min_operand, max_operand * max_operand)) + [ids["<eos>"]]
            seq, learn = prompt + tail, [0] * len(prompt) + [1] * len(tail)
        rows.append(seq)
        masks.append(learn)
    width = max(map(len, rows))
    input_ids = torch.tensor([r + [ids["<pad>"]] * (width - len(r)) for r in rows])
    attention_mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    learn = torch.tensor([m + [0] * (width - len(m)) for m in masks])
    return input_ids, attention_mask, input_ids.masked_fill(learn == 0, -100)


def build_tools_model(out_dir: str | Path, *, seed: int = 0, warm_start_steps: int = 300,
                      tool_rate: float | None = None) -> Path:
    """Build, warm-start (:func:`tools_warm_start_batch`) and save the tools demo's model into
    ``out_dir``: the :data:`MODEL` shape over the 18-token vocabulary of the products and tags."""
    import random

    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(out_dir, TOOL_TOKENS, TOOL_TAGS)
    model = new_qwen2(tokenizer, len(TOOL_TOKENS) + len(TOOL_TAGS), seed)
    ws = {**TOOLS_WARM_START, **({"tool_rate": tool_rate} if tool_rate is not None else {})}
    random.seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=ws["lr"])
    start, loss = time.perf_counter(), None
    model.train()
    for _ in range(warm_start_steps):
        input_ids, attention_mask, labels = tools_warm_start_batch(
            ws["batch_size"], tool_rate=ws["tool_rate"], min_operand=ws["min_operand"], max_operand=ws["max_operand"])
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        loss = round(out.loss.detach().item(), 4)
    model.eval()
    model.save_pretrained(out_dir)
    recipe = {"what": "grpo-kit tools demo model: a*b= with the calculator tool (tag format)",
              "tokens": TOOL_TOKENS + TOOL_TAGS, "model": MODEL, "seed": seed,
              "parameters": sum(p.numel() for p in model.parameters()),
              "warm_start": {**ws, "steps": warm_start_steps, "final_loss": loss,
                             "seconds": round(time.perf_counter() - start, 2)}}
    (out_dir / MARKER).write_text(json.dumps(recipe, indent=2) + "\n")
    return out_dir
