"""Splitting a batch command's files across the ranks of a torchrun launch.

``torchrun --nproc_per_node=N --no-python diffconv smooth IN OUT`` starts N processes with
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` set. Every rank plans the same sorted job list
and takes every ``world_size``-th job starting at its rank, so each file is processed exactly
once. At the end the ranks exchange their reports (gloo, which carries Python objects on CPU
whatever device computed), so rank 0 prints the merged summary and every rank exits with the
merged exit code.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import threading
from collections.abc import Iterator
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
    if env_problem(env) is not None:
        # Not torchrun's: main() says so and stops. Here (a signal handler asks too) nothing
        # may raise.
        return Ranks()
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    local = env.get("LOCAL_RANK")
    return Ranks(int(env.get("RANK", "0")), world, int(local) if local is not None else None)


def env_problem(environ: dict | None = None) -> str | None:
    """What is wrong with torchrun's variables in the environment, or None: WORLD_SIZE must
    be a whole number, and where it is above 1, RANK and LOCAL_RANK too (RANK=abc ended in a
    traceback). Without WORLD_SIZE, or at 1 or below, the others are not read at all.

    Example:
        >>> env_problem({"RANK": "abc", "WORLD_SIZE": "2"})
        "RANK='abc' is not a whole number (torchrun sets RANK, WORLD_SIZE and LOCAL_RANK); unset it"
        >>> env_problem({"RANK": "1", "WORLD_SIZE": "2"}), env_problem({"LOCAL_RANK": "-1"})
        (None, None)
    """
    env = os.environ if environ is None else environ
    for name, least in (("WORLD_SIZE", -(2**63)), ("RANK", 0), ("LOCAL_RANK", 0)):
        value = env.get(name)
        if value is None:
            if name == "WORLD_SIZE":
                return None
            continue
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or number < least:
            return (
                f"{name}={value!r} is not a whole number"
                + (f" >= {least}" if number is not None else "")
                + " (torchrun sets RANK, WORLD_SIZE and LOCAL_RANK); unset it"
            )
        if name == "WORLD_SIZE" and number <= 1:
            return None  # one process: RANK and LOCAL_RANK mean nothing
    return None


#: How long a rank of a batch command waits for the others at the end. Files are dealt out
#: before any is read, so one rank may finish hours before another (torch's default, 30
#: minutes, then failed the early rank with a gloo traceback and lost the other's file).
BATCH_WAIT_SECONDS = 7 * 24 * 3600


#: How long each rank waits for the others to join. torchrun starts them together, so one
#: still missing after this long is not coming (torch's own default wait).
RENDEZVOUS_SECONDS = 30 * 60

# The group that ``gather`` uses: the default one, or one with a longer wait (``start``).
_gather_group = None


def start(ranks: Ranks, backend: str = "gloo", wait_seconds: float | None = None) -> None:
    """Join the process group (env:// rendezvous set up by torchrun); no-op outside torchrun.
    ``wait_seconds`` bounds ``gather``'s wait (torch's default if None); the ranks wait for
    each other to join for ``RENDEZVOUS_SECONDS`` whatever it is."""
    import torch.distributed as dist

    global _gather_group
    if ranks.distributed and not dist.is_initialized():
        join_process_group(ranks, backend)
        if wait_seconds is not None:
            _gather_group = dist.new_group(timeout=datetime.timedelta(seconds=wait_seconds))


# How long a rank other than 0 waits before exiting on an error every rank meets: torchrun
# stops the remaining workers as soon as one exits, and rank 0, which says why, could be
# stopped before it had (a usage error then ended in silence, rank 0 with 143).
MAIN_SPEAKS_SECONDS = 2.0


class GroupUnavailable(click.UsageError):
    """RANK/WORLD_SIZE are set but the process group cannot start: no torchrun, so perhaps no
    rank 0 to report it; every rank reports it."""


class PeersMissing(click.ClickException):
    """The other ranks did not join within ``RENDEZVOUS_SECONDS``; every rank that waited
    reports it, as there may be no rank 0 to do so (a runtime failure, exit 1)."""


def said_by_every_rank(err: click.ClickException) -> bool:
    """Whether each rank reports ``err`` itself, rather than leaving it to rank 0."""
    return isinstance(err, (GroupUnavailable, PeersMissing))


def leave_after_main(exit_code: int, err: click.ClickException | None = None) -> NoReturn:
    """Exit with ``exit_code`` (a rank other than 0, on an error every rank meets), once rank
    0 has had time to report it.

    torchrun stops this rank (SIGTERM) as soon as rank 0 has exited: it then leaves with
    ``exit_code`` and no word, where it had said "stopped by signal 15" and exited 143 (every
    rank of a usage error is to exit 2). Still here after the wait, rank 0 did not report it:
    the error was this rank's alone (a path missing on one node), and ``err`` is said here,
    with the rank, rather than nowhere.
    """
    import sys
    import time

    def leave(signum, frame) -> None:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(exit_code)  # nothing of this rank's to clean up: it failed before any work

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {stop: signal.signal(stop, leave) for stop in (signal.SIGTERM, signal.SIGINT)}
    try:
        time.sleep(MAIN_SPEAKS_SECONDS)
    finally:  # (main() then exits with this code on torchrun's SIGTERM: quiet_after_command)
        for stop, handler in previous.items():
            signal.signal(stop, handler)
    if err is not None:
        rank = ranks_from_env().rank
        click.echo(f"diffconv (rank {rank}): error: {err.format_message()}", err=True)
    raise SystemExit(exit_code)


def join_process_group(ranks: Ranks, backend: str, wait_seconds: float | None = None) -> None:
    """``init_process_group`` such that ``destroy_process_group`` really ends the group, and
    a stop signal or missing peers end the wait for the others.

    ``wait_seconds`` bounds the wait for the others (``RENDEZVOUS_SECONDS`` if None).

    ``torch.distributed.nn.functional`` takes ``group.WORLD`` as a default argument when it
    is first imported, and torch._dynamo imports it (creating any optimizer does). Imported
    after the group exists, it keeps the group alive past ``destroy_process_group``; gloo's
    worker threads then meet interpreter shutdown still running and the process aborts
    ("terminate called without an active exception", exit -6) now and then. Imported first,
    its defaults hold None.
    """
    import torch.distributed as dist
    import torch.distributed.nn.functional  # noqa: F401  (see above: before the group)

    wait_seconds = RENDEZVOUS_SECONDS if wait_seconds is None else wait_seconds
    timeout = datetime.timedelta(seconds=wait_seconds)
    try:
        with _stop_signals_at_once():
            dist.init_process_group(
                backend, rank=ranks.rank, world_size=ranks.world_size, timeout=timeout
            )
    except ValueError as err:
        # RANK/WORLD_SIZE set by hand (or left over) without torchrun's MASTER_ADDR/PORT.
        given = [f"{n}={os.environ[n]}" for n in ("RANK", "WORLD_SIZE") if n in os.environ]
        raise GroupUnavailable(
            f"{' and '.join(given) or 'WORLD_SIZE'} {'is' if len(given) == 1 else 'are'} set, "
            f"but the process group cannot start ({err}); run under torchrun, or unset "
            f"{'it' if len(given) == 1 else 'them'}"
        ) from None
    except dist.DistError as err:
        where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PeersMissing(
            f"rank {ranks.rank} of {ranks.world_size}: the other ranks did not join at {where} "
            f"within {wait_seconds:g} s ({reason})"
        ) from None


@contextlib.contextmanager
def _stop_signals_at_once() -> Iterator[None]:
    """Restore the default actions of SIGTERM and Ctrl-C while the rendezvous blocks.

    The wait runs in C++ and never returns to the interpreter until every rank has joined, so
    a Python handler (``cli.interrupts``) would hold the signal until then: torchrun's SIGTERM
    after another rank failed, or the user's Ctrl-C, went unheeded. Nothing has been written
    yet, so ending at once loses nothing.
    """
    from cli import interrupts  # not at the top: it imports this module

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # Only handlers that hold the signal: an ignored one (a background job's SIGINT) or an
    # embedding program's own stays as it is.
    saved = {
        signum: handler
        for signum in (signal.SIGTERM, signal.SIGINT)
        if interrupts.is_ours_or_pythons(handler := signal.getsignal(signum))
    }
    try:
        for signum in saved:
            signal.signal(signum, signal.SIG_DFL)
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def gather(ranks: Ranks, payload: object) -> list:
    """Every rank's ``payload``, in rank order (just ``[payload]`` outside torchrun)."""
    if not ranks.distributed:
        return [payload]
    import torch.distributed as dist

    gathered: list = [None] * ranks.world_size
    dist.all_gather_object(gathered, payload, group=_gather_group)
    return gathered


def finish(ranks: Ranks) -> None:
    global _gather_group
    _gather_group = None  # ended with the default group
    if ranks.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
