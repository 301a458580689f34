"""The `libra-jax` parser: one subcommand per module of this package, each giving `HELP`,
`add_arguments(parser)` and `run(args) -> exit code`."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence

from libra_jax.cli import demo, evaluate, explain_command, run, train
from libra_jax.cli.options import UserError
from libra_jax.run.lock import folder_lock
from libra_jax.weights import hub
from libra_jax.weights.atomic import check_destination

COMMANDS = {"explain": explain_command, "demo": demo, "evaluate": evaluate, "run": run, "train": train}

LOCKED_FOLDER = {
    "explain": lambda args: os.path.dirname(os.path.abspath(explain_command.output_path(args))),
    "demo": lambda args: args.out,
    "evaluate": lambda args: args.out,
}
"""The output folder each command holds locked while it writes (`run` locks inside `run_dataset`)."""

OUTPUT_FILE = {"explain": explain_command.output_path}
"""The output file a command writes, checked before any work: a folder or a device there is an error at once."""


def _user_errors(name: str, command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run `command` holding its output folder's lock; bad paths and values from a library function (including a
    folder locked by another run, or one that cannot be written) become one-line user errors, hub failures worded
    for the command line."""
    folder, output = LOCKED_FOLDER.get(name), OUTPUT_FILE.get(name)

    def wrapped(args: argparse.Namespace) -> int:
        try:
            if output:
                check_destination(output(args))
            with folder_lock(folder(args)) if folder else contextlib.nullcontext():
                return command(args)
        except (OSError, ValueError) as e:
            raise UserError(hub.cli_message(e)) from None

    return wrapped


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="libra-jax", description="LibraGrad attributions for Vision Transformers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(run=_user_errors(name, module.run))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 success, 2 user error)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse exits for --help (0) and usage errors (2, message already printed)
        return e.code if isinstance(e.code, int) else 2
    try:
        return args.run(args)
    except UserError as e:
        print(f"libra-jax {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
