"""The HTTP client under the remote rewards (``http_reward``, ``llm_judge``): one POST with a timeout,
retried with exponential backoff, a bounded number in flight, an optional bearer token.

httpx is imported inside the functions: every scorer worker imports :mod:`rewards`, and must not pay
for it. The waits are all bounded: each attempt by ``timeout`` seconds, the retries by ``retries``
and ``max_backoff``, so a dead or stuck server costs at most about
``(retries + 1) * timeout + retries * max_backoff`` seconds before the call fails with the reason.
"""

from __future__ import annotations

import asyncio
import math
import os
from typing import Any, Awaitable, Callable

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
"""Statuses worth another attempt: overload (429, 503 with Retry-After), a gateway's timeouts, a
restarting server. 500 is included for OpenAI-compatible servers, which answer it for transient
engine errors; a reward server answers 500 only for a failure that another attempt would repeat
(``on_error: fail``), so :func:`post_json` is given ``retry_status`` without it there."""


class RemoteError(RuntimeError):
    """A remote reward call failed: the server could not be reached, timed out, refused the request,
    or answered something outside the contract. The message says which and why."""


def check_client_settings(who: str, *, url: Any, timeout: Any, retries: Any, backoff: Any,
                          concurrency: Any, token_env: Any) -> None:
    """ValueError naming the setting when a client setting is unusable."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"{who}: the setting 'url' is required, an http:// or https:// URL; got {url!r}")
    for name, value, lo in (("timeout", timeout, 0.0), ("backoff", backoff, 0.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= lo:
            raise ValueError(f"{who}: the setting {name!r} must be a positive number of seconds, got {value!r}")
    for name, value, lo in (("retries", retries, 0), ("concurrency", concurrency, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"{who}: the setting {name!r} must be an integer >= {lo}, got {value!r}")
    if token_env is not None and (not isinstance(token_env, str) or not token_env):
        raise ValueError(f"{who}: the setting 'token_env' must name an environment variable, got {token_env!r}")


def auth_headers(who: str, token_env: str | None) -> dict[str, str]:
    """``Authorization: Bearer $token_env`` when ``token_env`` is set (and the variable is)."""
    if token_env is None:
        return {}
    token = os.environ.get(token_env)
    if not token:
        raise ValueError(f"{who}: token_env={token_env!r} is set but the environment variable {token_env} "
                         "is empty or unset; export it, or remove token_env")
    return {"Authorization": f"Bearer {token}"}


def _httpx():
    try:
        import httpx
    except ImportError:
        raise ImportError("the remote rewards need httpx: pip install grpo-kit[serve]") from None
    return httpx


_SSL_CONTEXT = None


def _ssl_context():
    """One TLS context per process (httpx builds a new one per client otherwise, ~50 ms of loading CA
    certificates for every batch): certifi's bundle, or ``$SSL_CERT_FILE`` / ``$SSL_CERT_DIR``."""
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        import ssl

        import certifi

        cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
        _SSL_CONTEXT = ssl.create_default_context(cafile=cafile or (None if capath else certifi.where()),
                                                  capath=capath)
    return _SSL_CONTEXT


def _retry_after(response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _reason(response) -> str:
    """The server's reason for a refusal: FastAPI's ``{"detail": ...}``, OpenAI's ``{"error": ...}``,
    else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        detail = body.get("detail", body.get("error", body))
        if isinstance(detail, dict) and "message" in detail:
            detail = detail["message"]
        return str(detail)[:500]
    return str(body)[:300]


async def post_json(client, url: str, payload: dict, *, headers: dict[str, str], timeout: float, retries: int,
                    backoff: float, max_backoff: float = 30.0,
                    retry_status: frozenset[int] = RETRY_STATUS) -> Any:
    """POST ``payload`` as JSON and return the decoded JSON answer, or raise :class:`RemoteError`.

    A connection error, a timeout, or a status in ``retry_status`` is tried again after
    ``backoff * 2**attempt`` seconds (the server's ``Retry-After`` when it is longer), at most
    ``max_backoff``, up to ``retries`` more times. Any other 4xx is not retried: the reason the
    server gave is raised at once."""
    httpx = _httpx()

    last = ""
    for attempt in range(retries + 1):
        wait = min(max_backoff, backoff * 2 ** attempt)
        try:  # wait_for: a whole-request deadline (httpx's timeout is per connect, read or write)
            response = await asyncio.wait_for(client.post(url, json=payload, headers=headers, timeout=timeout),
                                              timeout)
        except (httpx.TimeoutException, asyncio.TimeoutError) as e:
            last = f"no answer within {timeout:g} s ({type(e).__name__})"
        except httpx.TransportError as e:
            last = f"could not reach {url}: {type(e).__name__}: {e}"
        else:
            if response.status_code < 300:
                try:
                    return response.json()
                except ValueError:
                    raise RemoteError(f"{url} answered {response.status_code} with a body that is not JSON: "
                                      f"{response.text[:200]!r}") from None
            last = f"{url} answered {response.status_code}: {_reason(response)}"
            if response.status_code not in retry_status:
                raise RemoteError(last)
            wait = min(max_backoff, max(wait, _retry_after(response) or 0.0))
        if attempt < retries:
            await asyncio.sleep(wait)
    raise RemoteError(f"{last} (after {retries + 1} attempts)")


def run_bounded(jobs: list[Callable[[Any], Awaitable[Any]]], concurrency: int, timeout: float) -> Any:
    """A coroutine: each job is called with one shared ``httpx.AsyncClient``, at most ``concurrency``
    at a time; returns their results in order. The first failure cancels the rest and is raised."""
    httpx = _httpx()

    async def main():
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        gate = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=timeout, verify=_ssl_context()) as client:
            async def one(job):
                async with gate:
                    return await job(client)

            tasks = [asyncio.ensure_future(one(job)) for job in jobs]
            try:
                return await asyncio.gather(*tasks)
            finally:  # after a failure: stop the rest, and let them end before the client closes
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    return main()
