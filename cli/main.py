"""The ``diffconv`` command group.

Commands are loaded lazily from ``cli.commands.<name>`` so that ``diffconv --help`` and
usage errors answer without importing torch.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys

import click


def _command_name(args: list[str]) -> str | None:
    """The subcommand named on the command line (the first argument not an option)."""
    return next((arg for arg in args if not arg.startswith("-")), None)


# Before anything imports torch: idle OpenMP threads spinning between parallel regions steal
# the cores that reading, encoding and writing files need (a 10-minute stereo file took 13 s
# with spinning threads and 3.5 s without on 2 cores). A user's own setting wins. `tune`
# keeps OpenMP's default: its timings go into the cache that "auto" consults in every
# process, most of which keep that default, and sleeping threads woken for each parallel
# region made small direct calls time 3x slower there (1 x 1,024 with 127 taps, forward and
# backward: 0.64 ms against 0.15; its cache then said fft, 0.12).
if _command_name(sys.argv[1:]) != "tune":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# numpy's OpenBLAS starts a thread per core that polls for work; the command layer does no
# linear algebra in numpy, and on 2 cores those threads took 2% of a batch run's CPU time.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from cli import __version__, distributed, errors, interrupts, startup  # noqa: E402 (after the settings)

# name -> (module under cli.commands, one-line help shown by `diffconv --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "fit": ("fit", "Learn an FIR kernel or window parameters from input/target pairs"),
    "smooth": ("smooth", "Smooth files or directories with a unit-sum window."),
    "convolve": ("convolve", "Convolve files with a kernel file (.npy, .txt/.csv or audio IR)."),
    "filter": ("filter", "Low-, high-, band-pass or band-stop FIR filtering in Hz."),
    "windows": ("windows", "List the windows with their parameters and defaults."),
    "info": ("info", "Show frames, rate, channels, format and duration of files."),
    "tune": ("tune", "Measure the fastest convolution method per shape on a device; cache it."),
    "grad": ("grad", "Write gradient maps (d objective / d signal, kernel, params) and Jacobians."),
}


class LazyGroup(click.Group):
    """A group whose commands are imported only when invoked or asked for help."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, _ = COMMANDS[cmd_name]
        module = importlib.import_module(f"cli.commands.{module_name}")
        return getattr(module, module_name)

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        # --help and --version print while the group's options are parsed, before invoke:
        # `diffconv --help > /dev/full` (or >&-) failed there with a bare traceback.
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except OSError as err:
            _report_os_error(err)
            raise click.exceptions.Exit(1) from None

    def invoke(self, ctx: click.Context):
        # Ctrl-C exits 130 (128 + SIGINT), as shells and `fit` report it and as batch scripts
        # test for, not click's "Aborted!" with 1, the code of a failed file.
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("\ndiffconv: interrupted", err=True)
            raise click.exceptions.Exit(interrupts.EXIT_CTRL_C) from None
        except click.UsageError as err:
            from cli.distributed import leave_after_main, ranks_from_env, said_by_every_rank

            # Under torchrun every rank fails alike: rank 0 says why, once. Without a group
            # there may be no rank 0 at all: each says it.
            if not ranks_from_env().is_main and not said_by_every_rank(err):
                leave_after_main(err.exit_code, err)
            raise
        except OSError as err:
            # What no command turned into a message of its own: text for stdout on a full
            # disk or a closed stream (`info ... > /dev/full`). A runtime failure, no traceback.
            _report_os_error(err)
            raise click.exceptions.Exit(1) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the registry, so listing commands imports none of them.
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _report_os_error(err: OSError) -> None:
    where = f" ({err.filename})" if err.filename else ""
    if not isinstance(err, BrokenPipeError):  # `diffconv windows | head`: the reader is done
        with contextlib.suppress(OSError):
            click.echo(f"diffconv: error: {err.strerror or err}{where}", err=True)
    errors.discard_further_output(sys.stdout)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="diffconv")
def cli() -> None:
    """Filter signals with differentiable 1-D convolution (WAV, FLAC, OGG, .npy ...)."""


def main() -> None:
    startup.begin()  # rare collections while torch imports (see cli.startup)
    errors.stand_in_for_closed_streams()
    interrupts.unwind_on_sigterm()
    problem = distributed.env_problem()
    if problem is not None:
        click.echo(f"diffconv: error: {problem}", err=True)
        raise SystemExit(2)
    exit_code = None
    try:
        try:
            cli(prog_name="diffconv")  # also when run as `python -m cli` (torchrun -m cli)
        except SystemExit as done:  # click ends every command so, with its status
            code = done.code
            exit_code = code if isinstance(code, int) else (0 if code is None else 1)
            raise
        finally:
            interrupts.quiet_after_command(exit_code)
            if exit_code is not None and distributed.ranks_from_env().distributed:
                interrupts.end_rank(exit_code)  # no shutdown for torchrun's SIGTERM to meet
    except KeyboardInterrupt:
        # A second Ctrl-C just after the first, while its exit was under way (before the
        # signals were quietened): it printed a traceback. The command's clean-up has run.
        interrupts.quiet_after_command(interrupts.EXIT_CTRL_C)
        raise SystemExit(interrupts.EXIT_CTRL_C) from None


if __name__ == "__main__":
    main()
