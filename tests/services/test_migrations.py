"""Alembic: the history creates the schema from an empty database, and it matches the SQLAlchemy models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.db.migrate import current_revision, head_revision, upgrade
from app.db.models import ALL_TABLES, OrmBase
from app.db.session import make_engine


def test_upgrade_from_empty_matches_models(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    assert current_revision(url) is None
    upgrade(url)
    assert current_revision(url) == head_revision()
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), OrmBase.metadata)
            tables = set(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert diffs == []
    assert tables == set(ALL_TABLES) | {"alembic_version"}


def test_upgrade_is_idempotent_and_downgrade_empties(tmp_path):
    url = f"sqlite:///{tmp_path / 'twice.db'}"
    upgrade(url)
    upgrade(url)
    assert current_revision(url) == head_revision()
    from alembic import command

    from app.db.migrate import alembic_config

    command.downgrade(alembic_config(url), "base")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) == {"alembic_version"}
    finally:
        engine.dispose()


def test_models_drift_is_detected(tmp_path):
    """The comparison can fail: a column the migrations lack shows up as a diff."""
    from sqlalchemy import Column, Integer, MetaData, Table

    url = f"sqlite:///{tmp_path / 'drift.db'}"
    upgrade(url)
    meta = MetaData()
    for table in OrmBase.metadata.sorted_tables:
        table.to_metadata(meta)
    Table("api_keys", meta, Column("extra_col", Integer), extend_existing=True)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), meta)
    finally:
        engine.dispose()
    assert [d[0] for d in diffs] == ["add_column"] and diffs[0][3].name == "extra_col"
