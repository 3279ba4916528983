"""Tiny models built locally for tests: no Hub access needed, a few hundred KB on disk."""

from __future__ import annotations

import json
from pathlib import Path

CHAT_TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
SPECIAL_TOKENS = ["<pad>", "<eos>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
WORDS = (
    "<think> </think> <answer> </answer> the a an is of and to in what answer question please solve "
    "hello world yes no good bad cat dog sat on mat = + - * / ( ) . , ? ! "
    "0 1 2 3 4 5 6 7 8 9 10 11 12 24 42 100"
).split()


def build_tiny_tokenizer(path: str | Path, *, chat_template: bool = True, extra_words: tuple[str, ...] = ()):
    """A word-level tokenizer (whitespace split, ``<unk>`` for unknown words) with pad/eos tokens,
    right padding and, optionally, the simple chat template ``<|role|> content <|end|> ...``.

    Saved with ``tokenizer_class: PreTrainedTokenizerFast`` in ``tokenizer_config.json``; load it
    with ``PreTrainedTokenizerFast.from_pretrained`` (transformers 5's ``AutoTokenizer`` turns it
    into the model type's tokenizer class, which changes the ids).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIAL_TOKENS + WORDS + list(extra_words))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    tokenizer.padding_side = "right"
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    path = Path(path)
    tokenizer.save_pretrained(path)
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.update(tokenizer_class="PreTrainedTokenizerFast", padding_side="right")
    config_file.write_text(json.dumps(config, indent=2))
    return tokenizer


def build_tiny_classifier(path: str | Path, *, seed: int = 0, chat_template: bool = True) -> Path:
    """Save a tiny ``Qwen2ForSequenceClassification`` (hidden 32, 1 layer, ``num_labels=1``) and its
    tokenizer (:func:`build_tiny_tokenizer`) into ``path``; return ``path``.

    ``initializer_range=0.2`` so different texts get clearly different scores.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    path = Path(path)
    tokenizer = build_tiny_tokenizer(path, chat_template=chat_template)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        initializer_range=0.2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    Qwen2ForSequenceClassification(config).save_pretrained(path)
    return path


def build_tiny_prm(path: str | Path, *, seed: int = 0, head: str = "token_classification",
                   chat_template: bool = True) -> Path:
    """Save a tiny process reward model and its tokenizer (:func:`build_tiny_tokenizer` plus the
    step tag ``ки``) into ``path``; return ``path``. ``head``: ``token_classification`` (a
    ``Qwen2ForTokenClassification`` with 2 labels, Qwen2.5-Math-PRM's shape) or ``causal_lm`` (a
    ``Qwen2ForCausalLM`` read at ``+`` / ``-``, Math-Shepherd's). Hidden 32, 1 layer, random
    weights (``initializer_range=0.2``: steps get clearly different probabilities)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2ForTokenClassification

    path = Path(path)
    tokenizer = build_tiny_tokenizer(path, chat_template=chat_template, extra_words=("ки",))
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512, num_labels=2,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=None, initializer_range=0.2, tie_word_embeddings=False)
    torch.manual_seed(seed)
    (Qwen2ForTokenClassification if head == "token_classification" else Qwen2ForCausalLM)(config).save_pretrained(path)
    return path


# --------------------------------------------------------------------------- the recipes' stand-in
# Lives with the tests, not in the package: only the recipe tests need it.

STAND_IN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
STAND_IN_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_stand_in(out_dir: str | Path, *, seed: int = 0) -> Path:
    """A randomly initialised Qwen2 of ~140k parameters that reads any text: the stand-in for a
    real model when checking that a recipe loads, resolves and trains (``tests/test_recipes.py``, ``tests/test_vllm_sampler.py``).

    Tokenizer: byte-level BPE with no merges (one token per byte, as Qwen's tokenizer before its
    merges) plus Qwen's ``<|endoftext|>`` (eos and pad), ``<|im_start|>`` and ``<|im_end|>``, and a
    ChatML template; every loader (``PreTrainedTokenizerFast``, ``AutoTokenizer``, vLLM) gives the
    same ids. Model: hidden 64, 2 layers, head_dim 32, 4096 positions.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from grpo_kit.demo import new_qwen2, save_tokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab.update({t: len(vocab) + i for i, t in enumerate(STAND_IN_SPECIALS)})
    backend = Tokenizer(models.BPE(vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                  additional_special_tokens=STAND_IN_SPECIALS[1:], padding_side="left",
                                  chat_template=STAND_IN_CHAT_TEMPLATE)
    save_tokenizer(tok, out_dir)
    new_qwen2(tok, len(vocab), seed, max_position_embeddings=4096).save_pretrained(out_dir)
    return out_dir
