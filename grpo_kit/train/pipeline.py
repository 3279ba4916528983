"""Asynchronous rollouts (``train.async_level: k >= 1``): sampling and scoring run in a process of
their own while the trainer updates.

**The schedule is fixed**, so that a run reproduces whatever the timing: the rollouts of step ``s``
are sampled with the weights after step ``max(v0, s - 1 - k)``, where ``v0`` is the step the run
started (0) or resumed at. The rollout process thus runs up to k steps ahead of the trainer, and
the update of step ``s`` uses rollouts exactly ``min(k, s - 1 - v0)`` versions older than the
weights it updates (``async/staleness_*``). With k = 1 the sampling of step s+1 overlaps the
update of step s (verl's "one step off"); a larger k absorbs uneven step times.

**The channel** is two gloo process groups of two members (trainer 0, rollout process 1) over a
TCP store on loopback, apart from torchrun's own group: ``weights`` carries versioned weights
from the trainer, one tensor at a time (``time/weight_sync``: the trainer's copy;
``time/weight_load``: the rollout process loading them, streamed into vLLM's ``reload_weights``
or into its copy of the model); ``records`` carries each step's scored
:class:`~grpo_kit.records.RolloutBatch` (as :meth:`~grpo_kit.records.RolloutBatch.to_dict`) back.
A thread on each side of the trainer keeps the sends and receives off the training loop; the
trainer holds one CPU copy of the weights while they are being sent.

**Failure** is bounded both ways: the rollout process is a fresh interpreter
(``python -m grpo_kit.train.pipeline``, the config on stdin) that the kernel kills when the
trainer dies (``PR_SET_PDEATHSIG``); the trainer polls it while it waits and stops, naming its
error (written to the store) or exit code, when it dies, and raises after
``distributed.timeout_s`` without a record. Each wait of the rollout process is bounded by the
same timeout.
"""

from __future__ import annotations

import datetime
import json
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import Any, Iterator

import torch
import torch.distributed as dist

from grpo_kit.errors import ConfigError, RolloutProcessError

_HOST = "127.0.0.1"
_LEN, _DATA = 0, 1  # tags: an object's length, its bytes


# --------------------------------------------------------------------------- the channel


class Channel:
    """The two process groups between the trainer (rank 0) and the rollout process (rank 1)."""

    def __init__(self, store, rank: int, timeout_s: float):
        self.rank, self.peer = rank, 1 - rank
        self.timeout = datetime.timedelta(seconds=timeout_s)
        self.weights = dist.ProcessGroupGloo(dist.PrefixStore("weights", store), rank, 2, self.timeout)
        self.records = dist.ProcessGroupGloo(dist.PrefixStore("records", store), rank, 2, self.timeout)

    def send_object(self, pg, obj: Any) -> None:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)  # between our own two processes
        pg.send([torch.tensor([len(data)], dtype=torch.int64)], self.peer, _LEN).wait(self.timeout)
        pg.send([torch.frombuffer(bytearray(data), dtype=torch.uint8)], self.peer, _DATA).wait(self.timeout)

    def recv_object(self, pg) -> Any:
        n = torch.zeros(1, dtype=torch.int64)
        pg.recv([n], self.peer, _LEN).wait(self.timeout)
        buf = torch.empty(int(n), dtype=torch.uint8)
        pg.recv([buf], self.peer, _DATA).wait(self.timeout)
        return pickle.loads(buf.numpy().tobytes())

    def send_weights(self, version: int, weights: "Packed") -> None:
        """A header (the version and where each tensor lies), then each bucket's bytes."""
        self.send_object(self.weights, {"version": version, "tensors": weights.index,
                                        "buckets": [len(b) for b in weights.buckets]})
        for b in weights.buckets:
            self.weights.send([b], self.peer, _DATA).wait(self.timeout)

    def recv_weights(self, header: dict[str, Any]) -> Iterator[tuple[str, torch.Tensor]]:
        """The tensors announced by ``header``, a bucket at a time (the sender's order)."""
        by_bucket: dict[int, list] = {}
        for entry in header["tensors"]:
            by_bucket.setdefault(entry[3], []).append(entry)
        for i, n in enumerate(header["buckets"]):
            buf = torch.empty(n, dtype=torch.uint8)
            self.weights.recv([buf], self.peer, _DATA).wait(self.timeout)
            for name, shape, dtype, _, offset, nbytes in by_bucket.get(i, []):
                yield name, buf[offset:offset + nbytes].view(getattr(torch, dtype)).reshape(shape)


