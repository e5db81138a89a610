"""Service commands of `steph` (app.cli.service): serve, worker, migrate, keys (create / list / revoke).

`register(subparsers)` is called by app.cli.build_parser; every command sets `func(args) -> int`. `steph
keys create --scope admin|predict` prints ONLY the new key on stdout (scripts capture it).
"""

from __future__ import annotations

import argparse
import sys

from app.settings import Settings, get_settings


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the API with uvicorn on the settings from the environment (embedded default: SQLite + in-process
    jobs). `--workers N` (N > 1) runs N API processes, each with its own model cache and forward slots; the
    one-time start-up (migrations, first admin key) runs here first, so the workers do not race for it."""
    import uvicorn

    settings = get_settings()
    if args.workers > 1:
        return _serve_workers(args, settings)
    from app.main import create_app

    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
    )
    return 0


def _serve_workers(args: argparse.Namespace, settings: Settings) -> int:
    """N uvicorn worker processes serving app.main:create_app (issue 7; README "Serving under load")."""
    import uvicorn

    if settings.queue == "embedded":
        print(
            "steph serve: --workers > 1 needs STEPH_QUEUE=celery: the embedded job runner lives inside one API "
            "process (each worker would run and recover merge jobs on its own). Use --workers 1, or set "
            "STEPH_QUEUE=celery and run merge jobs with `steph worker`.",
            file=sys.stderr,
        )
        return 2
    from app.services.auth import bootstrap_admin_key

    if settings.migrate_on_start:
        from app.db.migrate import upgrade

        upgrade(settings.database_url)
    ctx = _context_for(settings)
    try:
        bootstrap_admin_key(ctx)
    finally:
        ctx.close()
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        workers=args.workers,
        host=args.host,
        port=args.port,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
    )
    return 0


def _context_for(settings: Settings):  # noqa: ANN202 - ServiceContext is imported lazily
    from app.services.context import build_context

    return build_context(settings)


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a Celery worker for merge jobs (extra arguments go to `celery worker`)."""
    from workers.celery_app import run_worker

    return int(run_worker(list(args.celery_args or [])) or 0)


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply the Alembic migrations to STEPH_DATABASE_URL."""
    from app.db.migrate import current_revision, upgrade

    settings = get_settings()
    upgrade(settings.database_url, args.revision)
    print(f"database at revision {current_revision(settings.database_url)}", file=sys.stderr)
    return 0


def _context():
    from app.db.migrate import upgrade
    from app.services.context import build_context

    settings = get_settings()
    upgrade(settings.database_url)
    return build_context(settings)


def cmd_keys_create(args: argparse.Namespace) -> int:
    from app.services.auth import create_api_key

    ctx = _context()
    try:
        with ctx.session() as s:
            row, key = create_api_key(s, scope=args.scope, name=args.name)
    finally:
        ctx.close()
    print(f"created {row.scope} key {row.id} ({row.prefix}…)", file=sys.stderr)
    print(key)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from app.db import repositories as repo

    ctx = _context()
    try:
        with ctx.session() as s:
            rows = repo.list_api_keys(s)
    finally:
        ctx.close()
    print(f"{'ID':<38} {'PREFIX':<18} {'SCOPE':<8} {'CREATED':<20} {'REVOKED':<20} NAME")
    for r in rows:
        revoked = r.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if r.revoked_at else "-"
        print(
            f"{r.id:<38} {r.prefix + '…':<18} {r.scope:<8} {r.created_at.strftime('%Y-%m-%d %H:%M:%S'):<20} "
            f"{revoked:<20} {r.name}"
        )
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from app.services.auth import revoke_api_key

    ctx = _context()
    try:
        with ctx.session() as s:
            row = revoke_api_key(s, id_or_prefix=args.key_id)
    finally:
        ctx.close()
    print(f"revoked {row.scope} key {row.id} ({row.prefix}…)", file=sys.stderr)
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add serve, worker, migrate and keys to the `steph` parser."""
    p = subparsers.add_parser("serve", help="run the REST API (embedded default: SQLite + in-process job runner)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="API processes (default 1; > 1 needs STEPH_QUEUE=celery). Each has its own model cache and "
        "STEPH_PREDICT_CONCURRENCY forward slots: see README 'Serving under load'",
    )
    p.set_defaults(func=cmd_serve)

    p = subparsers.add_parser("worker", help="run a Celery worker for merge jobs (STEPH_QUEUE=celery)")
    p.add_argument(
        "celery_args",
        nargs=argparse.REMAINDER,
        help="extra arguments for `celery worker`, e.g. --hostname gpu1@%%h --loglevel DEBUG "
        "(`steph worker --help` lists them)",
    )
    p.set_defaults(func=cmd_worker, passthrough="celery_args")

    p = subparsers.add_parser("migrate", help="apply database migrations (STEPH_DATABASE_URL)")
    p.add_argument("--revision", default="head", help="target revision (default head)")
    p.set_defaults(func=cmd_migrate)

    keys = subparsers.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    p = keys.add_parser("create", help="create a key and print it (only the key) on stdout")
    p.add_argument("--scope", choices=("admin", "predict"), required=True)
    p.add_argument("--name", default=None, help="a label shown by `keys list`")
    p.set_defaults(func=cmd_keys_create)
    p = keys.add_parser("list", help="list keys (prefixes only; keys are stored hashed)")
    p.set_defaults(func=cmd_keys_list)
    p = keys.add_parser("revoke", help="revoke a key by id or visible prefix")
    p.add_argument("key_id", help="key id (key_…) or its visible prefix")
    p.set_defaults(func=cmd_keys_revoke)
