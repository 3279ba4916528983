"""A scriptable HTTP server for the remote rewards' client tests: uvicorn + FastAPI in a thread of the
test process, on a free loopback port, up in well under a second.

It answers ``POST /score`` (the reward server's contract) and ``POST /v1/chat/completions`` (OpenAI's)
by calling ``stub.handler(path, body, headers)``, which a test sets; it records every request and the
most requests it had in flight at once. Only the client's HTTP behaviour is tested against it (retries,
backoff, timeouts, concurrency, headers, what is sent): scores are tested against the real servers.
"""

import asyncio
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


class Stub:
    def __init__(self):
        self.requests: list[dict] = []
        self.in_flight = {0: 0}  # per generation: requests left over from an earlier test are not counted
        self.generation = 0
        self.max_in_flight = 0
        self.handler = lambda path, body, headers: (200, {"ok": True}, {})
        app = FastAPI()

        @app.post("/{path:path}")
        async def any_post(path: str, request: Request):
            body = await request.json()
            self.requests.append({"path": "/" + path, "body": body, "headers": dict(request.headers)})
            gen = self.generation
            self.in_flight[gen] = self.in_flight.get(gen, 0) + 1
            if gen == self.generation:
                self.max_in_flight = max(self.max_in_flight, self.in_flight[gen])
            try:
                out = self.handler("/" + path, body, dict(request.headers))
                if asyncio.iscoroutine(out):
                    out = await out
                status, payload, headers = out
                return JSONResponse(payload, status_code=status, headers=headers)
            finally:
                self.in_flight[gen] -= 1

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="error", access_log=False,
                                                    timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "Stub":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the stub server did not start within 10 s")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    def reset(self) -> None:
        self.requests.clear()
        self.generation += 1
        self.max_in_flight = 0


def die_with_parent() -> None:
    """A ``preexec_fn`` for the servers the tests start: Linux sends them SIGTERM if the test process
    dies, so a killed test run leaves no server behind."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
