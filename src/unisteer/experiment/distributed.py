"""An experiment on several processes: torchrun (torch.distributed elastic) ranks share the work.

``torchrun --nproc_per_node=N -m unisteer run EXP`` starts N copies of ``unisteer run``; each
sees ``RANK`` and ``WORLD_SIZE`` in its environment. The experiment's work units (a concept's
method: train → sweeps → fit → eval → samples) are split by :func:`partition`, the same way
on every rank, and each rank writes its units' stages into the shared output folder, atomically
and keyed by their digests (:mod:`unisteer.experiment.stages`). A rank that dies is restarted
by torchrun (``--max-restarts``) with the others, and every rank skips what is already done.
After a barrier rank 0 reads every stage back and writes the reports.

The ranks exchange only a barrier and one flag, so they meet in torchrun's own key-value store
(``torch.distributed.rendezvous("env://")``: a c10d ``TCPStore``) and start no process group.
That is also what makes a restart work: torchrun keeps its store across restarts, so the keys
of the killed round are still there, and a gloo or NCCL group formed through it can read the
dead rank's old address and hang (seen with torch 2.13; pytorch issue 167288 reports the same
for NCCL). Our keys are safe to outlive a round: "rank r has written its units" stays true
after r dies, because stages are on disk. Nothing here imports torch.distributed unless
``WORLD_SIZE`` is above 1, so a plain ``unisteer run`` never touches it.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

#: How long a rank waits at the barrier for the slowest one (a concept can take hours).
BARRIER_TIMEOUT = datetime.timedelta(hours=72)
#: How long a rank tries to reach the job's store before it gives up.
CONNECT_TIMEOUT = datetime.timedelta(minutes=15)


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


class Job:
    """This rank's handle on the torchrun job's key-value store (see the module's docstring)."""

    def __init__(self, world: World, store: Any) -> None:
        self.world = world
        self._store = store

    def agree(self, ok: bool, problem: str) -> None:
        """Every rank learns whether all of them are ``ok``; a rank that is not has its
        ``problem`` raised on every rank (so none waits for it at a barrier)."""
        from unisteer.errors import UsageError

        size = self.world.size
        self._store.set(f"agree/{size}/{self.world.rank}", "" if ok else problem)
        keys = [f"agree/{size}/{r}" for r in range(size)]
        self._store.wait(keys)
        problems = [v.decode() for v in self._store.multi_get(keys) if v]
        if problems:
            raise UsageError(problems[0])

    def barrier(self, name: str) -> None:
        """Rank 0 waits until every rank has passed ``name``; the others go on at once.
        Keyed by the world size, since the partition of the work depends on it."""
        size = self.world.size
        self._store.set(f"{name}/{size}/{self.world.rank}", "1")
        if self.world.is_main:
            self._store.wait([f"{name}/{size}/{r}" for r in range(size)])


def join(world: World) -> Job:
    """Connect to the job's store (torchrun's ``MASTER_ADDR``/``MASTER_PORT``)."""
    from torch.distributed.distributed_c10d import PrefixStore
    from torch.distributed.rendezvous import rendezvous

    store, _, _ = next(
        rendezvous("env://", rank=world.rank, world_size=world.size, timeout=CONNECT_TIMEOUT)
    )
    store.set_timeout(BARRIER_TIMEOUT)
    return Job(world, PrefixStore("unisteer", store))
