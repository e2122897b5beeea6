"""The audit log names the token of each write, and records writes that move no alias.

``audit_log.token``: the name of the bearer token (principal) that made the change, never
the token itself (NULL for rows written before roles, and for changes no token made).
``audit_log.alias`` becomes nullable: registrations and status changes are audited too.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``audit_log.token``; let ``audit_log.alias`` be NULL."""
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("token", sa.String(100), nullable=True))
        batch.alter_column("alias", existing_type=sa.String(16), nullable=True)


def downgrade() -> None:
    """Drop the rows without an alias, ``audit_log.token``, and make ``alias`` required."""
    op.execute("DELETE FROM audit_log WHERE alias IS NULL")
    with op.batch_alter_table("audit_log") as batch:
        batch.alter_column("alias", existing_type=sa.String(16), nullable=False)
        batch.drop_column("token")
