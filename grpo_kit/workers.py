"""A pool of reward worker processes with a hard, killable per-task time limit.

Why not ``multiprocessing.Pool`` or ``concurrent.futures``: neither can stop one stuck task. A
reward on untrusted text can hang in C code (a big-integer power, a regex, sympy) where no signal
handler runs, so the only hard limit is to kill the process. This pool gives each worker its own
pipe, tracks the deadline of the task it is running, SIGKILLs a worker that passes it and starts a
fresh one. A task that times out, raises, or whose worker dies is reported as a failure with its
reason; it never stops the others.

Each worker is a fresh interpreter, ``python -m grpo_kit.workers FD`` on one end of a socket pair
(not ``multiprocessing``'s fork, unsafe beside torch threads and CUDA, nor its spawn, which
re-imports the parent's ``__main__``). It resolves the reward functions itself, by name, so only
plain data crosses the pipe: a reward's name and settings, the completions and the columns it takes.
"""

from __future__ import annotations

import math
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from grpo_kit.contract import RewardOutputError, call_reward, check_output  # noqa: F401  (the last two: moved, kept for one version)
from grpo_kit.registry import bind_reward, get_tool

# A reward is sent to workers as (spec, args): a registry name or "file.py:fn" plus its settings.
# (The scope is the scorer's business: a worker just calls the function on what it is sent.)
RewardRef = tuple[str, tuple[tuple[str, Any], ...]]
TOOL_TASK = "tool:"
"""A spec starting with it is a user tool's call (:mod:`grpo_kit.tools`), not a reward: the task's
``columns["arguments"]`` holds one keyword-argument dict per call, and its values are the
functions' results as text."""


@dataclass
class Outcome:
    """The result of one task: ``values`` on success, else ``status`` and ``reason``."""

    status: str  # "ok" | "error" | "timeout"
    values: list | None = None
    reason: str | None = None
    seconds: float = 0.0  # wall time from hand-out to result (or kill)


def _die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this worker when its parent dies, even mid-hang."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_main(conn: Connection) -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    cache: dict[bytes, Any] = {}  # pickled RewardRef -> the bound reward
    conn.send("ready")  # the pool starts a task's clock only once its worker is up
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        for task_id, ref, completions, columns in msg:  # a chunk: one reply per task, as each ends
            conn.send(_run_task(cache, task_id, ref, completions, columns))


def _run_task(cache: dict, task_id: int, ref: RewardRef, completions: list, columns: dict) -> tuple:
    try:
        key = pickle.dumps(ref)  # settings may hold lists or dicts: not hashable, but picklable
        fn = cache.get(key)
        if ref[0].startswith(TOOL_TASK):
            if fn is None:
                fn = cache[key] = get_tool(ref[0][len(TOOL_TASK):])[1]
            reply = (task_id, "ok", [str(fn(**a)) for a in columns["arguments"]])
        else:
            if fn is None:
                fn = cache[key] = bind_reward(ref[0], dict(ref[1]))
            reply = (task_id, "ok", call_reward(fn, completions, columns))
    except Exception as e:  # a reward's failure is data, reported to the caller
        tb = traceback.extract_tb(e.__traceback__)
        where = f" (at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno})" if tb else ""
        reply = (task_id, "error", f"{type(e).__name__}: {e}{where}"[:2000])
    try:
        pickle.dumps(reply)
    except Exception as e:  # an unpicklable result
        reply = (task_id, "error", f"result could not be sent back: {e}"[:2000])
    return reply


class _Worker:
    """One worker: ``python -m grpo_kit.workers FD`` on one end of a socket pair.

    A fresh interpreter (not ``multiprocessing``'s spawn) so that the parent's ``__main__`` is never
    re-imported: a user's training script needs no ``if __name__ == "__main__"`` guard for it."""

    def __init__(self, cpu_threads: int):
        parent_sock, child_sock = socket.socketpair()
        env = {**os.environ, "OMP_NUM_THREADS": str(cpu_threads),
               "PYTHONPATH": os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))}
        self.proc = subprocess.Popen([sys.executable, "-m", "grpo_kit.workers", str(child_sock.fileno())],
                                     pass_fds=[child_sock.fileno()], env=env, stdin=subprocess.DEVNULL)
        child_sock.close()
        self.conn = Connection(parent_sock.detach())
        self.queue: deque[int] = deque()  # tasks sent, not yet answered; the head is running
        self.deadline = math.inf
        self.started = 0.0
        self.ready = False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.conn.close()


