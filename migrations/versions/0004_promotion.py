"""Promotion gate: model promotion status and evidence (issue 12).

Revision ID: 0004_promotion
Revises: 0003_registry
Create Date: 2026-11-29

Adds models.promotion_status (promoted | not_promoted | unchecked; existing rows: unchecked) and
models.promotion (JSON: the gate's reason and its inner-validation estimate), and merge_jobs.promotion (the
summary shown on the job: status, reason, whether a STEPH merge collapsed).
"""

from alembic import op
import sqlalchemy as sa


revision = '0004_promotion'
down_revision = '0003_registry'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('promotion_status', sa.String(length=16), server_default='unchecked', nullable=False)
        )
        batch_op.add_column(sa.Column('promotion', sa.JSON(), nullable=True))
    with op.batch_alter_table('merge_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('promotion', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('merge_jobs', schema=None) as batch_op:
        batch_op.drop_column('promotion')
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_column('promotion')
        batch_op.drop_column('promotion_status')
