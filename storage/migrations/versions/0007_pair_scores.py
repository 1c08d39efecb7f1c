"""pair scores: a reward model's scores of a campaign's pairs, and the order a campaign's queue hands pairs out

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 20:30:00.000000
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pairscore",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pair_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("score_a", sa.Float(), nullable=False),
        sa.Column("score_b", sa.Float(), nullable=False),
        sa.Column("margin_std", sa.Float(), nullable=False),
        sa.Column("scored_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["pair_id"], ["pair.id"]),
        sa.ForeignKeyConstraint(["run_id"], ["trainingrun.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("pair_id", "run_id", name="uq_pairscore_pair_run"),
    )
    op.create_index("ix_pairscore_pair_id", "pairscore", ["pair_id"])
    op.create_index("ix_pairscore_run_id", "pairscore", ["run_id"])
    with op.batch_alter_table("campaign") as batch:
        batch.add_column(sa.Column("queue_order", sa.String(16), nullable=False, server_default="fifo"))


def downgrade() -> None:
    with op.batch_alter_table("campaign") as batch:
        batch.drop_column("queue_order")
    op.drop_index("ix_pairscore_run_id", table_name="pairscore")
    op.drop_index("ix_pairscore_pair_id", table_name="pairscore")
    op.drop_table("pairscore")
