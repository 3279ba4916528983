"""Multi-turn, tool-integrated rollouts: generate until a tool call, run the tool, append its
output, continue.

:class:`MultiTurnSampler` wraps the ``hf`` or ``vllm`` sampler (their
:meth:`~grpo_kit.rollout.base.TurnSampler.generate_turns`) behind the same
:class:`~grpo_kit.rollout.base.Sampler` interface, so the trainer, the asynchronous rollout process
and eval use it unchanged. Per turn, every unfinished completion is continued from its whole
context (prompt, the turns so far, the tools' outputs) until eos, the end of a tool call, or the
completion's token budget; the calls of the turn run together; their outputs are tokenized and
appended. A completion ends at eos, at its budget (``tools.max_tokens``, sampled + inserted
tokens; finish reason ``length``), or at a call past ``tools.max_turns`` (not run: status
``not_run``).

**The record** (:class:`~grpo_kit.records.RolloutBatch`): ``completion_ids`` holds every token
in order, ``completion_masks`` 1 on sampled tokens and 0 on inserted ones, ``sampler_logprobs``
the sampler's log-probs of sampled tokens (0.0 on inserted ones), ``turns`` each turn's span,
timing, call and outcome. The batch builder turns the masks into ``completion_mask``, so a tool's
tokens are context only: no loss, KL, entropy or value target is taken on them, and GAE skips
them (:func:`grpo_kit.algorithms.advantages.gae`).

**Formats** (``tools.format``), each with its stop strings and its rendering of the output:

- ``fenced``: a Markdown block whose language names the tool (```` ```python ````, or a user
  tool's name) closed by ```` ``` ```` and a newline; the output comes back as
  ``<output>\\n...\\n</output>\\n``. A closing fence that closes no such block gets an error output.
- ``tag``: ``<calculator>12*34</calculator>``, a tag named after the tool; the output comes back
  as ``<output>...</output>``.
- ``chat``: the model's chat-template tool calls, the Hermes/Qwen form
  ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (JSON arguments, checked against the
  tool's schema). The prompts are encoded with ``apply_chat_template(..., tools=schemas)``, and the
  output is inserted as the template renders a ``tool`` message (then the next assistant header).

**Seeds**: turn k of completion g of the prompt with key ``key`` is drawn with
``prompt_seed(prompt_seed(seed, key), 4096 g + k)``: it depends on that completion alone.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

from pydantic import Field, field_validator

from grpo_kit.config import ConfigError, Strict
from grpo_kit.dist import many_ranks
from grpo_kit.records import RolloutBatch
from grpo_kit.registry import get_tool
from grpo_kit.rollout.base import Sampled, SamplingConfig, TurnOut, prompt_keys, prompt_seed, to_rollout_batch
from grpo_kit.tools.base import ToolOutput, ToolSpec, check_arguments, clip, run_calculator, run_python_tool

MAX_CALL_CHARS = 20_000  # a call's text beyond this is refused, not parsed


class PythonToolConfig(Strict):
    """The ``python`` tool's sandbox limits (see :func:`grpo_kit.tools.run_python`)."""

    timeout_s: float = Field(5.0, gt=0, description="wall-clock limit of one call")
    memory_mb: int = Field(512, ge=16, description="address space of each sandboxed process")
    cpu_s: int | None = Field(None, ge=1, description="CPU-time limit (default: timeout_s rounded up)")
    processes: int = Field(16, ge=1, description="processes and threads at once")
    disk_mb: int = Field(16, ge=1, description="the tmpfs working directory's size, and the largest file")
    unsafe_no_sandbox: bool = Field(False, description="UNSAFE: run model code without bubblewrap (rlimits "
                                    "only), for machines without it; never on untrusted models")


@dataclass
class Call:
    """A tool call parsed from a turn: ``tool`` and ``args``, or ``error`` (a malformed call,
    answered with the error and not run). ``text``: the call as the model wrote it."""

    tool: str | None
    args: dict[str, Any] | None
    text: str
    error: str | None = None


