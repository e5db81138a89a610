"""Hardening: unique constraints (issue 8).

Revision ID: 0002_hardening
Revises: 0001_initial
Create Date: 2026-11-29

bases.family_key = sha256 of the JSON [file sha256, encoder, bin edges as floats] (the identity that
app.services.bases.family_key computes), with a unique constraint, so that concurrent identical
`POST /bases` make one row. Existing rows get their key computed here; a row that duplicates an earlier one
(registered before this constraint existed) keeps NULL (NULLs do not collide) and stays readable.
(checkpoints (base_id, sha256), api_keys.key_hash, merge_jobs.idempotency_key and models.job_id were already
unique in 0001_initial.)
"""

import hashlib
import json

import sqlalchemy as sa
from alembic import op

revision = "0002_hardening"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def _family_key(sha256: str, encoder: str, edges: list) -> str:
    text = json.dumps([sha256, encoder, [float(x) for x in edges]])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _fill_family_keys() -> None:
    bases = sa.table(
        "bases",
        sa.column("id", sa.String),
        sa.column("sha256", sa.String),
        sa.column("encoder", sa.String),
        sa.column("bin_edges", sa.JSON),
        sa.column("created_at", sa.DateTime),
        sa.column("family_key", sa.String),
    )
    conn = op.get_bind()
    seen = set()
    rows = conn.execute(
        sa.select(bases.c.id, bases.c.sha256, bases.c.encoder, bases.c.bin_edges).order_by(
            bases.c.created_at, bases.c.id
        )
    ).all()
    for row_id, sha256, encoder, edges in rows:
        key = _family_key(sha256, encoder, edges if isinstance(edges, list) else json.loads(edges))
        if key in seen:
            continue
        seen.add(key)
        conn.execute(sa.update(bases).where(bases.c.id == row_id).values(family_key=key))


def upgrade() -> None:
    with op.batch_alter_table("bases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("family_key", sa.String(length=64), nullable=True))
    _fill_family_keys()
    with op.batch_alter_table("bases", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_bases_family_key", ["family_key"])


def downgrade() -> None:
    with op.batch_alter_table("bases", schema=None) as batch_op:
        batch_op.drop_constraint("uq_bases_family_key", type_="unique")
        batch_op.drop_column("family_key")
