"""lead review and accounts: demonstration reviews, required rubric criteria, passwords that must be changed

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-09 09:00:00.000000
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "demonstrationreview",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("demonstration_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("reviewer_id", sa.Integer(), nullable=True),
        sa.Column("reviewed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["demonstration_id"], ["demonstration.id"]),
        sa.ForeignKeyConstraint(["reviewer_id"], ["user.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("demonstrationreview", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_demonstrationreview_demonstration_id"), ["demonstration_id"], unique=False)

    # Existing campaigns keep accepting unrated criteria and existing accounts keep their passwords.
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.add_column(sa.Column("criteria_required", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("must_change_password", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.drop_column("must_change_password")
    with op.batch_alter_table("campaign", schema=None) as batch_op:
        batch_op.drop_column("criteria_required")

    with op.batch_alter_table("demonstrationreview", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_demonstrationreview_demonstration_id"))
    op.drop_table("demonstrationreview")
