"""Preference pairs: reading and checking them, and the token ids a reward model scores.

Rows are read with :class:`grpo_kit.data.RowStream` (JSONL, Parquet, a `datasets` folder or a hub
id); a malformed row raises :class:`~grpo_kit.data.InputError` naming the file, the line (JSONL)
or row, and the field.

A completion is turned into text exactly as the ``reward_model`` reward does it
(``rewards.model._model_inputs``): with a prompt and a chat template, the prompt (a string =
one user message, or a list of messages) and the completion (the assistant message) go through
the template; without a template they are joined. So a model trained here scores in training
what it saw in ``rm train``.

    >>> import tempfile
    >>> from pathlib import Path
    >>> f = Path(tempfile.mkdtemp()) / "pairs.jsonl"
    >>> _ = f.write_text('{"prompt": "1+1=", "chosen": "2", "rejected": "3", "margin": 1}\\n'
    ...                  '{"prompt": "1+2=", "chosen": "3", "rejected": 4}\\n')
    >>> read_pairs(f)
    Traceback (most recent call last):
    ...
    grpo_kit.data.InputError: ...pairs.jsonl, line 2: field 'rejected' must be a string or a list of chat messages, got int
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpo_kit.contract import completion_text
from grpo_kit.data import InputError, RowStream, check_completion
from rewards.model import _model_inputs as model_inputs  # the very formatting reward_model scores


_PAIR_FIELDS = ("prompt", "chosen", "rejected", "margin", "category")


@dataclass
class Pair:
    prompt: Any  # a string, chat messages, or None
    chosen: Any
    rejected: Any
    margin: float = 0.0
    category: str | None = None
    columns: dict[str, Any] = field(default_factory=dict)  # the row's other fields (for rule rewards)


def _check_row(where: str, row: dict[str, Any]) -> Pair:
    reason = check_completion(row.get("rejected"), "rejected")
    prompt = row.get("prompt")
    if reason is None and prompt is not None and not isinstance(prompt, str):
        reason = check_completion(prompt, "prompt")
        if reason is not None:
            reason = f"field 'prompt' must be a string, a list of chat messages or absent, got {type(prompt).__name__}"
    margin = row.get("margin")
    if reason is None and margin is not None:
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
            reason = f"field 'margin' must be a finite number or absent, got {margin!r:.40}"
    category = row.get("category")
    if reason is None and category is not None and not isinstance(category, str):
        reason = f"field 'category' must be a string or absent, got {type(category).__name__}"
    if reason is not None:
        raise InputError(f"{where}: {reason}")
    rest = {k: v for k, v in row.items() if k not in _PAIR_FIELDS}
    return Pair(prompt, row["chosen"], row["rejected"], float(margin or 0.0), category, rest)


def read_pairs(path: str | Path, split: str = "train") -> list[Pair]:
    """Every pair of ``path``, checked (see the module docstring)."""
    pairs = [_check_row(where, row) for where, row in RowStream(path, completion_column="chosen", split=split)]
    if not pairs:
        raise InputError(f"{path}: no preference pairs (rows with prompt, chosen, rejected)")
    return pairs


def pair_texts(tokenizer, pairs: list[Pair]) -> tuple[list[str], list[str], bool]:
    """The chosen and rejected texts as ``reward_model`` builds them, and whether the tokenizer
    adds its special tokens (not when a chat template wrote them)."""
    with_prompt = [p.prompt is not None for p in pairs]
    if any(with_prompt) and not all(with_prompt):
        raise InputError("some pairs have a prompt and some do not; give every row a prompt (or none)")
    prompts = [p.prompt for p in pairs] if all(with_prompt) else None
    chosen, add = model_inputs(tokenizer, [completion_text(p.chosen) for p in pairs], prompts)
    rejected, _ = model_inputs(tokenizer, [completion_text(p.rejected) for p in pairs], prompts)
    return chosen, rejected, add


def encode_pairs(tokenizer, pairs: list[Pair], max_length: int) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids of the chosen and rejected inputs, truncated to ``max_length`` (an input with
    no tokens at all is one pad token, as ``reward_model`` scores it)."""
    chosen, rejected, add = pair_texts(tokenizer, pairs)

    def ids(texts: list[str]) -> list[list[int]]:
        enc = tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=add)["input_ids"]
        return [list(x) or [tokenizer.pad_token_id] for x in enc]

    return ids(chosen), ids(rejected)
