"""fault tolerance

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

- `trials.history`: one entry per attempt that ended without finishing the trial, and the fault it met
  (`[{"attempt", "at", "worker_id", "event", "fault"}, ...]`), so a trial says why it needed each attempt.
- `trials.fault_count`: how many times the trial was given back because of a transient fault (database, object
  store, Optuna storage, disk full); these never use up one of `max_attempts`, and past a cap the trial fails.
- `studies.test_lease_token`, `test_lease_expires_at`, `test_attempts`: the test-split score is a job with a
  lease like a trial; any free worker takes it, and it is taken again when the worker scoring it dies.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('trials', sa.Column('history', postgresql.JSONB(astext_type=sa.Text()),
                                      server_default=sa.text("'[]'::jsonb"), nullable=False))
    op.add_column('trials', sa.Column('fault_count', sa.Integer(), server_default='0', nullable=False))
    op.add_column('studies', sa.Column('test_lease_token', postgresql.UUID(as_uuid=True), nullable=True))
    op.add_column('studies', sa.Column('test_lease_expires_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('studies', sa.Column('test_attempts', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    op.drop_column('studies', 'test_attempts')
    op.drop_column('studies', 'test_lease_expires_at')
    op.drop_column('studies', 'test_lease_token')
    op.drop_column('trials', 'fault_count')
    op.drop_column('trials', 'history')
