"""Multi-process training on torch.distributed: who this process is, its shard of the data, and the few
collectives the trainer needs (global loss means, validation predictions, a barrier).

Launch with torch's own launcher, one process per GPU (or per CPU worker)::

    torchrun --nproc-per-node 4 -m fastdipole train --data qm9.h5 --out runs/ddp

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR; they are read once, when training starts
(:func:`from_environment`). Backend: NCCL for CUDA devices, gloo on CPU. Gradients are averaged by
``torch.nn.parallel.DistributedDataParallel``; nothing here sends tensors by hand.

How a distributed run relates to a one-process run (what tests/test_distributed.py checks):

* ``--batch-size`` is per process: ``N`` processes with batch ``b`` take steps on ``N * b`` molecules.
* Each epoch's shuffled order (the same on every rank: seeded by ``seed + epoch``) is cut to a multiple of
  ``N`` and rank ``r`` takes every ``N``-th molecule from position ``r`` (as ``DistributedSampler``); the
  up to ``N - 1`` molecules cut off differ from epoch to epoch. Step ``k`` of the ranks together then covers
  exactly batch ``k`` of a one-process run with batch size ``N * b`` on that order.
* Every mean of the loss is over the whole step (all ranks): sums and counts are all-reduced with
  autograd-aware collectives, so the loss, and after DDP's averaging the gradient, equal the one-process
  run's on the combined batch (RMSE terms are not means of per-rank RMSEs).
* Validation: each rank predicts its share of the validation split; the predictions are gathered, so every
  rank computes the same metrics (the learning-rate schedule and early stopping agree).
* Only rank 0 writes the run folder; every rank reads it when resuming.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import threading
from dataclasses import dataclass

import torch

from ..errors import FastDipoleError

#: How long a collective waits for the other processes before it fails (a rank that hangs or died).
DEFAULT_TIMEOUT_SECONDS = 300.0


class DistributedError(FastDipoleError):
    """A distributed run cannot go on (a process died, or the processes disagree)."""


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run. ``world_size == 1``: a plain one-process run (no collectives)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # "gloo" / "nccl", None when not distributed
    restart_count: int = 0  # torchrun's restarts of the workers so far (--max-restarts)

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        """Whether this process writes the run folder and prints progress (rank 0)."""
        return self.rank == 0


SINGLE = Distributed()


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets WORLD_SIZE and RANK)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def from_environment(device: torch.device, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> Distributed:
    """Join the process group torchrun describes (read once, at the start of training).

    ``device``: the device asked for; on CUDA each process takes GPU ``LOCAL_RANK`` and NCCL, else gloo.
    Returns :data:`SINGLE` when not launched by torchrun, or when torchrun started one process.
    """
    if not launched_by_torchrun():
        return SINGLE
    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    if world == 1:
        return Distributed(restart_count=restarts)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    if not torch.distributed.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_seconds)
        torch.distributed.init_process_group(backend=backend, store=_launcher_store(rank, world, restarts, timeout),
                                             rank=rank, world_size=world, timeout=timeout)
    return Distributed(rank, world, local, backend, restarts)


def _launcher_store(rank: int, world: int, restarts: int, timeout: datetime.timedelta):
    """The rendezvous store torchrun set up (MASTER_ADDR / MASTER_PORT), as ``init_process_group("env://")``
    would open it, under a prefix naming the restart: workers that torchrun restarted (--max-restarts) then
    never read the addresses their dead predecessors left (gloo's connectFullMesh was refused now and then
    after a restart without it; pytorch/pytorch#167288 reports the same with NCCL)."""
    agent_hosts_it = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True)
    store = torch.distributed.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                                       is_master=not agent_hosts_it and rank == 0, timeout=timeout,
                                       multi_tenant=not agent_hosts_it)
    return torch.distributed.PrefixStore(f"fastdipole/attempt_{restarts}", store)


def join(rank: int, world_size: int, init_method: str, backend: str = "gloo",
         timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> Distributed:
    """Join a process group given explicitly (Python API and tests; torchrun users need not call this)."""
    torch.distributed.init_process_group(backend=backend, init_method=init_method, rank=rank, world_size=world_size,
                                         timeout=datetime.timedelta(seconds=timeout_seconds))
    return Distributed(rank, world_size, rank, backend)


def leave(dist: Distributed) -> None:
    """Leave the process group (no-op for a one-process run)."""
    if dist.active and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def step_means(dist: Distributed):
    """(atom_mean, molecule_mean) for the loss: means over the atoms / molecules of the whole step, all ranks.

    Each is ``all_reduce([sum(x), count])`` then sum / count, one collective per mean. The all-reduce's
    backward all-reduces the gradient as well (:func:`_all_reduce_with_grad`): each
    rank's gradient is then ``N`` times its share of the global loss's, and DDP's average over the ``N``
    ranks gives the gradient of the global loss exactly."""
    group = torch.distributed.group.WORLD

    def mean_over_step(x: torch.Tensor) -> torch.Tensor:
        count = torch.tensor(float(x.shape[0]), dtype=x.dtype, device=x.device)
        total = _all_reduce_with_grad(torch.stack([x.sum(), count]), group)
        return total[0] / total[1]

    return mean_over_step, mean_over_step


def _all_reduce_with_grad(tensor: torch.Tensor, group) -> torch.Tensor:
    """Sum over ranks whose backward sums the gradients over ranks too. torch.distributed.nn.functional has
    done this on every torch release we support (>= 2.4); it warns that it is deprecated in favour of
    ``_functional_collectives.all_reduce``, whose backward only exists in recent releases, so it stays."""
    import warnings

    from torch.distributed.nn import functional as differentiable

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return differentiable.all_reduce(tensor, group=group)


def broadcast_from_writer(value, dist: Distributed):
    """Rank 0's ``value`` on every rank (a decision only rank 0 can make alike for all, e.g. a time budget)."""
    if not dist.active:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj, dist: Distributed) -> list:
    """``obj`` of every rank, in rank order (pickled; for validation predictions, not for hot paths)."""
    if not dist.active:
        return [obj]
    out = [None] * dist.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def barrier(dist: Distributed) -> None:
    if dist.active:
        torch.distributed.barrier()


def agree(flag: bool, dist: Distributed) -> bool:
    """True on every rank when ``flag`` is true on every rank (e.g. "my setup succeeded")."""
    if not dist.active:
        return flag
    value = torch.tensor([1.0 if flag else 0.0])
    if dist.backend == "nccl":
        value = value.cuda()
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
    return bool(value.item() > 0.5)


def collective_failure(err: BaseException, dist: Distributed, hint: str) -> DistributedError:
    """A one-line error for a collective that failed because another process died or hung."""
    detail = " ".join(str(err).split())[:200]
    return DistributedError(
        f"rank {dist.rank} of {dist.world_size}: lost contact with the other training processes (a process died "
        f"or hung: {detail}){hint}")


class LauncherStop(Exception):
    """torchrun sent SIGTERM: it stops the remaining workers once one of them failed."""


@contextlib.contextmanager
def stopped_by_launcher(dist: Distributed):
    """While active, SIGTERM (torchrun stopping the survivors of a failed worker) raises :class:`LauncherStop`
    in the main thread, so the trainer can say where the run stands instead of dying silently."""
    if not dist.active or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise LauncherStop()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
