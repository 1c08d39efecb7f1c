"""response prior label: a desirable/undesirable verdict known at import time, for unpaired KTO examples

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10 09:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("response") as batch:
        batch.add_column(sa.Column("prior_label", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("response") as batch:
        batch.drop_column("prior_label")
