"""An experiment on several processes: torchrun (torch.distributed elastic) ranks share the work.

``torchrun --nproc_per_node=N -m unisteer run EXP`` starts N copies of ``unisteer run``; each
sees ``RANK`` and ``WORLD_SIZE`` in its environment. The experiment's work units (a concept's
method: train → sweeps → fit → eval → samples) are split by :func:`partition`, the same way
on every rank, and each rank writes its units' stages into the shared output folder, atomically
and keyed by their digests (:mod:`unisteer.experiment.stages`). A rank that dies is restarted
by torchrun (``--max-restarts``) with the others, and every rank skips what is already done.
After a barrier rank 0 reads every stage back and writes the reports.

The process group (gloo: the ranks exchange only a barrier and one flag, so it serves CPU and
CUDA runs alike) is set up only when ``WORLD_SIZE`` is above 1; a plain ``unisteer run`` never
starts one.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

#: How long a rank waits at the barrier for the slowest one (a concept can take hours).
BARRIER_TIMEOUT = datetime.timedelta(hours=72)


@dataclass(frozen=True)
class World:
    """This process's place in a torchrun job."""

    rank: int
    size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_from_env() -> World | None:
    """The torchrun job this process belongs to (``RANK``, ``WORLD_SIZE``), or ``None`` when
    it runs alone (no ``WORLD_SIZE``, or 1)."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return None
    return World(int(os.environ.get("RANK", "0")), size)


def partition(units: Sequence[T], rank: int, size: int) -> list[T]:
    """Rank ``rank``'s share of ``units``: a contiguous block, the blocks differing in length
    by at most one. Contiguous, so a rank keeps a concept's methods together where it can (they
    share the replay cache's captures)."""
    n = len(units)
    return list(units[rank * n // size : (rank + 1) * n // size])


def start(world: World) -> None:
    """Join the job's process group (gloo, rendezvous from torchrun's environment)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)


def stop() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def agree(ok: bool, problem: str) -> None:
    """Every rank learns whether all of them are ``ok``; a rank that is not has its
    ``problem`` raised on every rank (so none waits for it at a barrier)."""
    import torch.distributed as dist

    from unisteer.errors import UsageError

    gathered: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, None if ok else problem)
    problems = [str(p) for p in gathered if p is not None]
    if problems:
        raise UsageError(problems[0])
