"""Prompt templates: the DeepSeek-R1-Zero base-model prompt and its chat variant.

A template is a ``str.format`` string whose placeholders are dataset columns (``{question}``);
write a literal brace as ``{{`` / ``}}``.

- ``"base"``: :data:`R1_ZERO_TEMPLATE`, the prompt of DeepSeek-R1-Zero (arXiv 2501.12948,
  Table 1). It ends with ``"Assistant: <think>"``, so the completion starts *inside* the think
  block: format rewards need ``prompt_has_think_open=True``.
- ``"chat"``: :data:`R1_SYSTEM_PROMPT` as the system message (the same instruction) and the
  question as the user message; the model opens ``<think>`` itself.
- ``"raw"``: the question as is (the ``arithmetic`` demo: the tiny tokenizer knows only digits,
  ``+`` and ``=``).

>>> R1_ZERO_TEMPLATE.format(question="What is 2+2")[-40:]
'>. User: What is 2+2. Assistant: <think>'
"""

from __future__ import annotations

from typing import Literal

PromptStyle = Literal["base", "chat", "raw"]
PROMPT_STYLES: tuple[str, ...] = ("base", "chat", "raw")

_R1_INSTRUCTION = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and "
    "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> "
    "<answer> answer here </answer>."
)

R1_ZERO_TEMPLATE = _R1_INSTRUCTION + " User: {question}. Assistant: <think>"
"""DeepSeek-R1-Zero's base-model prompt; ends inside the think block."""

R1_SYSTEM_PROMPT = _R1_INSTRUCTION
"""The same instruction as a chat system prompt (open-r1's ``SYSTEM_PROMPT`` wording)."""

QUESTION_TEMPLATE = "{question}"
"""The user message of the chat style and the whole prompt of the raw style."""


def default_template(style: PromptStyle) -> str:
    """The template used when a task config gives none.

    >>> default_template("raw")
    '{question}'
    >>> default_template("base").endswith("Assistant: <think>")
    True
    """
    return R1_ZERO_TEMPLATE if style == "base" else QUESTION_TEMPLATE


def prompt_opens_think(style: PromptStyle, template: str) -> bool:
    """True when the prompt itself ends with ``<think>`` (format rewards must know it).

    >>> prompt_opens_think("base", R1_ZERO_TEMPLATE), prompt_opens_think("chat", "{question}")
    (True, False)
    """
    return style != "chat" and template.rstrip().endswith("<think>")
