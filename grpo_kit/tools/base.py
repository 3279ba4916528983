"""What a tool is: a named Python function with a JSON schema of its arguments and a time limit.

The built-ins are ``calculator`` (:func:`~grpo_kit.tools.calculator.calculator`, run in the
caller's process: our own bounded parser, microseconds a call) and ``python`` (model code in the
bubblewrap sandbox, :func:`~grpo_kit.tools.sandbox.run_python`). A user's tool is any function
marked with :func:`tool`, named in a config as ``path/to/file.py:function`` or
``package.module:function``; it runs in the reward worker processes (:mod:`grpo_kit.workers`), one
call a task, killed at its ``timeout_s``.

>>> @tool(timeout_s=2.0)
... def lookup(key: str) -> str:
...     "The value stored under a key."
...     return {"a": "1"}.get(key, "missing")
>>> spec = tool_spec(lookup, "x.py:lookup")
>>> spec.name, spec.parameters["required"], spec.timeout_s
('lookup', ['key'], 2.0)
>>> spec.schema()["function"]["description"]
'The value stored under a key.'
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

STATUSES = ("ok", "error", "timeout", "killed", "not_run")
"""A call's outcome: ran and succeeded; ran and failed (an exception, a non-zero exit, a malformed
call); stopped at its wall-time limit; killed at another limit (memory, CPU time, output);
not run (a call past ``tools.max_turns``)."""

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}


@dataclass(frozen=True)
class ToolSpec:
    """A tool as the rollout sees it: ``name`` (what the model calls), ``parameters`` (a JSON
    schema, ``{"type": "object", "properties": ..., "required": ...}``), ``timeout_s``, and ``ref``,
    how a worker process finds it again (a built-in's name or ``file.py:function``)."""

    name: str
    description: str
    parameters: dict[str, Any]
    timeout_s: float
    ref: str
    builtin: bool = False
    settings: dict[str, Any] = field(default_factory=dict)

    def schema(self) -> dict[str, Any]:
        """The OpenAI-style function schema, as ``apply_chat_template(tools=...)`` takes it."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}

    @property
    def text_argument(self) -> str | None:
        """The one required string argument that a text call (a fenced block, a tag) fills, or None."""
        req = self.parameters.get("required", [])
        props = self.parameters.get("properties", {})
        if len(req) == 1 and props.get(req[0], {}).get("type") == "string":
            return req[0]
        return None


@dataclass
class ToolOutput:
    """What a call returned to the model: its ``text`` and ``status`` (one of :data:`STATUSES`)."""

    text: str
    status: str = "ok"


def tool(fn: Callable | None = None, *, name: str | None = None, parameters: dict[str, Any] | None = None,
         timeout_s: float = 5.0, description: str | None = None):
    """Mark ``fn`` as a tool. ``parameters`` defaults to a schema from its signature (``str``,
    ``int``, ``float``, ``bool``, ``list``, ``dict`` annotations; parameters without a default are
    required); ``description`` to its docstring. It returns a string (or anything ``str()`` turns
    into the model's text); an exception is a failed call whose message the model sees."""

    def mark(f: Callable) -> Callable:
        f.__grpo_tool__ = {"name": name or f.__name__, "parameters": parameters or _schema_of(f),
                           "timeout_s": float(timeout_s), "description": description or inspect.getdoc(f) or ""}
        return f

    return mark(fn) if fn is not None else mark


def tool_spec(fn: Callable, ref: str) -> ToolSpec:
    """The :class:`ToolSpec` of a function marked with :func:`tool` (ValueError if it is not)."""
    meta = getattr(fn, "__grpo_tool__", None)
    if meta is None:
        raise ValueError(f"tool {ref!r}: {getattr(fn, '__name__', fn)!r} is not marked with @grpo_kit.tools.tool "
                         "(it gives the tool its name, argument schema and timeout)")
    return ToolSpec(meta["name"], meta["description"], meta["parameters"], meta["timeout_s"], ref)


def _schema_of(fn: Callable) -> dict[str, Any]:
    props, required = {}, []
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        ann = p.annotation if p.annotation is not inspect.Parameter.empty else str
        if isinstance(ann, str):  # from __future__ import annotations
            ann = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict}.get(ann, str)
        props[p.name] = {"type": _JSON_TYPES.get(ann, "string")}
        if p.default is inspect.Parameter.empty:
            required.append(p.name)
    return {"type": "object", "properties": props, "required": required}


def check_arguments(spec: ToolSpec, args: Any) -> str | None:
    """Why ``args`` (a call's decoded JSON arguments) do not fit ``spec``'s schema, or None.
    Required names, no unknown names, the JSON types of the top-level properties.

    >>> s = ToolSpec("calculator", "", {"type": "object", "properties": {"expression": {"type": "string"}},
    ...              "required": ["expression"]}, 1.0, "calculator")
    >>> check_arguments(s, {"expression": "1+2"}), check_arguments(s, {"expr": "1"}), check_arguments(s, [1])
    (None, "missing argument 'expression'", 'the arguments must be a JSON object, got list')
    """
    if not isinstance(args, dict):
        return f"the arguments must be a JSON object, got {type(args).__name__}"
    props = spec.parameters.get("properties", {})
    for k in spec.parameters.get("required", []):
        if k not in args:
            return f"missing argument {k!r}"
    for k, v in args.items():
        if k not in props:
            return f"unknown argument {k!r}; {spec.name} takes {', '.join(props) or 'none'}"
        want = props[k].get("type")
        ok = {"string": isinstance(v, str), "integer": isinstance(v, int) and not isinstance(v, bool),
              "number": isinstance(v, (int, float)) and not isinstance(v, bool), "boolean": isinstance(v, bool),
              "array": isinstance(v, list), "object": isinstance(v, dict)}.get(want, True)
        if not ok:
            return f"argument {k!r} must be of JSON type {want}, got {type(v).__name__}"
    return None


def clip(text: str, n: int) -> str:
    """``text`` cut to ``n`` characters, with a marker saying how much was cut.

    >>> clip("abcdef", 3)
    'abc[... 3 more characters]'
    """
    return text if len(text) <= n else f"{text[:n]}[... {len(text) - n} more characters]"


# --------------------------------------------------------------------------- the built-ins


def calculator_spec() -> ToolSpec:
    return ToolSpec("calculator", "Exact arithmetic: + - * / and parentheses over integers.",
                    {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
                    1.0, "calculator", builtin=True)


def python_spec(settings: dict[str, Any]) -> ToolSpec:
    return ToolSpec("python", "Run a Python program in a sandbox (no network, no files); returns what it printed.",
                    {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
                    float(settings.get("timeout_s", 5.0)), "python", builtin=True, settings=dict(settings))


def run_calculator(expression: str) -> ToolOutput:
    from grpo_kit.tools.calculator import calculator

    out = calculator(expression)
    return ToolOutput(out, "error" if out.startswith("error:") else "ok")


def run_python_tool(code: str, settings: dict[str, Any]) -> ToolOutput:
    """A sandboxed run as the model reads it: stdout, then stderr and a status line when there is
    one (a non-zero exit, a limit that stopped it)."""
    from grpo_kit.tools.sandbox import run_python

    r = run_python(code, **settings)
    parts = [r.stdout]
    if r.stderr:
        parts.append(r.stderr)
    if r.timed_out:
        parts.append(f"[timed out after {settings.get('timeout_s', 5.0):g} s]")
        status = "timeout"
    elif r.killed:
        parts.append(f"[killed: {r.limit or f'signal {r.signal}'} limit]")
        status = "killed"
    elif r.exit_code:
        parts.append(f"[exit code {r.exit_code}]")
        status = "error"
    else:
        status = "ok"
    return ToolOutput("\n".join(p.rstrip("\n") for p in parts if p), status)
