"""The ``genedge`` command: one subcommand per job.

This is the only layer that knows all three stages. Each subcommand lives in
its own module with an ``add_parser(subparsers)`` function that registers it
and sets ``func``. A command line naming one subcommand builds only that
subcommand's parser (so ``plan`` imports neither the profiler nor the server for
their option defaults); building the plan parser imports the planner (numpy,
scipy.special) and nothing heavier; pandas, pyarrow, scipy.stats, matplotlib and torch are
imported inside the commands that need them, so ``--help``, ``plan`` and
``simulate`` (without figures) start fast. A command whose install extra is
missing ends with one line naming it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from genedge import __version__

__all__ = ["main", "build_parser"]

# Order here is the order in ``genedge --help``.
_COMMAND_MODULES: tuple[str, ...] = (
    "profile",
    "autoprofile",
    "plan",
    "simulate",
    "calibrate",
    "compare",
    "demo",
    "tables",
    "router",
    "serve",
    "loadtest",
)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Build the argument parser.

    Args:
        command: register only this subcommand (one of the command names); None registers every one.
    """
    parser = argparse.ArgumentParser(
        prog="genedge",
        description=(
            "Plan cost-effective text-to-image services on edge GPUs: profile diffusion "
            "pipelines, fit calibration tables, and plan which model serves which prompt "
            "category with how many denoising steps and how much of the GPU."
        ),
    )
    parser.add_argument("--version", action="version", version=f"genedge {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log more (-v: info, -vv: debug); logs go to stderr",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES if command is None else (command,):
        importlib.import_module(f"genedge.cli.{name}").add_parser(subparsers)
    return parser


def _named_command(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` runs, where it names a known one before asking for the top-level help."""
    for word in argv:
        if word in ("-h", "--help"):
            return None  # the top-level help lists every command
        if not word.startswith("-"):
            return word if word in _COMMAND_MODULES else None
    return None


def _one_line_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """Print a warning as one line a user can read: its text, without the source line that raised it."""
    text = " ".join(str(message).split())
    print(f"warning: {text}", file=sys.stderr if file is None else file)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``genedge`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_named_command(argv))
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    warnings.showwarning = _one_line_warning
    if args.command is None:
        parser.print_help()
        return 2
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # output still buffered for a closed pipe fails here, inside the handler below
        return status
    except BrokenPipeError:
        # The reader went away (`genedge plan | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ValueError, OSError) as err:
        # Input errors carry a specific message (file, field, expectation); a traceback adds nothing.
        from genedge.contract.files import os_error_message

        text = os_error_message(err) if isinstance(err, OSError) else str(err)
        print(f"genedge {args.command}: error: {text}", file=sys.stderr)
        return 2
    except ImportError as err:
        # A missing extra (e.g. torch for `profile`): the message names what to install.
        print(f"genedge {args.command}: error: {err}", file=sys.stderr)
        return 3
