"""One video on several processes (GPUs): the context windows of each step spread over the ranks
of a ``torch.distributed`` process group (NCCL on GPUs, gloo on CPUs; ``torchrun`` starts it).

Every rank holds the whole model and samples the same schedule from the same seed. A step's
denoiser calls are dealt round-robin; each result is then broadcast by the rank that made it, and
every rank adds all of them up in the single-process order, so the video is the same, bit for bit,
for any number of ranks. A rank that fails says so to the others at the end of its round, and every
rank stops with the failing rank named instead of waiting on it.
"""

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist


class RankFailed(RuntimeError):
    """Another rank of the process group failed; its own error is in its output."""


@dataclass(frozen=True)
class Ranks:
    rank: int
    world_size: int

    def owner(self, index: int) -> int:
        return index % self.world_size


def current() -> Ranks | None:
    """The initialised process group of more than one rank, else ``None``."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return Ranks(dist.get_rank(), dist.get_world_size())
    return None


def launched() -> bool:
    """Whether this process is one of several started by ``torchrun`` (or another launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextmanager
def joined(device: torch.device) -> Iterator[tuple[torch.device, bool]]:
    """This process's device and whether it leads (writes results, shows progress): under a
    launcher, inside the launcher's process group (``cuda:LOCAL_RANK`` on GPUs), left at the end."""
    if not launched() or dist.is_initialized():
        yield device, current() is None or current().rank == 0
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield device, dist.get_rank() == 0
    finally:
        dist.destroy_process_group()


def spread(
    jobs: Sequence, run: Callable[[object], tuple[torch.Tensor, ...]], ranks: Ranks | None, device: torch.device
) -> Iterator[tuple[object, tuple[torch.Tensor, ...]]]:
    """``(job, run(job))`` for every job, in order. With ``ranks`` each job runs on one rank only
    (job ``i`` on rank ``i % world_size``) and its results reach every rank."""
    if ranks is None:
        for job in jobs:
            yield job, run(job)
        return
    for first in range(0, len(jobs), ranks.world_size):
        round_jobs = jobs[first : first + ranks.world_size]
        mine = None
        failure = None
        if ranks.rank < len(round_jobs):
            try:
                mine = run(round_jobs[ranks.rank])
            except Exception as error:  # told to the other ranks below, then raised here
                failure = error
        _check_all_ranks(failure, ranks, device)
        for offset, job in enumerate(round_jobs):
            yield job, _broadcast_all(mine if offset == ranks.rank else None, first + offset, ranks, device)


def _check_all_ranks(failure: Exception | None, ranks: Ranks, device: torch.device) -> None:
    failed = torch.zeros(ranks.world_size, device=device)
    failed[ranks.rank] = failure is not None
    dist.all_reduce(failed)
    if failure is not None:
        raise failure
    if failed.any():
        names = ", ".join(str(rank) for rank in failed.nonzero().flatten().tolist())
        raise RankFailed(f"rank {names} of {ranks.world_size} failed (its error is in its output); this rank stops too")


_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MAX_TENSORS, _MAX_DIMS = 4, 8


def _broadcast_all(
    tensors: tuple[torch.Tensor, ...] | None, index: int, ranks: Ranks, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """The owner's tensors of job ``index`` on every rank (their count, dtypes and shapes sent first)."""
    source = ranks.owner(index)
    header = torch.zeros(1 + _MAX_TENSORS * (2 + _MAX_DIMS), dtype=torch.int64, device=device)
    if tensors is not None:
        header[0] = len(tensors)
        for position, tensor in enumerate(tensors):
            start = 1 + position * (2 + _MAX_DIMS)
            header[start : start + 2 + tensor.ndim] = torch.tensor(
                [_DTYPES.index(tensor.dtype), tensor.ndim, *tensor.shape]
            )
    dist.broadcast(header, src=source)
    received = []
    for position in range(int(header[0])):
        start = 1 + position * (2 + _MAX_DIMS)
        dtype, ndim = _DTYPES[int(header[start])], int(header[start + 1])
        if tensors is not None:
            tensor = tensors[position].contiguous()
        else:
            tensor = torch.empty(header[start + 2 : start + 2 + ndim].tolist(), dtype=dtype, device=device)
        dist.broadcast(tensor, src=source)
        received.append(tensor)
    return tuple(received)
