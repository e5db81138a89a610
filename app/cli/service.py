"""Service commands of `steph` (app.cli.service): serve, worker, migrate, keys (create / list / revoke).

`register(subparsers)` is called by app.cli.build_parser; every command sets `func(args) -> int`. `steph
keys create --scope admin|predict` prints ONLY the new key on stdout (scripts capture it).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import threading

from app.settings import Settings, get_settings


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the API with uvicorn on the settings from the environment (embedded default: SQLite + in-process
    jobs). `--workers N` (N > 1) runs N API processes, each with its own model cache and forward slots; the
    one-time start-up (migrations, first admin key) runs here first, so the workers do not race for it."""
    _return_big_frees_to_the_os()  # issue 7: before any thread exists (glibc fixes its arena limit at first use)
    _prefetch_model_imports()  # issue 7: cold start
    import uvicorn

    settings = get_settings()
    if not settings.migrate_on_start:
        _require_current_schema(settings)
    if args.workers > 1:
        return _serve_workers(args, settings)
    _import_web_stack(settings)
    from app.main import create_app

    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
    )
    return 0


# glibc malloc policy of `steph serve` (issue 7): (mallopt parameter, environment variable, value)
MALLOC_POLICY = (
    (-8, "MALLOC_ARENA_MAX", 1),  # M_ARENA_MAX
    (-3, "MALLOC_MMAP_THRESHOLD_", 64 << 20),  # M_MMAP_THRESHOLD: 64 MiB
    (-1, "MALLOC_TRIM_THRESHOLD_", 128 << 20),  # M_TRIM_THRESHOLD: 128 MiB
)


