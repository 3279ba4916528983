"""Rewards served over HTTP: the engine of ``grpo-kit serve-reward`` (FastAPI + uvicorn).

The server holds one :class:`~grpo_kit.scoring.Scorer`, built from the same config as ``grpo-kit
score`` (rewards with weights and settings, ``scoring.workers``, ``scoring.timeout``,
``scoring.on_error``), so a reward scores the same here as in training and offline: each request is
one :meth:`Scorer.score` call, its item rewards in the worker processes under the hard per-item
timeout. The wire contract is in :mod:`rewards.http` (its client):

- ``POST /score`` with ``{"completions": [...], "group_ids": [...]?, COLUMN: [...], ...}`` answers
  ``{"rewards": {KEY: [...]}, "reward_errors": {KEY: [...]}, "reward": [...], "seconds": S}``.
  Without ``group_ids``, completions sharing a ``prompt`` form a group (for group rewards), as in
  ``grpo-kit score``.
- ``GET /health`` answers ``{"status": "ok", ...}`` with the rewards served and the queue's state.
- **A bounded queue**: one request is scored at a time (the scorer's workers score its completions
  in parallel); up to ``server.max_queue`` more wait; beyond that a request is refused at once with
  503 and ``Retry-After`` (seconds, from the recent scoring time), before its body is read.
- **Refusals name the reason**: a body that is not JSON (400), a missing or malformed field (422,
  naming it: ``completions[3]``, column ``answer``), more than ``server.max_batch`` completions (413),
  a missing or wrong token when ``server.token_env`` is set (401). A reward that fails under
  ``scoring.on_error: fail`` is a 500 with its reason.
"""

import asyncio
import contextlib
import hmac
import json
import math
import os
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from pydantic import Field, field_validator

from grpo_kit.config import RewardConfig, ScoringConfig, Strict, unique_reward_keys
from grpo_kit.data import check_completion
from grpo_kit.errors import ConfigError
from grpo_kit.scoring import RewardFailure, Scorer

RESERVED = ("completions", "group_ids")
"""Keys of a request that are not data columns."""


class ServerConfig(Strict):
    """Where the reward server listens and how much it takes on."""

    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 for every interface")
    port: int = Field(8000, ge=0, le=65535, description="port; 0 picks a free one (printed at start)")
    max_queue: int = Field(8, ge=0, description="requests that may wait while one is scored; "
                           "more are refused with 503 and Retry-After")
    max_batch: int = Field(4096, ge=1, description="most completions in one request (413 beyond)")
    token_env: str | None = Field(None, description="an environment variable holding a token; when set, "
                                  "/score requires `Authorization: Bearer TOKEN`")


class ServeConfig(Strict):
    """Settings of `grpo-kit serve-reward` (a YAML given with --config; flags override it)."""

    rewards: list[RewardConfig] = Field(default_factory=list, description="rewards and weights")
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)

    @field_validator("rewards")
    @classmethod
    def _unique_keys(cls, v: list[RewardConfig]) -> list[RewardConfig]:
        return unique_reward_keys(v)