BUCKET_BYTES = 256 << 20
"""Weights travel in buckets of about this size: one message each rather than one per tensor
(a round trip each), and the rollout process holds one bucket at a time."""


class Packed:
    """CPU copies of a model's tensors packed into byte buckets: ``index`` has ``(name, shape,
    dtype, bucket, offset, nbytes)`` per tensor."""

    def __init__(self):
        self.index: list[tuple] = []
        self.buckets: list[torch.Tensor] = []
        self._parts: list[torch.Tensor] = []
        self._size = 0

    def add(self, name: str, t: torch.Tensor) -> None:
        raw = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        if self._parts and self._size + len(raw) > BUCKET_BYTES:
            self._close()
        pad = -self._size % 16  # every tensor starts 16-byte aligned: a view of any dtype
        if pad:
            self._parts.append(torch.zeros(pad, dtype=torch.uint8))
            self._size += pad
        self.index.append((name, tuple(t.shape), str(t.dtype).removeprefix("torch."), len(self.buckets),
                           self._size, len(raw)))
        self._parts.append(raw)
        self._size += len(raw)

    def _close(self) -> None:
        self.buckets.append(torch.cat(self._parts))  # the copy
        self._parts, self._size = [], 0

    def done(self) -> "Packed":
        if self._parts:
            self._close()
        return self


def snapshot(weights: Iterator[tuple[str, torch.Tensor]], keep: bool) -> Packed | None:
    """CPU copies of ``weights``, packed (``keep``), or None after iterating them to the end: a
    sharded model's tensors are gathered collectively, so every rank iterates and rank 0 keeps them."""
    out = Packed() if keep else None
    for name, t in weights:
        if out is not None:
            out.add(name, t)
    return out.done() if out is not None else None


# --------------------------------------------------------------------------- the trainer's side


