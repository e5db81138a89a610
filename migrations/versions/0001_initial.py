"""Initial schema: api_keys, bases, checkpoints, cohorts, merge_jobs, models (docs/CONTRACTS.md).

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-27
"""

from alembic import op
import sqlalchemy as sa


revision = '0001_initial'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('prefix', sa.String(length=32), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('scope', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key_hash')
    )
    op.create_table('bases',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('encoder', sa.String(length=200), nullable=False),
    sa.Column('dims', sa.JSON(), nullable=False),
    sa.Column('bin_edges', sa.JSON(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('artifact_key', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('checkpoints',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('base_id', sa.String(length=64), nullable=False),
    sa.Column('cancer', sa.String(length=100), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('artifact_key', sa.String(length=64), nullable=False),
    sa.Column('task_vector_key', sa.String(length=64), nullable=False),
    sa.Column('tv_norms', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['base_id'], ['bases.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('base_id', 'sha256', name='uq_checkpoints_base_sha256')
    )
    with op.batch_alter_table('checkpoints', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_checkpoints_base_id'), ['base_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_checkpoints_cancer'), ['cancer'], unique=False)

    op.create_table('cohorts',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('base_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('location', sa.Text(), nullable=False),
    sa.Column('summary', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['base_id'], ['bases.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('cohorts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cohorts_base_id'), ['base_id'], unique=False)

    op.create_table('merge_jobs',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('method', sa.String(length=64), nullable=False),
    sa.Column('base_id', sa.String(length=64), nullable=False),
    sa.Column('target_checkpoint_id', sa.String(length=64), nullable=False),
    sa.Column('source_checkpoint_ids', sa.JSON(), nullable=False),
    sa.Column('cohort_id', sa.String(length=64), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('progress', sa.JSON(), nullable=True),
    sa.Column('comparison', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('model_id', sa.String(length=64), nullable=True),
    sa.Column('idempotency_key', sa.String(length=200), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('worker', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['base_id'], ['bases.id'], ),
    sa.ForeignKeyConstraint(['cohort_id'], ['cohorts.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('idempotency_key')
    )
    with op.batch_alter_table('merge_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_merge_jobs_base_id'), ['base_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_merge_jobs_cohort_id'), ['cohort_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_merge_jobs_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_merge_jobs_target_checkpoint_id'), ['target_checkpoint_id'], unique=False)

    op.create_table('models',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=True),
    sa.Column('method', sa.String(length=64), nullable=False),
    sa.Column('base_id', sa.String(length=64), nullable=False),
    sa.Column('target_checkpoint_id', sa.String(length=64), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('sources', sa.JSON(), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=True),
    sa.Column('provenance', sa.JSON(), nullable=False),
    sa.Column('artifact_sha256', sa.String(length=64), nullable=False),
    sa.Column('artifact_key', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['base_id'], ['bases.id'], ),
    sa.ForeignKeyConstraint(['job_id'], ['merge_jobs.id'], ),
    sa.ForeignKeyConstraint(['target_checkpoint_id'], ['checkpoints.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job_id')
    )
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_models_base_id'), ['base_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_models_target_checkpoint_id'), ['target_checkpoint_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_models_target_checkpoint_id'))
        batch_op.drop_index(batch_op.f('ix_models_base_id'))

    op.drop_table('models')
    with op.batch_alter_table('merge_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_merge_jobs_target_checkpoint_id'))
        batch_op.drop_index(batch_op.f('ix_merge_jobs_status'))
        batch_op.drop_index(batch_op.f('ix_merge_jobs_cohort_id'))
        batch_op.drop_index(batch_op.f('ix_merge_jobs_base_id'))

    op.drop_table('merge_jobs')
    with op.batch_alter_table('cohorts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cohorts_base_id'))

    op.drop_table('cohorts')
    with op.batch_alter_table('checkpoints', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_checkpoints_cancer'))
        batch_op.drop_index(batch_op.f('ix_checkpoints_base_id'))

    op.drop_table('checkpoints')
    op.drop_table('bases')
    op.drop_table('api_keys')