class TextFormat:
    """A call written as text around one argument (``fenced`` and ``tag``).

    Every format's ``parse(text, start)`` finds the call that ends at the first of its stop
    strings at or after ``start``: ``text`` is the turn's sampled text, preceded on a completion's
    first turn by its prompt's (so a prompt may open the call, ``start`` = the prompt's length)."""

    name = ""

    def __init__(self, tools: dict[str, ToolSpec]):
        for t in tools.values():
            if t.text_argument is None:
                raise ConfigError(f"tools.format: {self.name} writes a call as text, so a tool must take one "
                                  f"required string argument; {t.name!r} takes {t.parameters.get('required')} "
                                  "(use tools.format: chat, which passes JSON arguments)")
        self.tools = tools

    def _call(self, name: str, body: str, text: str) -> Call:
        if len(body) > MAX_CALL_CHARS:
            return Call(name, None, text[:200], f"the call is longer than {MAX_CALL_CHARS} characters")
        if name not in self.tools:
            return Call(name, None, body, f"unknown tool {name!r}; the tools are {', '.join(self.tools)}")
        return Call(name, {self.tools[name].text_argument: body}, body)

    def tokens(self, tokenizer, text: str) -> list[int]:
        return encode_text(tokenizer, text)


def encode_text(tokenizer, text: str) -> list[int]:
    """Token ids of inserted text. A tokenizer without an unknown token (a small word-level one)
    raises on characters outside its vocabulary: those characters are dropped from what the model
    reads (the record's ``output`` keeps the whole text)."""
    try:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    except Exception:  # noqa: BLE001  the tokenizers library raises a bare Exception
        ok = set()
        for ch in set(text):
            try:
                tokenizer(ch, add_special_tokens=False)
                ok.add(ch)
            except Exception:  # noqa: BLE001
                pass
        return list(tokenizer("".join(c for c in text if c in ok), add_special_tokens=False)["input_ids"])


class Fenced(TextFormat):
    name = "fenced"
    stops = ["```\n"]

    def parse(self, text: str, start: int = 0) -> Call | None:
        close = text.find("```\n", max(0, start - 3))
        if close < 0:
            return None
        open_ = text.rfind("```", 0, close)
        head, _, body = text[open_ + 3:close].partition("\n") if open_ >= 0 else ("", "", "")
        lang = head.strip()
        if not lang:  # a bare fence (generation stops at it): not a call of any tool
            return Call(None, None, text[max(0, close - 200):close + 3],
                        f"a bare ``` fence; a call names its tool: ```{next(iter(self.tools))} ... ```")
        return self._call(lang, body.removesuffix("\n"), text)

    def insert(self, tokenizer, turn_text: str, output: str) -> list[int]:
        lead = "" if turn_text.endswith("\n") else "\n"
        return self.tokens(tokenizer, f"{lead}<output>\n{output}\n</output>\n")


class Tag(TextFormat):
    name = "tag"

    @property
    def stops(self) -> list[str]:
        return [f"</{n}>" for n in self.tools]

    def parse(self, text: str, start: int = 0) -> Call | None:
        hits = [(text.find(s, max(0, start - len(s) + 1)), s) for s in self.stops]
        hits = [h for h in hits if h[0] >= 0]
        if not hits:
            return None
        at, stop = min(hits)
        name = stop[2:-1]
        start = text.rfind(f"<{name}>", 0, at)
        if start < 0:
            return Call(name, None, text[max(0, at - 200):at + len(stop)], f"</{name}> without <{name}>")
        return self._call(name, text[start + len(name) + 2:at], text)

    def insert(self, tokenizer, turn_text: str, output: str) -> list[int]:
        return self.tokens(tokenizer, f"<output>{output}</output>")


