"""`steph`: the engine on the command line (synth, train, merge, evaluate, predict, methods).

JSON results go to stdout (one document, or one line per bag for `predict`); progress goes to stderr.
User errors (bad files, bad parameters, incompatible checkpoints) print one line to stderr and exit 2.
Service commands (serve, worker, migrate, keys) live in app.cli.service; the engine commands in app.cli.engine.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

import app
from app.cli.common import EXIT_USAGE, CliError
from app.cli.engine import ADD_COMMANDS

QUIET_HELP = "no progress bars or summaries on stderr (also accepted after the command)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="steph", description=__doc__.split("\n")[0])
    parser.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    parser.add_argument("--version", action="version", version=f"steph {app.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in ADD_COMMANDS:
        add(sub)
    from app.cli import lifecycle, service

    service.register(sub)
    from app.cli import report  # issue 10: `steph report`

    report.register(sub)
    lifecycle.register(sub)
    add_global_flags(sub)
    return parser


def add_global_flags(sub: argparse._SubParsersAction) -> None:
    """Accept the global flags after the command too (`steph train … --quiet`): every sub-command (and
    sub-sub-command) gets a copy whose default is SUPPRESS, so it only overrides the global value when given."""
    for command in sub.choices.values():
        passthrough = command.get_default("passthrough")  # `steph worker`: its arguments all go to Celery
        if "--quiet" not in command._option_string_actions and not passthrough:
            command.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS, help=QUIET_HELP)
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                add_global_flags(action)


def _user_errors() -> tuple[type[BaseException], ...]:
    from app.io.errors import InputFileError
    from app.services.errors import ServiceError

    return (InputFileError, CliError, ServiceError, ValueError, OSError, KeyError)


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """parse_args, except for a command whose parser sets `passthrough=NAME` (e.g. `steph worker`): every
    argument after the command goes, in order and unparsed, to args.NAME. `-h`/`--help` there shows the
    command's own help; after `--` everything goes through (`steph worker -- --help`: Celery's help)."""
    at = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    rest = argv[at + 1 :] if at is not None else []
    explicit = bool(rest) and rest[0] == "--"  # `steph worker -- --help`: even --help goes through
    if at is not None and rest and (explicit or not {"-h", "--help"} & set(rest)):
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        command = sub.choices.get(argv[at])
        target = command.get_default("passthrough") if command is not None else None
        if target:
            args = parser.parse_args(argv[: at + 1])
            setattr(args, target, rest[1:] if explicit else rest)
            return args
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `steph` console script; returns the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(parser, argv)
    func: Callable[[argparse.Namespace], int | None] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("steph: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as exc:
        if os.environ.get("STEPH_DEBUG"):
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"steph {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback (STEPH_DEBUG=1 shows it)
        if os.environ.get("STEPH_DEBUG"):
            raise
        print(
            f"steph {args.command}: internal error: {type(exc).__name__}: {exc} (set STEPH_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
