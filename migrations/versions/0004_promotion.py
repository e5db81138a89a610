"""Promotion gate: model promotion status and evidence (issue 12).

Revision ID: 0004_promotion
Revises: 0003_registry
Create Date: 2026-11-29

Placeholder created at the start of the session so that parallel work has a fixed, linear revision chain;
the owner of this revision fills upgrade()/downgrade().
"""

from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401


revision = '0004_promotion'
down_revision = '0003_registry'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
