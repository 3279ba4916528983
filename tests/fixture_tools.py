"""User tools for tests/test_tools.py, loaded by the worker processes as ``tests/fixture_tools.py:NAME``."""

import time

from grpo_kit.tools import tool


@tool(timeout_s=5.0)
def lookup(key: str) -> str:
    """The capital of a country."""
    return {"france": "Paris", "peru": "Lima"}.get(key.strip().lower(), "unknown")


@tool(timeout_s=0.5)
def sleepy(seconds: str) -> str:
    """Sleeps, past its timeout."""
    time.sleep(float(seconds))
    return "woke"


@tool
def boom(what: str) -> str:
    """Raises."""
    raise RuntimeError(f"no {what}")


@tool(parameters={"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                  "required": ["a", "b"]})
def add(a: int, b: int) -> str:
    """Two numbers' sum."""
    return str(a + b)


def unmarked(x: str) -> str:
    return x
