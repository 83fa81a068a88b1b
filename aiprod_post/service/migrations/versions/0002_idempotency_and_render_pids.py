"""Idempotency keys unique per token with the request's hash; render pid and start time.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Databases written before this revision may hold several jobs under one key (the race
    # this constraint closes): the oldest keeps the key, the others lose it.
    jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("token_id", sa.Integer),
                    sa.column("idempotency_key", sa.String), sa.column("created", sa.DateTime))
    conn = op.get_bind()
    seen: set[tuple[int, str]] = set()
    rows = conn.execute(sa.select(jobs.c.id, jobs.c.token_id, jobs.c.idempotency_key)
                        .where(jobs.c.idempotency_key.is_not(None))
                        .order_by(jobs.c.created, jobs.c.id)).all()
    for job_id, token_id, key in rows:
        if (token_id, key) in seen:
            conn.execute(sa.update(jobs).where(jobs.c.id == job_id)
                         .values(idempotency_key=None))
        seen.add((token_id, key))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("request_sha256", sa.String(64)))
        batch.add_column(sa.Column("render_pid", sa.Integer))
        batch.add_column(sa.Column("render_identity", sa.String(120)))
        batch.create_unique_constraint("uq_jobs_token_idempotency_key",
                                       ["token_id", "idempotency_key"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint("uq_jobs_token_idempotency_key", type_="unique")
        batch.drop_column("render_identity")
        batch.drop_column("render_pid")
        batch.drop_column("request_sha256")