class WorkerPool:
    """``n`` worker processes running reward tasks under a hard per-task timeout.

    >>> with WorkerPool(1) as pool:
    ...     [o.values for o in pool.run([(("think_format", ()), ["<think>a</think>b"], {}, 5.0)])]
    [[1.0]]
    """

    def __init__(self, n: int = 2, cpu_threads: int = 1):
        if n < 1:
            raise ValueError("a WorkerPool needs at least one worker")
        self._cpu_threads = cpu_threads
        self._workers = [_Worker(cpu_threads) for _ in range(n)]
        self.restarts = 0

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for w in self._workers:
            try:
                if not w.queue:
                    w.conn.send(None)
            except OSError:
                pass
        for w in self._workers:
            try:
                w.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
            w.kill()
        self._workers = []

    @staticmethod
    def _death(w: _Worker) -> str:
        try:
            w.proc.wait(timeout=2)  # reap it, so the exit code is known
        except subprocess.TimeoutExpired:
            pass
        return f"worker died (exit code {w.proc.returncode})"

    def _replace(self, i: int) -> None:
        self._workers[i].kill()
        self._workers[i] = _Worker(self._cpu_threads)
        self.restarts += 1

    def _await_ready(self, limit_s: float = 120.0) -> None:
        """Wait until at least one worker has started (imports done); fail loudly if none can."""
        t0 = time.monotonic()
        while True:
            starting = [w for w in self._workers if not w.ready]
            if not starting:
                return
            ready = wait([w.conn for w in starting],
                         timeout=0 if len(starting) < len(self._workers) else 1.0)
            for idx, w in enumerate(list(self._workers)):
                if w.ready:
                    continue
                if w.conn in ready:
                    try:
                        w.ready = w.conn.recv() == "ready"
                    except (EOFError, OSError):
                        pass
                if not w.ready and not w.alive():
                    raise RuntimeError(f"a reward worker failed to start (exit code {w.proc.returncode})")
            if len(starting) < len(self._workers) or time.monotonic() - t0 > limit_s:
                if not any(w.ready for w in self._workers):
                    raise RuntimeError(f"no reward worker started within {limit_s:g} s")
                return

    def run(self, tasks: list[tuple[RewardRef, list, dict, float]], on_done=None) -> list[Outcome]:
        """Run ``(reward_ref, completions, columns, timeout_s)`` tasks; return outcomes in order.

        Tasks go out in chunks (fewer round trips); a worker answers each task as it ends, and the
        clock of a task starts when the answer to the one before it arrives (or when the chunk is
        sent). A task past its limit is recorded as a timeout, its worker killed and replaced, and
        the rest of its chunk handed out again. ``on_done(k)``: k tasks finished so far."""
        results: list[Outcome | None] = [None] * len(tasks)
        pending = deque(range(len(tasks)))
        per_chunk = max(1, min(64, len(tasks) // (4 * len(self._workers))))
        done = 0

        def finish(i: int, out: Outcome, started: float) -> None:
            nonlocal done
            out.seconds = time.monotonic() - started
            results[i] = out
            done += 1
            if on_done:
                on_done(done)

        while done < len(tasks):
            self._await_ready()
            for w in self._workers:
                if w.ready and not w.queue and pending:
                    for i in self._send_chunk(w, tasks, pending, per_chunk):
                        finish(i, Outcome("error", reason="could not send to a worker (unpicklable input)"),
                               time.monotonic())
            busy = [w for w in self._workers if w.queue]
            if not busy:
                continue
            starting = [w for w in self._workers if not w.ready]
            wait_s = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            ready = wait([w.conn for w in busy] + [w.conn for w in starting], timeout=wait_s)
            for idx, w in enumerate(list(self._workers)):
                if not w.queue:
                    continue
                if w.conn in ready:
                    self._drain(idx, w, tasks, pending, finish)
                elif not w.alive():
                    finish(w.queue.popleft(), Outcome("error", reason=self._death(w)), w.started)
                    self._requeue_and_replace(idx, pending)
                elif time.monotonic() >= w.deadline:
                    i = w.queue.popleft()
                    finish(i, Outcome("timeout", reason=f"timed out after {tasks[i][3]:g} s; worker killed"),
                           w.started)
                    self._requeue_and_replace(idx, pending)
        return results  # type: ignore[return-value]

    def _send_chunk(self, w: _Worker, tasks, pending: deque, per_chunk: int) -> list[int]:
        """Send up to ``per_chunk`` pending tasks to ``w``; return those that cannot be pickled."""
        chunk, bad = [], []
        while pending and len(chunk) < per_chunk:
            i = pending.popleft()
            try:
                pickle.dumps(tasks[i][:3])
                chunk.append(i)
            except Exception:
                bad.append(i)
        if chunk:
            w.conn.send([(i, *tasks[i][:3]) for i in chunk])
            w.queue = deque(chunk)
            w.started = time.monotonic()
            w.deadline = w.started + tasks[chunk[0]][3]
        return bad

    def _drain(self, idx: int, w: _Worker, tasks, pending: deque, finish) -> None:
        """Read every answer ``w`` has sent; start the clock of its next task."""
        while w.queue and w.conn.poll():
            try:
                task_id, status, payload = w.conn.recv()
            except (EOFError, OSError):
                finish(w.queue.popleft(), Outcome("error", reason=self._death(w)), w.started)
                self._requeue_and_replace(idx, pending)
                return
            i = w.queue.popleft()
            assert task_id == i, (task_id, i)
            finish(i, Outcome("ok", values=payload) if status == "ok" else Outcome("error", reason=payload),
                   w.started)
            w.started = time.monotonic()
            w.deadline = w.started + tasks[w.queue[0]][3] if w.queue else math.inf

    def _requeue_and_replace(self, idx: int, pending: deque) -> None:
        pending.extendleft(reversed(self._workers[idx].queue))  # not started: hand them out again
        self._workers[idx].queue.clear()
        self._replace(idx)


if __name__ == "__main__":  # a worker: python -m grpo_kit.workers FD
    _worker_main(Connection(int(sys.argv[1])))
