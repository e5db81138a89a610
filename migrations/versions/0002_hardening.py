"""Hardening: unique constraints (issue 8).

Revision ID: 0002_hardening
Revises: 0001_initial
Create Date: 2026-11-29

Placeholder created at the start of the session so that parallel work has a fixed, linear revision chain;
the owner of this revision fills upgrade()/downgrade().
"""

from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401


revision = '0002_hardening'
down_revision = '0001_initial'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
