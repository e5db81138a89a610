"""Programmatic Alembic: `upgrade(url)` applies every migration in `migrations/` (what `steph migrate` and the
embedded start-up run). The migrations directory is found next to the `app` package (repo root)."""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
_LOCK = threading.Lock()


def alembic_config(url: str) -> Config:
    """An Alembic Config for `url` that does not depend on the working directory."""
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise RuntimeError(f"Alembic migrations not found next to the app package ({MIGRATIONS_DIR.name}/env.py)")
    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to `revision` on the database at `url` (idempotent)."""
    with _LOCK:
        command.upgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    """The revision the database is at (None for an empty database)."""
    from app.db.session import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return revision_on(conn)
    finally:
        engine.dispose()


def revision_on(connection: object) -> str | None:
    """The revision of the database behind an open SQLAlchemy connection (no new engine: a readiness probe)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()  # type: ignore[arg-type]


@functools.cache
def _script() -> Any:
    """The migrations directory as Alembic sees it (read once: it does not change while the process runs)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def head_revision() -> str:
    """The newest revision in `migrations/` (what `upgrade(url)` brings a database to)."""
    head = _script().get_current_head()
    if head is None:
        raise RuntimeError("the migrations directory has no revision")
    return head


class SchemaNotCurrent(RuntimeError):
    """The database is not at the migration this code needs (empty, behind, or ahead)."""


def schema_problem(url: str) -> str | None:
    """Why the database at `url` cannot be used by this code (None when it is at the newest migration)."""
    return schema_problem_at(current_revision(url))


def schema_problem_at(current: str | None) -> str | None:
    """schema_problem for a database at revision `current`."""
    head = head_revision()
    if current == head:
        return None
    if current is None:
        state = "has no STEPH tables (an empty database)"
    else:
        known = {r.revision for r in _script().walk_revisions()}
        state = f"is at migration {current}" + ("" if current in known else ", newer than this code knows")
    return (
        f"the database {state}; this version of STEPH needs migration {head}: run `steph migrate` with the same "
        "STEPH_DATABASE_URL (once, before the API and the workers start)"
    )


def check_current(url: str) -> None:
    """SchemaNotCurrent (saying what to run) unless the database is at the newest migration."""
    problem = schema_problem(url)
    if problem is not None:
        raise SchemaNotCurrent(problem)


def stamp_head(url: str) -> None:
    """Record the newest migration as applied (for a database whose tables were made from the models)."""
    with _LOCK:
        command.stamp(alembic_config(url), "head")
