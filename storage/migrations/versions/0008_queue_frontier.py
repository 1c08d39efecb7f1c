"""queue frontier: a campaign's open leases found by a partial index, and the pair id below which every pair is full,
so that the work queue's cost does not grow with the judgments a campaign has

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 21:15:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

OPEN = sa.text("closed_at IS NULL")


def upgrade() -> None:
    op.create_index("ix_assignment_campaign_open", "assignment", ["campaign_id"], sqlite_where=OPEN,
                    postgresql_where=OPEN)  # fmt: skip
    with op.batch_alter_table("campaign") as batch:
        batch.add_column(sa.Column("queue_frontier", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("campaign") as batch:
        batch.drop_column("queue_frontier")
    op.drop_index("ix_assignment_campaign_open", table_name="assignment")