class Chat:
    """Hermes/Qwen-style ``<tool_call>`` JSON calls, outputs rendered by the chat template."""

    name = "chat"
    stops = ["</tool_call>"]
    _probe = [{"role": "user", "content": "?"}]

    def __init__(self, tools: dict[str, ToolSpec]):
        self.tools = tools

    def parse(self, text: str, start: int = 0) -> Call | None:
        end = text.find("</tool_call>", max(0, start - 11))
        if end < 0:
            return None
        start = text.rfind("<tool_call>", 0, end)
        if start < 0:
            return Call(None, None, text[max(0, end - 200):end + 12], "</tool_call> without <tool_call>")
        body = text[start + len("<tool_call>"):end].strip()
        if len(body) > MAX_CALL_CHARS:
            return Call(None, None, body[:200], f"the call is longer than {MAX_CALL_CHARS} characters")
        try:
            obj = json.loads(body)
        except ValueError as e:
            return Call(None, None, body, f"the call is not JSON: {e}")
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return Call(None, None, body, 'a call must be {"name": TOOL, "arguments": {...}}')
        name, args = obj["name"], obj.get("arguments", {})
        if isinstance(args, str):  # some models write the arguments as a JSON string
            try:
                args = json.loads(args)
            except ValueError as e:
                return Call(name, None, body, f"the arguments are not JSON: {e}")
        if name not in self.tools:
            return Call(name, None, body, f"unknown tool {name!r}; the tools are {', '.join(self.tools)}")
        why = check_arguments(self.tools[name], args)
        return Call(name, args, body, why) if why else Call(name, args, body)

    def insert(self, tokenizer, turn_text: str, output: str) -> list[int]:
        """What the template adds after the assistant's ``turn_text`` for a ``tool`` message with
        ``output`` and the next assistant header: rendered after a probe conversation, so it does
        not depend on the prompt. A template that does not render the assistant's text verbatim
        cannot be continued this way: ConfigError."""
        schemas = [t.schema() for t in self.tools.values()]
        render = lambda msgs, gen: tokenizer.apply_chat_template(msgs, tools=schemas, tokenize=False,  # noqa: E731
                                                                 add_generation_prompt=gen)
        head = render(self._probe, True)
        full = render(self._probe + [{"role": "assistant", "content": turn_text},
                                     {"role": "tool", "content": output}], True)
        if not full.startswith(head + turn_text):
            raise ConfigError("tools.format: chat needs a chat template that renders an assistant message's text "
                              "verbatim after the generation prompt; this one does not (use fenced or tag)")
        return encode_text(tokenizer, full[len(head) + len(turn_text):])


FORMATS = {"fenced": Fenced, "tag": Tag, "chat": Chat}


class ToolsConfig(Strict):
    """``tools:`` in a training config: the tools a model may call while it samples."""

    names: list[str] = Field(default_factory=list, description="the tools offered: calculator, python, or a "
                             "user tool as path/to/file.py:function (marked @grpo_kit.tools.tool); empty: off")
    format: str = Field("fenced", description=f"how calls are written: {', '.join(FORMATS)}")
    max_turns: int = Field(4, ge=0, description="tool calls per completion; a call past it is not run and ends "
                           "the completion (0: calls are recorded, never run)")
    max_tokens: int | None = Field(None, ge=1, description="each completion's token budget, sampled and "
                                   "inserted tokens together (default sampling.max_new_tokens)")
    max_output_chars: int = Field(1000, ge=1, description="a call's output beyond this is cut, with a marker")
    workers: int = Field(1, ge=1, description="worker processes for user tools")
    python: PythonToolConfig = Field(default_factory=PythonToolConfig)

    @field_validator("format")
    @classmethod
    def _known_format(cls, v: str) -> str:
        if v not in FORMATS:
            raise ValueError(f"unknown tool-call format {v!r}; the formats: {', '.join(FORMATS)}")
        return v

    @field_validator("names")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("a tool is named twice")
        return v


def load_tools(cfg: ToolsConfig) -> dict[str, tuple[ToolSpec, Any]]:
    """Each configured tool's spec and function, by the name the model calls it."""
    out: dict[str, tuple[ToolSpec, Any]] = {}
    for ref in cfg.names:
        spec, fn = get_tool(ref, cfg.python.model_dump())
        if spec.name in out:
            raise ConfigError(f"tools.names: two tools are called {spec.name!r}")
        out[spec.name] = (spec, fn)
    if "python" in out and not cfg.python.unsafe_no_sandbox:
        from grpo_kit.tools.sandbox import bwrap_path

        if bwrap_path() is None:
            raise ConfigError("the python tool needs bubblewrap (`bwrap`) to run model code (Debian: apt-get "
                              "install bubblewrap); set tools.python.unsafe_no_sandbox: true only to run it "
                              "without a sandbox, on a model you trust")
    return out