class RequestError(ValueError):
    """A request the server refuses: ``status`` and the reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


def parse_request(body: bytes, max_batch: int) -> tuple[list, dict[str, list], list | None]:
    """``(completions, columns, group ids)`` of a request body, or :class:`RequestError` naming the field.

    >>> parse_request(b'{"completions": ["4", "5"], "answer": ["4", "4"]}', 10)
    (['4', '5'], {'answer': ['4', '4']}, None)
    >>> parse_request(b'{"completions": ["4"], "prompts": ["2+2?"]}', 10)  # TRL's name for the prompt
    (['4'], {'prompt': ['2+2?']}, ['2+2?'])
    >>> parse_request(b'{"completions": ["4"], "answer": "4"}', 10)
    Traceback (most recent call last):
    ...
    grpo_kit.serve_reward.RequestError: column 'answer' must be a list with one value per completion, got str
    """
    try:
        data = json.loads(body)
    except ValueError as e:
        raise RequestError(400, f"the body is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise RequestError(422, "the body must be a JSON object {\"completions\": [...], COLUMN: [...], ...}, "
                           f"got {type(data).__name__}")
    if "completions" not in data:
        raise RequestError(422, "field 'completions' is required: a list of strings or chat message lists")
    completions = data.pop("completions")
    if not isinstance(completions, list):
        raise RequestError(422, f"field 'completions' must be a list, got {type(completions).__name__}")
    n = len(completions)
    if n > max_batch:
        raise RequestError(413, f"{n} completions in one request; this server takes at most {max_batch} "
                           "(server.max_batch): send smaller batches")
    for i, c in enumerate(completions):
        reason = check_completion(c, f"completions[{i}]")
        if reason:
            raise RequestError(422, reason)
    group_ids = data.pop("group_ids", None)
    if group_ids is not None:
        if not isinstance(group_ids, list) or len(group_ids) != n:
            got = f"{len(group_ids)} values" if isinstance(group_ids, list) else type(group_ids).__name__
            raise RequestError(422, f"field 'group_ids' must be a list with one id per completion ({n}), got {got}")
        if not all(isinstance(g, (str, int)) and not isinstance(g, bool) for g in group_ids):
            raise RequestError(422, "field 'group_ids' must hold strings or integers")
    for k, v in data.items():
        if not isinstance(v, list):
            raise RequestError(422, f"column {k!r} must be a list with one value per completion, "
                               f"got {type(v).__name__}")
        if len(v) != n:
            raise RequestError(422, f"column {k!r} has {len(v)} values for {n} completions")
    if "prompts" in data and "prompt" not in data:  # TRL's name: the record's column is `prompt`
        data["prompt"] = data.pop("prompts")
    if group_ids is None and "prompt" in data:  # as grpo-kit score groups rows
        group_ids = [p if isinstance(p, str) else json.dumps(p, sort_keys=True) for p in data["prompt"]]
    return completions, data, group_ids


def _bearer_token(token_env: str | None) -> str | None:
    if token_env is None:
        return None
    token = os.environ.get(token_env)
    if not token:
        raise ConfigError(f"server.token_env={token_env!r}: the environment variable {token_env} is empty or "
                          "unset; export it, or remove token_env")
    return token


def build_app(scorer: Scorer, cfg: ServeConfig, on_ready: Callable[[], None] | None = None):
    """The FastAPI app serving ``scorer`` (owned by the caller) under ``cfg.server``'s limits.

    (FastAPI reads the handlers' annotations at run time, hence no ``from __future__ import
    annotations`` in this module: ``Request`` is imported here, FastAPI being an optional extra.)"""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    token = _bearer_token(cfg.server.token_env)
    executor = ThreadPoolExecutor(1, thread_name_prefix="scorer")  # the scorer is one caller at a time
    state = {"in_system": 0, "requests": 0, "completions": 0, "refused": 0, "seconds_ewma": 0.0}
    capacity = 1 + cfg.server.max_queue

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if on_ready is not None:
            on_ready()
        yield
        executor.shutdown(wait=True, cancel_futures=True)

    app = FastAPI(title="grpo-kit reward server", lifespan=lifespan)

    def refuse(status: int, reason: str, **headers: str):
        return JSONResponse({"detail": reason}, status_code=status, headers=headers or None)

    @app.get("/health")
    async def health():
        return {"status": "ok", "on_error": scorer.scoring.on_error,
                "rewards": {k: {"name": r.name, "weight": r.weight, "scope": scorer.scopes[k]}
                            for k, r in zip(scorer.bound, scorer.rewards)},
                "in_flight": min(1, state["in_system"]), "queued": max(0, state["in_system"] - 1),
                "max_queue": cfg.server.max_queue, "max_batch": cfg.server.max_batch,
                "requests": state["requests"], "completions": state["completions"], "refused": state["refused"]}

    @app.post("/score")
    async def score(request: Request):
        if token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return refuse(401, "missing or wrong token: send `Authorization: Bearer TOKEN` "
                              f"(the server reads it from ${cfg.server.token_env})")
        if state["in_system"] >= capacity:
            state["refused"] += 1
            wait = max(1, min(60, math.ceil(state["seconds_ewma"] * state["in_system"])))
            return refuse(503, f"overloaded: {state['in_system'] - 1} requests queued (server.max_queue "
                          f"{cfg.server.max_queue}); retry after {wait} s", **{"Retry-After": str(wait)})
        state["in_system"] += 1
        try:
            try:
                completions, columns, group_ids = parse_request(await request.body(), cfg.server.max_batch)
            except RequestError as e:
                return refuse(e.status, str(e))
            t0 = time.perf_counter()
            try:
                rb = await asyncio.get_running_loop().run_in_executor(
                    executor, scorer.score, completions, columns, group_ids)
            except RewardFailure as e:
                return refuse(500, f"a reward failed (scoring.on_error: fail): {e}")
            dt = time.perf_counter() - t0
            state["seconds_ewma"] = dt if not state["requests"] else 0.8 * state["seconds_ewma"] + 0.2 * dt
            state["requests"] += 1
            state["completions"] += len(completions)
            body = {"rewards": rb.rewards, "reward_errors": rb.reward_errors, "reward": rb.reward,
                    "seconds": round(dt, 6)}
            # plain lists of floats, str and None: json.dumps, not FastAPI's per-element encoder
            return Response(json.dumps(body), media_type="application/json")
        finally:
            state["in_system"] -= 1

    return app


def serve(cfg: ServeConfig, *, log_level: str = "warning") -> None:
    """Bind ``cfg.server.host:port``, print the URL once serving, serve until SIGINT/SIGTERM.

    The rewards are bound (and the workers started) before the port is bound, so a bad name or
    setting fails at once; the scorer's workers are stopped when the server stops."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise ConfigError("serve-reward needs FastAPI and uvicorn: pip install grpo-kit[serve]") from None

    with Scorer(cfg.rewards, cfg.scoring) as scorer:
        family = socket.AF_INET6 if ":" in cfg.server.host else socket.AF_INET
        sock = socket.create_server((cfg.server.host, cfg.server.port), family=family)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        keys = ", ".join(f"{k} (x{w:g})" for k, w in scorer.weights.items())

        def ready() -> None:
            print(f"grpo-kit serve-reward: serving {keys} on http://{shown}:{port} "
                  f"(POST /score, GET /health)", flush=True)

        app = build_app(scorer, cfg, on_ready=ready)
        config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5, access_log=False)
        try:
            uvicorn.Server(config).run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it handled, once it has shut down
            pass
        finally:
            sock.close()
        print("grpo-kit serve-reward: stopped", file=sys.stderr, flush=True)

