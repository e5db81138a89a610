"""`steph-client register-model` and `steph-client alias`: the model registry from the command line (admin key).

Scripts then score with `--model NAME@ALIAS` and never change when a new version is promoted.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from app.client.commands import EXIT_OK, emit
from app.client.sdk import Client
from app.client.transport import ClientError

API_FLAG = '"allow_not_promoted": true'


@contextmanager
def cli_wording() -> Iterator[None]:
    """The server's 409 tells an API caller to send "allow_not_promoted": true; here that is a flag."""
    try:
        yield
    except ClientError as exc:
        if API_FLAG not in exc.message:
            raise
        message = exc.message.replace(f"send {API_FLAG}", "pass --allow-not-promoted").replace(
            API_FLAG, "--allow-not-promoted"
        )
        raise ClientError(exc.status, message, detail=exc.detail) from None


def _run(call: Callable[[], Any]) -> int:
    with cli_wording():
        emit(call())
    return EXIT_OK


def cmd_register_model(args: argparse.Namespace, client: Client) -> int:
    """Register MODEL (id or reference) as the next version of NAME, pointing --alias at it."""
    return _run(
        lambda: client.register_model_version(
            args.name,
            args.model,
            aliases=args.alias,
            description=args.description,
            allow_not_promoted=args.allow_not_promoted,
        )  # fmt: skip
    )


def cmd_alias(args: argparse.Namespace, client: Client) -> int:
    """Point NAME@ALIAS at VERSION; prints where it pointed before."""
    allow = args.allow_not_promoted
    return _run(lambda: client.set_alias(args.name, args.alias, args.version, allow_not_promoted=allow))


def add_registry_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser, add) -> None:
    """Add register-model and alias to the steph-client parser (`add` is cli._add)."""
    p = add(sub, "register-model", cmd_register_model, "register a model as the next version of a name", common)
    p.add_argument("name", help="registered model name, e.g. brca-survival (created on first use)")
    p.add_argument("model", help="model id (or a reference such as other-name@champion)")
    p.add_argument("--alias", action="append", default=[], help="alias to point at the new version (repeatable)")
    p.add_argument("--description", help="what this version is")
    p.add_argument(
        "--allow-not-promoted",
        action="store_true",
        help="let the alias point at a model that its merge job's promotion gate marked not_promoted",
    )
    p = add(sub, "alias", cmd_alias, "move a registered model's alias to a version (recorded)", common)
    p.add_argument("name", help="registered model name")
    p.add_argument("alias", help="alias, e.g. champion")
    p.add_argument("version", type=int, help="version number to point the alias at")
    p.add_argument(
        "--allow-not-promoted",
        action="store_true",
        help="let the alias point at a model that its merge job's promotion gate marked not_promoted",
    )
