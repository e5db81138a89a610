"""Lifecycle commands of `steph` (app.cli.lifecycle): gc (dry run first) and the model registry's aliases.

They work on the service's database and store directly (STEPH_DATABASE_URL, STEPH_STORE_ROOT), like `steph keys`;
alias changes made here are recorded with the actor `cli:<user>`.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from app.cli.common import emit


def _context():
    from app.cli.service import _context as service_context

    return service_context()


def cmd_gc(args: argparse.Namespace) -> int:
    """Report (--dry-run) or remove unreferenced store objects, orphan cohort dirs and expired jobs."""
    from app.services.gc import collect_garbage

    ctx = _context()
    try:
        report = collect_garbage(ctx=ctx, dry_run=args.dry_run)
    finally:
        ctx.close()
    verb = "would remove" if args.dry_run else "removed"
    if not args.quiet:
        print(
            f"gc: {verb} {len(report['objects'])} store object(s) ({report['bytes']} bytes), "
            f"{len(report['cohort_dirs'])} cohort dir(s), {len(report['expired_jobs'])} expired job(s)"
            + ("; run again without --dry-run to delete" if args.dry_run else ""),
            file=sys.stderr,
        )
    emit(report)
    return 0


def cmd_alias(args: argparse.Namespace) -> int:
    """Point NAME@ALIAS at VERSION (recorded as cli:<user>), or delete the alias with --delete."""
    from app.services import registry_versions as ops
    from app.services.errors import Conflict
    from app.services.registry import Actor

    actor = Actor(key_id=None, name=f"cli:{getpass.getuser()}")
    ctx = _context()
    try:
        if args.delete:
            ops.delete_alias(ctx=ctx, name=args.name, alias=args.alias, actor=actor)
            emit({"name": args.name, "alias": args.alias, "deleted": True})
        else:
            if args.version is None:
                raise ValueError("give the VERSION to point the alias at, or --delete")
            try:
                out = ops.set_alias(
                    ctx=ctx,
                    name=args.name,
                    alias=args.alias,
                    version=args.version,
                    actor=actor,
                    allow_not_promoted=args.allow_not_promoted,
                )
            except Conflict as exc:  # the API's field name → this command's flag
                raise Conflict(str(exc).replace(ops.ALLOW_HINT, "pass --allow-not-promoted")) from None
            emit(out)
    finally:
        ctx.close()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add gc and alias to the `steph` parser."""
    p = subparsers.add_parser(
        "gc",
        help="garbage-collect unreferenced store objects, orphan cohort dirs and expired jobs",
        description="Removes store objects no base, checkpoint or model references (older than STEPH_GC_GRACE_S), "
        "uploaded cohort directories without a cohort row, and finished jobs without a model older than "
        "STEPH_JOB_RETENTION_DAYS. Prints the report as JSON on stdout. Run with --dry-run first.",
    )
    p.add_argument("--dry-run", action="store_true", help="report what would be removed; change nothing")
    p.set_defaults(func=cmd_gc)

    p = subparsers.add_parser(
        "alias",
        help="move a registered model's alias to a version (or delete it)",
        description="Point NAME@ALIAS at VERSION atomically; the change is recorded in the alias history.",
    )
    p.add_argument("name", help="registered model name, e.g. brca-survival")
    p.add_argument("alias", help="alias, e.g. champion")
    p.add_argument("version", type=int, nargs="?", help="version number to point the alias at")
    p.add_argument("--delete", action="store_true", help="delete the alias instead")
    p.add_argument(
        "--allow-not-promoted",
        action="store_true",
        help="let the alias point at a model that its merge job's promotion gate marked not_promoted",
    )
    p.set_defaults(func=cmd_alias)
