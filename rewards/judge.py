"""``llm_judge``: a language model grades each completion against a rubric and the gold answer, through
any OpenAI-compatible chat endpoint (vLLM's ``vllm serve``, SGLang, a hosted API).

**The strict score format.** The judge's reply (after its last ``</think>``, if it thinks aloud) must
end with one line ``SCORE: X``: ``SCORE:`` in capitals, a decimal number ``X`` (``7``, ``-1``,
``8.5``) in ``[min_score, max_score]``, nothing after it but blank space, and no other ``SCORE:`` line.
The reward is ``(X - min_score) / (max_score - min_score)``, in [0, 1]. Anything else (no score line,
two of them, a word for a number, a score out of range, an empty or cut-off reply) is a *malformed
judgement*: the call fails with the judge's text in the reason, recorded as a failure under
``scoring.on_error``, never scored 0.

>>> parse_judgement("The answer matches the reference.\\nSCORE: 8", 0, 10)
0.8
>>> parse_judgement("<think>SCORE: 2? no</think>Correct.\\nSCORE: 10", 0, 10)
1.0
>>> parse_judgement("I would say 8/10.", 0, 10)
Traceback (most recent call last):
...
rewards.judge.MalformedJudgement: no line 'SCORE: X' at the end of the reply
"""

from __future__ import annotations

import re
import string
from typing import Any

from grpo_kit.contract import completion_text, reward
from rewards._http import auth_headers, check_client_settings, post_json, run_bounded

DEFAULT_TEMPLATE = """You are grading an answer to a question against the reference answer.

Question:
{prompt}

Reference answer:
{answer}

Answer to grade:
{completion}

Grade the answer from 0 (wrong) to 10 (correct and complete); judge the final answer, not the style.
Reply with one or two sentences of justification, then a last line of exactly this form:
SCORE: N
where N is an integer from 0 to 10."""
"""The rubric when none is given: ``{prompt}``, ``{answer}`` (the gold) and ``{completion}``."""

_SCORE_LINE = re.compile(r"^[ \t]*SCORE:[ \t]*(-?\d+(?:\.\d+)?)[ \t]*$")
_ANY_SCORE = re.compile(r"^[ \t]*SCORE:", re.M)


class MalformedJudgement(ValueError):
    """The judge's reply does not follow the strict score format (see the module docstring)."""


def parse_judgement(text: str, min_score: float, max_score: float) -> float:
    """The normalised score of a judge's reply, or :class:`MalformedJudgement` with the reason."""
    if not isinstance(text, str) or not text.strip():
        raise MalformedJudgement("an empty reply")
    verdict = text.rsplit("</think>", 1)[-1]
    lines = [ln for ln in verdict.strip().splitlines() if ln.strip()]
    if not lines:
        raise MalformedJudgement("nothing after </think>")
    found = _SCORE_LINE.match(lines[-1])
    if found is None:
        raise MalformedJudgement("no line 'SCORE: X' at the end of the reply")
    if len(_ANY_SCORE.findall(verdict)) > 1:
        raise MalformedJudgement("more than one 'SCORE:' line")
    x = float(found.group(1))
    if not min_score <= x <= max_score:
        raise MalformedJudgement(f"SCORE {found.group(1)} is outside [{min_score:g}, {max_score:g}]")
    return (x - min_score) / (max_score - min_score)


