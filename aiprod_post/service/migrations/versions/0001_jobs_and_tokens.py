"""Jobs and tokens.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("secret_sha256", sa.String(64), nullable=False, unique=True, index=True),
        sa.Column("webhook_secret", sa.String(64), nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("token_id", sa.Integer, sa.ForeignKey("tokens.id"), nullable=False, index=True),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("stage", sa.String(32)),
        sa.Column("progress", sa.JSON, nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("idempotency_key", sa.String(200), index=True),
        sa.Column("callback_url", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("started", sa.DateTime),
        sa.Column("finished", sa.DateTime),
        sa.Column("render_seconds", sa.Float),
        sa.Column("output_seconds", sa.Float),
        sa.Column("timings", sa.JSON, nullable=False),
        sa.Column("webhook_state", sa.String(32)),
    )


def downgrade() -> None:
    op.drop_table("jobs")
    op.drop_table("tokens")
