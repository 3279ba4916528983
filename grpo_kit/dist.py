"""Data parallelism on torch.distributed: the process group, FSDP2 sharding, and the few collectives
the trainer needs. Launched by ``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``); without them everything here is the identity
of a single process.

    world = init_distributed(timeout_s=600)   # gloo on CPU, nccl on GPU, chosen automatically
    model = shard_model(model, mixed_precision=True)

Every collective waits at most the process group's timeout, so a rank that died or desynchronised
ends the job with an error instead of a hang.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import weakref
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size`` (1 for a plain process)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    distributed: bool = False
    """Whether this process joined a job's process group (also under ``torchrun --nproc_per_node
    1``). Not the same as ``dist.is_initialized()``: an in-process vLLM engine starts a group of
    its own in a plain process."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, n: int) -> range:
        """This rank's contiguous share of ``n`` items (the first ``n % size`` ranks get one more).

        >>> [list(World(r, 3).share(7)) for r in range(3)]
        [[0, 1, 2], [3, 4], [5, 6]]
        """
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return range(start, start + base + (self.rank < extra))

    # ------------------------------------------------------------------ collectives
    def gather_objects(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (``[obj]`` in a single process)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s ``obj`` on every rank (``obj`` itself in a single process)."""
        if not self.distributed or self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def max(self, x: torch.Tensor) -> torch.Tensor:
        """The largest ``x`` of any rank (a new tensor; ``x`` itself is left alone)."""
        x = x.detach().clone()
        if self.distributed and self.size > 1:
            dist.all_reduce(x, op=dist.ReduceOp.MAX)
        return x

    def all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """``t`` of every rank (all of one shape), in rank order."""
        if not self.distributed or self.size == 1:
            return [t]
        out = [torch.empty_like(t) for _ in range(self.size)]
        dist.all_gather(out, t.contiguous())
        return out

    def barrier(self) -> None:
        if self.distributed and self.size > 1:
            dist.barrier()


def launched() -> bool:
    """Whether this process was started by torchrun (or a launcher setting the same variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def many_ranks() -> bool:
    """Whether this process is one of several ranks of a process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def backend() -> str:
    """nccl with CUDA, gloo otherwise."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_distributed(timeout_s: float = 600.0) -> World:
    """Join the job's process group when launched by torchrun; a single-process ``World`` otherwise.

    On a GPU each rank takes ``cuda:LOCAL_RANK``. Every collective waits at most ``timeout_s``."""
    if not launched():
        return World()
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
        dist.init_process_group(backend(), timeout=datetime.timedelta(seconds=timeout_s),
                                **({"device_id": torch.device("cuda", local)} if torch.cuda.is_available() else {}))
    return World(rank, size, local, distributed=True)


def close_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# --------------------------------------------------------------------------- FSDP2


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a Hugging Face model (``model.model.layers`` for a causal LM,
    ``model.layers`` for a bare ``AutoModel``): FSDP's units, one all-gather each."""
    for path in ("model.layers", "layers", "backbone.layers", "backbone.model.layers", "transformer.h", "gpt_neox.layers",
                 "base_model.model.model.layers"):  # the last: a peft model (LoRA)
        m = model
        for part in path.split("."):
            m = getattr(m, part, None)
            if m is None:
                break
        if isinstance(m, torch.nn.ModuleList) and len(m):
            return list(m)
    raise ValueError(f"{type(model).__name__}: no list of transformer layers found to shard "
                     "(looked for model.layers, layers, transformer.h)")


def shard_model(model: torch.nn.Module, *, mixed_precision: bool = False, cpu_offload: bool = False,
                reshard_after_forward: bool = True) -> torch.nn.Module:
    """FSDP2 (``fully_shard``) on each transformer layer, then on the root (embeddings, final norm,
    head and any tied weights). ``mixed_precision``: bf16 parameters for compute, fp32 gradient
    reduction (the sharded fp32 parameters stay the optimizer's). ``cpu_offload``: the sharded
    parameters, gradients and optimizer state live in host memory.

    Gradients are summed over the ranks, not averaged: the losses are normalised by the whole
    batch's token and sequence counts already (see ``grpo_kit.train.update``)."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if mixed_precision
          else MixedPrecisionPolicy())
    offload = CPUOffloadPolicy() if cpu_offload else OffloadPolicy()
    for layer in decoder_layers(model):
        fully_shard(layer, mp_policy=mp, offload_policy=offload, reshard_after_forward=reshard_after_forward)
    # a peft model's root unit is the transformers model inside it: generate() reaches that model
    # without the peft wrapper's forward, and FSDP needs every forward to enter through the root
    root = model.get_base_model() if hasattr(model, "get_base_model") else model
    fully_shard(root, mp_policy=mp, offload_policy=offload, reshard_after_forward=reshard_after_forward)
    _RESHARD[root] = reshard_after_forward
    for m in model.modules():
        if hasattr(m, "set_gradient_divide_factor"):
            m.set_gradient_divide_factor(1.0)
            m.set_force_sum_reduction_for_comms(True)  # plain SUM: gloo has no pre-multiplied sum
    return model


_RESHARD: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def gathered(model: torch.nn.Module):
    """Every FSDP unit of ``model`` gathered once for the block, not once per forward: for
    generation, whose many forward passes (one per token) would each all-gather every layer.
    Holds a full copy of the weights (in the compute dtype) for the block; a no-op unsharded."""
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    if not units:
        yield
        return
    root = units[0]  # modules() visits the outermost unit first
    root.set_reshard_after_forward(False)
    for m in units:
        m.unshard()
    try:
        yield
    finally:
        for m in units:
            m.reshard()
        root.set_reshard_after_forward(_RESHARD.get(root, True))


def full_tensors(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of every entry of ``model.state_dict()``, gathered from the shards one
    tensor at a time (a collective: every rank must iterate to the end)."""
    from torch.distributed.tensor import DTensor

    for name, t in model.state_dict().items():
        t = t.detach()
        if isinstance(t, DTensor):
            t = t.full_tensor()
        yield name, t


def local_bytes(tensors) -> int:
    """Bytes this rank holds of ``tensors`` (the local shard of a DTensor)."""
    from torch.distributed.tensor import DTensor

    total = 0
    for t in tensors:
        if t is None:
            continue
        if isinstance(t, DTensor):
            t = t.to_local()
        total += t.numel() * t.element_size()
    return total