class AsyncRollouts:
    """The trainer's end: starts the rollout process, receives its records in a thread, sends it
    weights in another.

    ``start``: the first step it samples; ``version``: the weights it starts from (the trainer
    sends them first, :meth:`push`); ``cursor``: the prompt stream's position before ``start``.
    """

    def __init__(self, cfg, *, start: int, version: int, cursor: dict[str, int] | None, threads: int | None,
                 say=None):
        self.cfg, self.k = cfg, cfg.train.async_level
        self.timeout_s = cfg.distributed.timeout_s
        self.say = say or (lambda msg: None)
        self.last = cfg.train.steps  # the last step it samples
        self.store = dist.TCPStore(_HOST, 0, 2, True, timeout=datetime.timedelta(seconds=self.timeout_s),
                                   wait_for_workers=False)
        spec = {"config": cfg.model_dump(mode="json"), "port": self.store.port, "start": start,
                "version": version, "cursor": cursor, "threads": threads}
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))}
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        self.proc = subprocess.Popen([sys.executable, "-m", "grpo_kit.train.pipeline"], stdin=subprocess.PIPE,
                                     env=env)
        self.proc.stdin.write(json.dumps(spec).encode())
        self.proc.stdin.close()
        self._wait("ready", "start")
        self.chan = Channel(self.store, 0, self.timeout_s)
        self._inbox: queue.Queue = queue.Queue()  # records (dicts) or the receiver's exception
        self._held: dict[int, dict[str, Any]] = {}  # records received, by step, not yet taken
        self._outbox: queue.Queue = queue.Queue()
        self._sent = threading.Event()
        self._sent.set()
        self._send_error: BaseException | None = None
        self._threads = [threading.Thread(target=self._receive, name="grpo-kit-records", daemon=True),
                         threading.Thread(target=self._send, name="grpo-kit-weights", daemon=True)]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ threads
    def _receive(self) -> None:
        try:
            while True:
                msg = self.chan.recv_object(self.chan.records)
                self._inbox.put(msg)
                if msg["step"] >= self.last:
                    return
        except BaseException as e:  # noqa: BLE001  the process died: the main thread names why
            self._inbox.put(e)

    def _send(self) -> None:
        while True:
            item = self._outbox.get()
            try:
                if item is None:
                    self.chan.send_object(self.chan.weights, None)
                    return
                self.chan.send_weights(*item)
            except BaseException as e:  # noqa: BLE001
                self._send_error = e
                return
            finally:
                self._sent.set()

    # ------------------------------------------------------------------ the checks
    def _failure(self) -> str | None:
        """Why the rollout process can no longer deliver, or None."""
        if self.store.check(["error"]):
            return self.store.get("error").decode(errors="replace")
        code = self.proc.poll()
        if code is not None:
            how = f"signal {-code}" if code < 0 else f"code {code}"
            return f"it exited with {how} (its messages are above)"
        return None

    def _wait(self, key: str, what: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not self.store.check([key]):
            self._check_alive(what)
            if time.monotonic() > deadline:
                raise RolloutProcessError(f"the rollout process did not {what} within distributed.timeout_s = "
                                          f"{self.timeout_s:g} s")
            time.sleep(0.05)

    def _check_alive(self, what: str) -> None:
        why = self._failure()
        if why is not None:
            raise RolloutProcessError(f"the rollout process failed before it could {what}: {why}")

    # ------------------------------------------------------------------ the trainer's calls
    def take(self, step: int) -> tuple[dict[str, Any], float]:
        """The record of ``step`` and the seconds waited for it."""
        t0 = time.perf_counter()
        self._until(step)
        return self._held.pop(step), time.perf_counter() - t0

    def peek(self, last: int) -> list[dict[str, Any]]:
        """The records of the steps after those taken up to ``last``, kept (a checkpoint's)."""
        self._until(last)
        return [self._held[s] for s in sorted(self._held) if s <= last]

    def _until(self, step: int) -> None:
        deadline = time.monotonic() + self.timeout_s
        while step not in self._held:
            try:
                msg = self._inbox.get(timeout=0.2)
            except queue.Empty:
                self._check_alive(f"send the rollouts of step {step}")
                if time.monotonic() > deadline:
                    raise RolloutProcessError(f"no rollouts for step {step} within distributed.timeout_s = "
                                              f"{self.timeout_s:g} s") from None
                continue
            if isinstance(msg, BaseException):
                time.sleep(0.5)  # the process's own error reaches the store as it exits
                self._check_alive(f"send the rollouts of step {step}")
                raise RolloutProcessError(f"lost the rollout process while waiting for step {step}: {msg}")
            self._held[msg["step"]] = msg

    def push(self, tensors: Packed, version: int) -> float:
        """Send ``version``'s weights (CPU copies) in the background once the previous version is
        sent; returns the seconds waited for that."""
        t0 = time.perf_counter()
        deadline = time.monotonic() + self.timeout_s
        while not self._sent.wait(0.2):
            self._check_alive(f"receive the weights of step {version - 1}")
            if time.monotonic() > deadline:
                raise RolloutProcessError(f"the weights of step {version - 1} were not received within "
                                          f"distributed.timeout_s = {self.timeout_s:g} s")
        if self._send_error is not None:
            self._check_alive("receive weights")
            raise RolloutProcessError(f"sending weights to the rollout process failed: {self._send_error}")
        self._sent.clear()
        self._outbox.put((version, tensors))
        return time.perf_counter() - t0

    def needs(self, version: int) -> bool:
        """Whether the rollout process will ask for ``version``'s weights (the last k are never used)."""
        return version <= self.last - 1 - self.k

    def close(self) -> None:
        """Stop the rollout process: a goodbye when it has finished its steps, else SIGTERM."""
        if self.proc.poll() is None:
            if self._sent.is_set() and self._send_error is None:
                self._sent.clear()
                self._outbox.put(None)
                self._sent.wait(2.0)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()


def check_staleness(step: int, trainer_version: int, record_version: int, max_staleness: int) -> int:
    """The staleness of the rollouts the update of ``step`` uses; a RuntimeError beyond ``max_staleness``.

    >>> check_staleness(5, 4, 3, 1)
    1
    """
    staleness = trainer_version - record_version
    if staleness > max_staleness or staleness < 0:
        raise RuntimeError(f"step {step}: the rollouts were sampled with the weights of step {record_version}, "
                           f"{staleness} versions from the trainer's (step {trainer_version}); "
                           f"train.max_staleness is {max_staleness}")
    return staleness


# --------------------------------------------------------------------------- the rollout process


class _RolloutProcess:
    """Loads the task, the sampler (vLLM's engine, or a copy of the policy for hf) and the scorer."""

    def __init__(self, spec: dict[str, Any]):
        from grpo_kit.rollout import make_sampler
        from grpo_kit.scoring import Scorer
        from grpo_kit.train.algorithm import Algorithm
        from grpo_kit.train.config import TrainConfig
        from grpo_kit.train.rollouts import Rollouts
        from tasks import get_task

        cfg = self.cfg = TrainConfig.model_validate(spec["config"])
        if spec.get("threads"):
            torch.set_num_threads(spec["threads"])
        from grpo_kit.train.models import keep_freed_memory, pick_device

        keep_freed_memory(cfg.train.keep_freed_memory, pick_device(cfg.model.device))
        torch.manual_seed(cfg.train.seed)
        self.start, self.v0, self.k, self.last = spec["start"], spec["version"], cfg.train.async_level, cfg.train.steps
        task = get_task(cfg.task)
        dataset = task.load("train")
        rewards = cfg.rewards if cfg.rewards is not None else task.default_rewards
        algorithm = Algorithm(cfg.algorithm, max_new_tokens=cfg.sampling.max_new_tokens)
        self.model, tokenizer = self._model(cfg)
        self.pad_id = tokenizer.pad_token_id
        self.ref = self._reference(cfg) if cfg.train.ref_in_rollout else None
        self.sampler = make_sampler(cfg.sampler, self.model, tokenizer, cfg.sampling,
                                    logprobs=algorithm.needs_sampler_logprobs, model_path=cfg.model.path,
                                    engine=cfg.vllm, tools=cfg.tools)
        self.scorer = Scorer(rewards, cfg.scoring)
        from grpo_kit.dist import World

        self.rollouts = Rollouts(cfg, dataset, tokenizer, self.sampler, self.scorer, algorithm, World(), _say)
        if spec.get("cursor"):
            self.rollouts.cursor.load(spec["cursor"])

    @staticmethod
    def _model(cfg):
        """hf: a plain copy of the policy (LoRA weights arrive merged); vllm: the config only."""
        from grpo_kit.train.models import load_policy, load_tokenizer

        if cfg.sampler == "hf":
            m = cfg.model.model_copy(update={"lora": None, "gradient_checkpointing": False})
            model, tok, _, _ = load_policy(m, 0)
            return model.eval().requires_grad_(False), tok
        from types import SimpleNamespace

        from transformers import AutoConfig, GenerationConfig

        try:
            gen = GenerationConfig.from_pretrained(cfg.model.path)
        except OSError:
            gen = None
        return SimpleNamespace(config=AutoConfig.from_pretrained(cfg.model.path), generation_config=gen), \
            load_tokenizer(cfg.model.path)

    @staticmethod
    def _reference(cfg):
        """``(model, device, autocast)``: the initial weights, frozen, as the trainer's reference is
        (a LoRA run's adapter-off reference is the base model: the same thing)."""
        from grpo_kit.train.models import load_policy

        m = cfg.model.model_copy(update={"lora": None, "gradient_checkpointing": False})
        model, _, device, autocast = load_policy(m, 0)
        model = model.eval().requires_grad_(False)
        return (model.to(torch.bfloat16) if autocast else model), device, autocast

    def with_reference(self, rb, metrics: dict) -> None:
        """Fill ``rb.ref_logprobs`` with the reference's log-probs of the sampled tokens, computed as
        the trainer would (the same micro-batches, packing and log-prob path)."""
        from grpo_kit.train.batch import make_batch
        from grpo_kit.train.update import _logprobs_no_grad

        t0 = time.perf_counter()
        model, device, autocast = self.ref
        batch = make_batch(rb, self.pad_id, device)
        with torch.no_grad():
            lp = _logprobs_no_grad(model, batch, self.cfg.micro_batch, self.cfg, autocast).float().cpu()  # [N, T]
        rb.ref_logprobs = [lp[i, :len(c)].tolist() for i, c in enumerate(rb.completion_ids)]
        metrics["time/ref_logprobs"] = time.perf_counter() - t0

    def load(self, weights: Iterator[tuple[str, torch.Tensor]]) -> None:
        if self.cfg.sampler == "vllm":
            self.sampler.load_weights(weights)
            return
        state = self.model.state_dict()
        with torch.no_grad():
            for name, t in weights:
                if name not in state:
                    raise RuntimeError(f"the trainer sent a weight this model lacks: {name}")
                state[name].copy_(t)

    def run(self, chan: Channel) -> None:
        version = -1
        for step in range(self.start, self.last + 1):
            need = max(self.v0, step - 1 - self.k)
            t0, t_load = time.perf_counter(), 0.0
            while version < need:
                header = chan.recv_object(chan.weights)
                if header is None:  # the trainer stopped early
                    return
                t1 = time.perf_counter()
                self.load(chan.recv_weights(header))
                t_load += time.perf_counter() - t1
                version = header["version"]
            waited = time.perf_counter() - t0 - t_load
            rb, metrics = self.rollouts.collect(step, version=version)
            if self.ref is not None:
                self.with_reference(rb, metrics)
            metrics.update({"async/wait_sampler_s": waited, "time/weight_load": t_load})
            chan.send_object(chan.records, {"step": step, "record": rb.to_dict(), "metrics": metrics,
                                            "cursor": self.rollouts.cursor.state()})
        chan.recv_object(chan.weights)  # the trainer's goodbye: it has every record

    def close(self) -> None:
        self.scorer.close()
        if hasattr(self.sampler, "close"):
            self.sampler.close()


def _say(msg: str, every_rank: bool = False) -> None:
    print(f"grpo-kit rollouts: {msg}", file=sys.stderr, flush=True)


def main() -> int:
    from grpo_kit.workers import _die_with_parent

    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle
    spec = json.loads(sys.stdin.read())
    timeout_s = spec["config"]["distributed"]["timeout_s"]
    store = dist.TCPStore(_HOST, spec["port"], 2, False, timeout=datetime.timedelta(seconds=timeout_s))
    proc = None
    try:
        proc = _RolloutProcess(spec)
        store.set("ready", "1")
        proc.run(Channel(store, 1, timeout_s))
        return 0
    except (ConfigError, ValueError) as e:
        store.set("error", f"{type(e).__name__}: {e}")
        return 1
    except BaseException as e:  # noqa: BLE001  reported to the trainer, then the traceback here
        where = traceback.extract_tb(e.__traceback__)
        at = f" (at {os.path.basename(where[-1].filename)}:{where[-1].lineno})" if where else ""
        store.set("error", f"{type(e).__name__}: {e}{at}")
        traceback.print_exc()
        return 1
    finally:
        if proc is not None:
            proc.close()


if __name__ == "__main__":
    sys.exit(main())
