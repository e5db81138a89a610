"""Model registry and lifecycle: names, versions, aliases, tags (issue 9).

Revision ID: 0003_registry
Revises: 0002_hardening
Create Date: 2026-11-29

Placeholder created at the start of the session so that parallel work has a fixed, linear revision chain;
the owner of this revision fills upgrade()/downgrade().
"""

from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401


revision = '0003_registry'
down_revision = '0002_hardening'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
