"""drop ix_intermediate_seq

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

No query filters or orders intermediate_values by seq alone (points are read by trial_id), so the index
only cost writes.
"""
from __future__ import annotations

from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_intermediate_seq', table_name='intermediate_values')


def downgrade() -> None:
    op.create_index('ix_intermediate_seq', 'intermediate_values', ['seq'], unique=False)