class ToolRunner:
    """Runs a turn's calls together: the calculator here, ``python`` calls each in its sandbox (a
    thread waits on each), user tools in worker processes (:class:`~grpo_kit.workers.WorkerPool`),
    each killed at its tool's ``timeout_s``."""

    def __init__(self, tools: dict[str, tuple[ToolSpec, Any]], cfg: ToolsConfig):
        self.tools, self.cfg = tools, cfg
        self.threads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="grpo-kit-tool")
        self._pool = None

    def _workers(self):
        if self._pool is None:
            from grpo_kit.workers import WorkerPool

            self._pool = WorkerPool(self.cfg.workers)
        return self._pool

    def run(self, calls: list[Call]) -> list[tuple[ToolOutput, float]]:
        """``(output, seconds)`` of each call, in order; never raises for a call's failure."""
        results: list[tuple[ToolOutput, float] | None] = [None] * len(calls)
        futures, user = {}, []
        for i, c in enumerate(calls):
            if c.error is not None:
                results[i] = (ToolOutput(f"error: {c.error}", "error"), 0.0)
                continue
            spec, _ = self.tools[c.tool]
            if spec.ref == "calculator":
                t0 = time.perf_counter()
                results[i] = (run_calculator(c.args["expression"]), time.perf_counter() - t0)
            elif spec.ref == "python":
                futures[i] = self.threads.submit(_timed, run_python_tool, c.args["code"], spec.settings)
            else:
                user.append(i)
        if user:
            from grpo_kit.workers import TOOL_TASK

            tasks = [((TOOL_TASK + self.tools[calls[i].tool][0].ref, ()), [], {"arguments": [calls[i].args]},
                      self.tools[calls[i].tool][0].timeout_s) for i in user]
            for i, o in zip(user, self._workers().run(tasks)):
                if o.status == "ok":
                    results[i] = (ToolOutput(o.values[0], "ok"), o.seconds)
                else:
                    results[i] = (ToolOutput(f"error: {o.reason}", o.status), o.seconds)
        for i, f in futures.items():
            results[i] = f.result()
        return results  # type: ignore[return-value]

    def close(self) -> None:
        self.threads.shutdown(wait=False, cancel_futures=True)
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def _timed(fn, *args) -> tuple[ToolOutput, float]:
    t0 = time.perf_counter()
    return fn(*args), time.perf_counter() - t0


@dataclass
class _Row:
    ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    lps: list[float] = field(default_factory=list)
    turns: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)  # chat: the assistant / tool messages
    done: bool = False
    reason: str = "stop"