def _text(value: Any) -> str:
    """A column value as text for the template: chat messages as their contents, one per line."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(m, dict) and "content" in m for m in value):
        return "\n".join(str(m["content"]) for m in value)
    return "" if value is None else str(value)


def _template_fields(template: Any) -> list[str]:
    if not isinstance(template, str) or "{completion}" not in template:
        raise ValueError("llm_judge: the setting 'template' must be a string containing {completion} "
                         f"(and usually {{prompt}} and {{answer}}); got {template!r:.80}")
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise ValueError(f"llm_judge: the template is not a valid format string ({e}); write a literal "
                         "brace as {{ or }}") from None
    for f in names:
        if not f.isidentifier():
            raise ValueError(f"llm_judge: the template field {{{f}}} must be a plain column name")
    return names


def _check(model, temperature, max_tokens, min_score, max_score, extra_body) -> None:
    if not isinstance(model, str) or not model:
        raise ValueError("llm_judge: the setting 'model' is required: the model name the endpoint serves")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise ValueError(f"llm_judge: the setting 'temperature' must be a number in [0, 2], got {temperature!r}")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"llm_judge: the setting 'max_tokens' must be an integer >= 1, got {max_tokens!r}")
    for name, v in (("min_score", min_score), ("max_score", max_score)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"llm_judge: the setting {name!r} must be a number, got {v!r}")
    if not min_score < max_score:
        raise ValueError(f"llm_judge: min_score ({min_score}) must be below max_score ({max_score})")
    if extra_body is not None and not isinstance(extra_body, dict):
        raise ValueError(f"llm_judge: the setting 'extra_body' must be a mapping, got {type(extra_body).__name__}")


def _reply(answer: Any) -> tuple[str, str | None]:
    """The message text and finish reason of an OpenAI chat completion answer."""
    try:
        choice = answer["choices"][0]
        return choice["message"]["content"], choice.get("finish_reason")
    except (KeyError, IndexError, TypeError):
        raise ValueError(f"llm_judge: the endpoint's answer is not an OpenAI chat completion: {str(answer)[:200]}") from None


@reward("llm_judge", scope="batch")
async def llm_judge(
    completions: list,
    *,
    url: str | None = None,
    model: str | None = None,
    template: str = DEFAULT_TEMPLATE,
    temperature: float = 0.0,
    max_tokens: int = 512,
    concurrency: int = 8,
    timeout: float = 120.0,
    retries: int = 2,
    backoff: float = 1.0,
    token_env: str | None = None,
    min_score: float = 0.0,
    max_score: float = 10.0,
    extra_body: dict | None = None,
    **columns,
) -> list[float]:
    """A judge model's grade of each completion, ``(X - min_score) / (max_score - min_score)``.

    ``url`` is the endpoint's base (``http://host:8000/v1``; ``/chat/completions`` is appended),
    ``model`` the name it serves. Each completion becomes one user message, ``template`` filled with
    ``{completion}`` (the assistant text), ``{prompt}`` and ``{answer}`` (the gold) or any other
    column; ``temperature``, ``max_tokens`` and ``extra_body`` (merged into the request, e.g. vLLM's
    ``{"structured_outputs": {"regex": ...}}`` or ``{"seed": 0}``) go to the endpoint. At most
    ``concurrency`` requests are in flight; each has ``timeout`` seconds and ``retries`` retries with
    exponential backoff from ``backoff`` seconds (connection errors, timeouts, 429/5xx). ``token_env``
    names the environment variable of the API key (``Authorization: Bearer``). The reply must follow
    the strict score format of the module docstring; a malformed one, or an endpoint that cannot be
    reached, fails the call with the reason (recorded for the batch under ``scoring.on_error``; with
    ``scope: item`` in the config each completion is its own call, so a malformed judgement costs only
    its own completion, at ``scoring.workers`` requests in flight).
    """
    check_client_settings("llm_judge", url=url, timeout=timeout, retries=retries, backoff=backoff,
                          concurrency=concurrency, token_env=token_env)
    _check(model, temperature, max_tokens, min_score, max_score, extra_body)
    fields = _template_fields(template)
    if "prompt" not in columns and "prompts" in columns:
        columns["prompt"] = columns["prompts"]
    missing = sorted({f for f in fields if f != "completion" and f not in columns})
    if missing:
        raise ValueError(f"llm_judge: the template uses {{{missing[0]}}} but there is no column {missing[0]!r}; "
                         f"columns: {', '.join(sorted(columns)) or 'none'}")
    headers = auth_headers("llm_judge", token_env)
    endpoint = url.rstrip("/") + "/chat/completions"

    def job(i: int):
        values = {f: (completion_text(completions[i]) if f == "completion" else _text(columns[f][i])) for f in fields}
        request = {**(extra_body or {}), "model": model, "temperature": temperature, "max_tokens": max_tokens,
                   "messages": [{"role": "user", "content": template.format(**values)}]}

        async def go(client):
            answer = await post_json(client, endpoint, request, headers=headers, timeout=timeout, retries=retries,
                                     backoff=backoff)
            text, finish = _reply(answer)
            try:
                return parse_judgement(text, min_score, max_score)
            except MalformedJudgement as e:
                cut = " (cut at max_tokens)" if finish == "length" else ""
                raise MalformedJudgement(f"llm_judge: completion {i}: malformed judgement{cut}: {e}; the judge "
                                         f"said {str(text)[-300:]!r}") from None
        return go

    return list(await run_bounded([job(i) for i in range(len(completions))], concurrency, timeout))
