"""``http_reward``: rewards computed by a server, over HTTP (``grpo-kit serve-reward``, or any endpoint
with the same contract), so a GPU reward model can run on its own machine while training runs elsewhere.

**The contract** (what ``grpo-kit serve-reward`` implements; :mod:`grpo_kit.serve_reward`). The client
POSTs JSON ``{"completions": [...], "group_ids": [...]?, COLUMN: [...], ...}``: the completions (strings
or chat message lists) and every data column, one value per completion; ``group_ids`` (optional) say
which completions share a prompt. The server answers 200 with ``{"rewards": {KEY: [float | null, ...]},
"reward_errors": {KEY: [str | null, ...]}, "reward": [float | null, ...]}``: each reward's scores, the
reason where one failed, and the weighted combination under the server's ``scoring.on_error``. A refusal
is a 4xx with ``{"detail": REASON}``; overload is 503 with ``Retry-After``.
"""

from __future__ import annotations

import json
from typing import Any

from grpo_kit.contract import reward
from rewards._http import RETRY_STATUS, RemoteError, auth_headers, check_client_settings, post_json, run_bounded

_ITEM_ERRORS = ("fail", "server")


def _group_ids(columns: dict[str, list], n: int) -> list[str] | None:
    """Completions sharing a prompt share a group (as ``grpo-kit score`` groups rows)."""
    prompts = columns.get("prompt", columns.get("prompts"))
    if prompts is None or len(prompts) != n:
        return None
    return [p if isinstance(p, str) else json.dumps(p, sort_keys=True, default=str) for p in prompts]


def _chunks(n: int, size: int, gids: list[str] | None) -> list[tuple[int, int]]:
    """``[start, end)`` spans of about ``size`` completions, cut only where a group ends."""
    spans, start = [], 0
    while start < n:
        end = min(n, start + size)
        while gids is not None and 0 < end < n and gids[end] == gids[end - 1]:
            end += 1
        spans.append((start, end))
        start = end
    return spans


def _values(answer: Any, n: int, key: str | None, on_item_error: str, url: str) -> list[float | None]:
    """The ``key`` scores (the combined ``reward`` when None) of a server answer, checked."""
    if not isinstance(answer, dict) or not isinstance(answer.get("rewards"), dict):
        raise RemoteError(f"{url} answered JSON without a 'rewards' object: not a reward server's answer")
    errors = answer.get("reward_errors") or {}
    if key is None:
        values = answer.get("reward")
        failed = [next((f"{k}: {e[i]}" for k, e in errors.items() if e and e[i]), None) for i in range(n)]
    elif key not in answer["rewards"]:
        raise RemoteError(f"{url} serves no reward {key!r}; it serves: {', '.join(answer['rewards'])}")
    else:
        values = answer["rewards"][key]
        failed = [(f"{key}: {e}" if e else None) for e in (errors.get(key) or [None] * n)]
    if not isinstance(values, list) or len(values) != n or len(failed) != n:
        raise RemoteError(f"{url} answered {len(values) if isinstance(values, list) else values!r} values "
                          f"for {n} completions")
    bad = [i for i, f in enumerate(failed) if f is not None]
    if bad and on_item_error == "fail":
        raise RemoteError(f"{len(bad)} of {n} completions failed on the server, e.g. completion {bad[0]}: "
                          f"{failed[bad[0]]} (http_reward on_item_error='fail'; 'server' takes the server's "
                          "combined value instead)")
    return values


@reward("http_reward", scope="batch")
async def http_reward(
    completions: list,
    *,
    url: str | None = None,
    key: str | None = None,
    batch_size: int = 256,
    concurrency: int = 4,
    timeout: float = 60.0,
    retries: int = 3,
    backoff: float = 0.5,
    token_env: str | None = None,
    on_item_error: str = "fail",
    **columns,
) -> list[float | None]:
    """The scores a reward server (``grpo-kit serve-reward``) gives ``completions``.

    The batch goes out in requests of about ``batch_size`` completions (cut between prompt groups),
    at most ``concurrency`` in flight, each with every column. ``key``: which reward's scores to
    return; None (the default) takes the server's combined ``reward``. Each request has ``timeout``
    seconds; a connection error, a timeout, a 408/429/502/503/504 (overload, honouring ``Retry-After``) is
    retried ``retries`` times after ``backoff``, 2 x ``backoff``, ... seconds; another 4xx fails at
    once with the server's reason. ``token_env``: an environment variable holding a token, sent as
    ``Authorization: Bearer``. A server that cannot be reached or answers wrongly makes the call raise
    (the scorer records it for the batch, under ``scoring.on_error``): never a hidden 0.
    ``on_item_error``: ``"fail"`` (default): a completion that failed on the server (a timeout there)
    fails the call, with the server's reason; ``"server"``: take the server's combined value, which its
    own ``scoring.on_error`` decided (null where it excluded the completion).

    >>> import asyncio
    >>> asyncio.run(http_reward(["4"], answer=["4"], url="ftp://host"))
    Traceback (most recent call last):
    ...
    ValueError: http_reward: the setting 'url' is required, an http:// or https:// URL; got 'ftp://host'
    """
    check_client_settings("http_reward", url=url, timeout=timeout, retries=retries, backoff=backoff,
                          concurrency=concurrency, token_env=token_env)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"http_reward: the setting 'batch_size' must be an integer >= 1, got {batch_size!r}")
    if on_item_error not in _ITEM_ERRORS:
        raise ValueError(f"http_reward: on_item_error={on_item_error!r}; valid: {', '.join(_ITEM_ERRORS)}")
    headers = auth_headers("http_reward", token_env)
    n = len(completions)
    if n == 0:
        return []
    if "prompt" in columns:
        columns.pop("prompts", None)  # the same column under TRL's name: sent once
    gids = _group_ids(columns, n)
    spans = _chunks(n, batch_size, gids)
    endpoint = url.rstrip("/") + ("" if url.rstrip("/").endswith("/score") else "/score")

    def job(start: int, end: int):
        payload = {"completions": list(completions[start:end]),
                   **{k: list(v[start:end]) for k, v in columns.items()}}
        if gids is not None:
            payload["group_ids"] = gids[start:end]

        async def go(client):
            answer = await post_json(client, endpoint, payload, headers=headers, timeout=timeout, retries=retries,
                                     backoff=backoff, retry_status=RETRY_STATUS - {500})
            return _values(answer, end - start, key, on_item_error, endpoint)
        return go

    parts = await run_bounded([job(s, e) for s, e in spans], concurrency, timeout)
    return [v for part in parts for v in part]