class MultiTurnSampler:
    """A :class:`~grpo_kit.rollout.base.Sampler` whose completions may call tools (see the module
    docstring). ``inner``: the hf or vllm sampler; ``tools``: the ``tools:`` settings."""

    def __init__(self, inner, tokenizer, tools: ToolsConfig, sampling: SamplingConfig):
        if not hasattr(inner, "generate_turns"):
            raise ConfigError(f"the {type(inner).__name__} sampler cannot run multi-turn rollouts")
        self.inner, self.tokenizer, self.cfg, self.sampling = inner, tokenizer, tools, sampling
        loaded = load_tools(tools)
        self.specs = {n: s for n, (s, _) in loaded.items()}
        self.format = FORMATS[tools.format](self.specs)
        self.stops = list(dict.fromkeys([*self.format.stops, *sampling.stop]))
        self.runner = ToolRunner(loaded, tools)
        self.budget = tools.max_tokens or sampling.max_new_tokens
        self.logprobs = inner.logprobs

    @property
    def chat_tools(self) -> list[dict[str, Any]] | None:
        """The tools' schemas for ``apply_chat_template(tools=...)`` (format ``chat``), else None."""
        return [s.schema() for s in self.specs.values()] if self.cfg.format == "chat" else None

    def sync_weights(self, model) -> None:
        self.inner.sync_weights(model)

    def close(self) -> None:
        self.runner.close()
        if hasattr(self.inner, "close"):
            self.inner.close()

    def sample(self, prompt_ids: list[list[int]], seed: int, keys: Sequence[int] | None = None) -> RolloutBatch:
        G, B = self.sampling.n, len(prompt_ids)
        keys = prompt_keys(B, keys)
        where = [(b, g) for b in range(B) for g in range(G)]
        rows = [_Row() for _ in where]
        for turn in range(self.cfg.max_turns + 1):
            active = [i for i, r in enumerate(rows) if not r.done]
            if not active and not self.inner.lockstep:
                break
            self._turn(prompt_ids, seed, keys, where, rows, active, turn)
        return self._record(prompt_ids, rows, G)

    def _turn(self, prompt_ids, seed, keys, where, rows: list[_Row], active: list[int], turn: int) -> None:
        if not active:  # another rank still samples: a sharded model's forward passes need this one too
            self.inner.generate_turns([[self.tokenizer.pad_token_id]], [0], [1], self.stops)
            return
        contexts = [list(prompt_ids[where[i][0]]) + rows[i].ids for i in active]
        seeds = [prompt_seed(prompt_seed(seed, keys[where[i][0]]), 4096 * where[i][1] + turn) for i in active]
        t0 = time.perf_counter()
        outs: list[TurnOut] = self.inner.generate_turns(contexts, seeds, [self.budget - len(rows[i].ids)
                                                                          for i in active], self.stops)
        took = time.perf_counter() - t0
        pending: list[tuple[int, Call, str, dict[str, Any]]] = []
        for i, out in zip(active, outs):
            r = rows[i]
            rec: dict[str, Any] = {"start": len(r.ids), "end": len(r.ids) + len(out.ids), "sample_s": took}
            if out.cached_tokens is not None:
                rec["cached_tokens"] = out.cached_tokens
            r.ids += out.ids
            r.mask += [1] * len(out.ids)
            r.lps += out.logprobs if out.logprobs is not None else [0.0] * len(out.ids)
            r.turns.append(rec)
            text = self.tokenizer.decode(out.ids, skip_special_tokens=False)
            lead = "" if rec["start"] else self._prompt_text(prompt_ids[where[i][0]])  # the prompt may open a call
            call = self.format.parse(lead + text, len(lead)) if out.reason == "stop" else None
            if call is None:  # eos, the budget, or a stop string of sampling.stop
                r.done, r.reason = True, "length" if out.reason == "length" else "stop"
                r.messages.append({"role": "assistant", "content": self._text(out.ids)})
            elif turn >= self.cfg.max_turns:
                rec.update(tool=call.tool, call=call.text, status="not_run", output="", tool_s=0.0,
                           inserted=[len(r.ids), len(r.ids)])
                r.done = True
                r.messages.append({"role": "assistant", "content": self._text(out.ids)})
            else:
                pending.append((i, call, text, rec))
        for (i, call, text, rec), (result, secs) in zip(pending, self.runner.run([p[1] for p in pending])):
            r = rows[i]
            output = clip(result.text, self.cfg.max_output_chars)
            toks = self.format.insert(self.tokenizer, text, output)
            room = self.budget - len(r.ids)
            if len(toks) >= room:  # the output does not fit the budget: cut, and the completion ends
                toks, r.done, r.reason = toks[:room], True, "length"
            rec.update(tool=call.tool, call=call.text, status=result.status, output=output, tool_s=secs,
                       inserted=[len(r.ids), len(r.ids) + len(toks)])
            r.ids += toks
            r.mask += [0] * len(toks)
            r.lps += [0.0] * len(toks)
            r.messages += [{"role": "assistant", "content": self._text(rows[i].ids[rec["start"]:rec["end"]])},
                           {"role": "tool", "content": output}]

    def _prompt_text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids[-256:], skip_special_tokens=False)

    def _text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _record(self, prompt_ids, rows: list[_Row], G: int) -> RolloutBatch:
        chat = self.cfg.format == "chat"
        texts = [r.messages if chat else self._text(r.ids) for r in rows]
        sampled = [Sampled([r.ids for r in rows[b * G:(b + 1) * G]], texts[b * G:(b + 1) * G],
                           [r.reason for r in rows[b * G:(b + 1) * G]],
                           [r.lps for r in rows[b * G:(b + 1) * G]] if self.logprobs else None,
                           [r.mask for r in rows[b * G:(b + 1) * G]], [r.turns for r in rows[b * G:(b + 1) * G]])
                   for b in range(len(prompt_ids))]
        return to_rollout_batch(prompt_ids, sampled)


def tool_metrics(rb: RolloutBatch) -> dict[str, float]:
    """A step's tool metrics: ``tools/calls_per_completion``, ``tools/call_rate`` (completions
    with a call), the ``ok``/``error``/``timeout``/``killed``/``not_run`` rates over calls,
    ``tools/turns`` (sampled turns per completion), ``tools/time_s`` (the calls' seconds, summed),
    ``tools/tokens_sampled`` and ``tools/tokens_inserted`` (per completion)."""
    if rb.turns is None:
        return {}
    n = max(1, rb.size)
    calls = [t for turns in rb.turns for t in turns if "status" in t]
    out = {"tools/calls_per_completion": len(calls) / n,
           "tools/call_rate": sum(any("status" in t for t in turns) for turns in rb.turns) / n,
           "tools/turns": sum(len(t) for t in rb.turns) / n,
           "tools/time_s": sum(t.get("tool_s", 0.0) for t in calls),
           "tools/tokens_sampled": sum(sum(m) for m in rb.completion_masks) / n,
           "tools/tokens_inserted": sum(len(m) - sum(m) for m in rb.completion_masks) / n}
    for status in ("ok", "error", "timeout", "killed", "not_run"):
        out[f"tools/{status}_rate"] = sum(t["status"] == status for t in calls) / max(1, len(calls))
    return out
