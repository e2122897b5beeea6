"""Facts about versions the registry consumes for their model cards.

``version_facts``: the monitor's ``drift.detected``, ``rollout.verdict`` (its evidence: the
live metrics) and ``retrain.requested`` (no version), one row per event_id.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from flywheel_registry.db import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create ``version_facts``."""
    op.create_table(
        "version_facts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("model", sa.String(63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_version_facts_model_version", "version_facts", ["model", "version"])


def downgrade() -> None:
    """Drop ``version_facts``."""
    op.drop_table("version_facts")