def _return_big_frees_to_the_os() -> None:
    """glibc, for a server whose requests each allocate a bag (tens of MiB) in a thread-pool thread:

    - one arena: freed bag-sized blocks are reused by the next request whichever thread serves it, instead of
      piling up in one arena per thread (16 concurrent clients took 2.68× one request's memory with glibc's
      defaults; with 2 arenas still ≈ 2×);
    - blocks up to 64 MiB come from the heap and are reused: no fresh zero pages to fault in on every request
      (with every block ≥ 1 MiB mmapped, as before, reading, checking and casting a 29 MiB bag took ≈ 50 ms more
      and POST /predict/paths cost 1.6× the in-process forward instead of 1.1×: BENCHMARKS.md); bigger blocks
      are mmapped and unmapped when freed (a 100k-patch bag goes back to the OS);
    - up to 128 MiB of free memory may stay at the top of the heap (not trimmed after every request).

    Each value can be overridden with glibc's own environment variable (it is then left as the user set it); the
    variables are set for `--workers` processes too. Does nothing on a libc without mallopt."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return
    for param, env, value in MALLOC_POLICY:
        if env in os.environ:
            continue  # glibc read it at start-up
        os.environ[env] = str(value)
        mallopt(param, value)


def _prefetch_model_imports() -> threading.Thread:
    """Import the heavy libraries the first prediction needs (torch, h5py, safetensors) in a background thread
    while the main thread imports the web stack: a shorter cold start (README "Serving under load"). Import
    errors are left for the main thread to raise where the module is needed."""

    def work() -> None:
        import importlib

        for name in ("torch", "h5py", "safetensors.torch"):  # third-party only: no import cycle with app.*
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the real import later reports it
                return

    thread = threading.Thread(target=work, name="steph-prefetch-imports", daemon=True)
    thread.start()
    return thread


def _import_web_stack(settings: Settings) -> None:
    """The torch-free modules the app needs, imported here while torch loads in the background."""
    import importlib

    names = ["fastapi", "starlette.middleware", "sqlalchemy.orm", "pydantic", "multipart"]
    names += ["alembic.command", "alembic.config"] if settings.migrate_on_start else []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


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
        _require_current_schema(settings)
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


def _require_current_schema(settings: Settings) -> None:
    """CliError (exit 2, one line) when the database is not at the newest migration: empty, behind or ahead."""
    from app.cli.common import CliError
    from app.db.migrate import schema_problem

    problem = schema_problem(settings.database_url)
    if problem is not None:
        raise CliError(problem)


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a Celery worker for merge jobs (extra arguments go to `celery worker`); refuses to start on a database
    that is not migrated (its reaper and every job would fail)."""
    from workers.celery_app import run_worker

    celery_args = list(args.celery_args or [])
    if not {"--help", "-h", "--version"} & set(celery_args):  # Celery's own help needs no database
        _require_current_schema(get_settings())
    return int(run_worker(celery_args) or 0)


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
    from app.db.repositories import list_api_keys
    from app.services.auth import revoke_api_key

    ctx = _context()
    try:
        with ctx.session() as s:
            row = revoke_api_key(s, id_or_prefix=args.key_id)
            admins_left = sum(1 for k in list_api_keys(s, include_revoked=False) if k.scope == "admin")
    finally:
        ctx.close()
    print(f"revoked {row.scope} key {row.id} ({row.prefix}…)", file=sys.stderr)
    if row.scope == "admin" and admins_left == 0:
        print("warning: no active admin key is left; every admin route now answers 401. Create one with "
              "`steph keys create --scope admin` (run where STEPH_DATABASE_URL reaches the database); a restart "
              "does not make a new one", file=sys.stderr)  # fmt: skip
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add serve, worker, migrate and keys to the `steph` parser."""
    p = subparsers.add_parser(
        "serve",
        help="run the REST API (embedded default: SQLite + in-process job runner)",
        description="Serve the REST API with uvicorn, configured from STEPH_* environment variables (see "
        "app/settings.py). The embedded default needs nothing else: SQLite under STEPH_HOME, the artifact store in "
        "./models_store, jobs run in-process. The first start prints an admin API key once.",
    )
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

    p = subparsers.add_parser(
        "worker",
        help="run a Celery worker for merge jobs (STEPH_QUEUE=celery)",
        description="Run a Celery worker that executes merge jobs from Redis (STEPH_QUEUE=celery, STEPH_REDIS_URL). "
        "Every argument after `worker` is passed, unchanged and in order, to `celery worker`: e.g. "
        "`steph worker --concurrency 1 --hostname gpu1@%h --loglevel INFO`. "
        "`steph worker -- --help` shows Celery's own options.",
    )
    p.add_argument(
        "celery_args",
        nargs=argparse.REMAINDER,
        help="arguments for `celery worker` (passed through; see `steph worker -- --help`)",
    )
    p.set_defaults(func=cmd_worker, passthrough="celery_args")

    p = subparsers.add_parser(
        "migrate",
        help="apply database migrations (STEPH_DATABASE_URL)",
        description="Upgrade the database at STEPH_DATABASE_URL to the newest Alembic revision (or --revision). "
        "Safe to run again; the embedded `steph serve` does it at start-up.",
    )
    p.add_argument("--revision", default="head", help="target revision (default head)")
    p.set_defaults(func=cmd_migrate)

    keys = subparsers.add_parser(
        "keys",
        help="manage API keys",
        description="Create, list and revoke API keys in the database at STEPH_DATABASE_URL (keys are stored hashed).",
    ).add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    p = keys.add_parser(
        "create",
        help="create a key and print it (only the key) on stdout",
        description="Create an API key and print it once on stdout (capture it: it cannot be shown again).",
    )
    p.add_argument(
        "--scope", choices=("admin", "predict"), required=True, help="admin: everything; predict: read and score"
    )
    p.add_argument("--name", default=None, help="a label shown by `keys list`")
    p.set_defaults(func=cmd_keys_create)
    p = keys.add_parser(
        "list",
        help="list keys (prefixes only; keys are stored hashed)",
        description="List every key: id, visible prefix, scope, created, revoked, name.",
    )
    p.set_defaults(func=cmd_keys_list)
    p = keys.add_parser(
        "revoke",
        help="revoke a key by id or visible prefix",
        description="Revoke one key (by id or visible prefix); requests with it get 401 from then on.",
    )
    p.add_argument("key_id", help="key id (key_…) or its visible prefix")
    p.set_defaults(func=cmd_keys_revoke)
