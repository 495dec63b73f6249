"""Splitting a batch command's files across the ranks of a torchrun launch.

``torchrun --nproc_per_node=N -m cli smooth IN OUT`` starts N processes with ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK`` set. Every rank plans the same sorted job list and takes every
``world_size``-th job starting at its rank, so each file is processed exactly once. At the
end the ranks exchange their reports (gloo, which carries Python objects on CPU whatever
device computed), so rank 0 prints the merged summary and every rank exits with the merged
exit code.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import NoReturn

import click


@dataclass(frozen=True)
class Ranks:
    """This process's place in a launch (``world_size == 1`` outside torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list:
        """This rank's share of ``items``: every ``world_size``-th from ``rank``.

        Example:
            >>> Ranks(1, 3).shard(list(range(8)))
            [1, 4, 7]
        """
        return items[self.rank :: self.world_size]


def ranks_from_env(environ: dict | None = None) -> Ranks:
    """Read torchrun's environment variables.

    Example:
        >>> ranks_from_env({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})
        Ranks(rank=1, world_size=2, local_rank=1)
    """
    env = os.environ if environ is None else environ
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    local = env.get("LOCAL_RANK")
    return Ranks(int(env.get("RANK", "0")), world, int(local) if local is not None else None)


#: How long a rank of a batch command waits for the others at the end. Files are dealt out
#: before any is read, so one rank may finish hours before another (torch's default, 30
#: minutes, then failed the early rank with a gloo traceback and lost the other's file).
BATCH_WAIT_SECONDS = 7 * 24 * 3600


def start(ranks: Ranks, backend: str = "gloo", wait_seconds: float | None = None) -> None:
    """Join the process group (env:// rendezvous set up by torchrun); no-op outside torchrun.
    ``wait_seconds`` bounds each collective's wait (torch's default if None)."""
    import torch.distributed as dist

    if ranks.distributed and not dist.is_initialized():
        join_process_group(ranks, backend, wait_seconds)


# How long a rank other than 0 waits before exiting on an error every rank meets: torchrun
# stops the remaining workers as soon as one exits, and rank 0, which says why, could be
# stopped before it had (a usage error then ended in silence, rank 0 with 143).
MAIN_SPEAKS_SECONDS = 2.0


class GroupUnavailable(click.UsageError):
    """RANK/WORLD_SIZE are set but the process group cannot start: no torchrun, so perhaps no
    rank 0 to report it; every rank reports it."""


def leave_after_main(exit_code: int) -> NoReturn:
    """Exit with ``exit_code`` (a rank other than 0, on an error every rank meets), once rank
    0 has had time to report it."""
    import time

    time.sleep(MAIN_SPEAKS_SECONDS)
    raise SystemExit(exit_code)


def join_process_group(ranks: Ranks, backend: str, wait_seconds: float | None = None) -> None:
    """``init_process_group`` such that ``destroy_process_group`` really ends the group.

    ``torch.distributed.nn.functional`` takes ``group.WORLD`` as a default argument when it
    is first imported, and torch._dynamo imports it (creating any optimizer does). Imported
    after the group exists, it keeps the group alive past ``destroy_process_group``; gloo's
    worker threads then meet interpreter shutdown still running and the process aborts
    ("terminate called without an active exception", exit -6) now and then. Imported first,
    its defaults hold None.
    """
    import torch.distributed as dist
    import torch.distributed.nn.functional  # noqa: F401  (see above: before the group)

    options = {} if wait_seconds is None else {"timeout": datetime.timedelta(seconds=wait_seconds)}
    try:
        dist.init_process_group(backend, rank=ranks.rank, world_size=ranks.world_size, **options)
    except ValueError as err:
        # RANK/WORLD_SIZE set by hand (or left over) without torchrun's MASTER_ADDR/PORT.
        raise GroupUnavailable(
            f"RANK={ranks.rank} and WORLD_SIZE={ranks.world_size} are set, but the process "
            f"group cannot start ({err}); run under torchrun, or unset them"
        ) from None


def gather(ranks: Ranks, payload: object) -> list:
    """Every rank's ``payload``, in rank order (just ``[payload]`` outside torchrun)."""
    if not ranks.distributed:
        return [payload]
    import torch.distributed as dist

    gathered: list = [None] * ranks.world_size
    dist.all_gather_object(gathered, payload)
    return gathered


def finish(ranks: Ranks) -> None:
    if ranks.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
